"""Shared test set-up. Without a GPU, Triton kernels run in the interpreter on CPU tensors; the
variable must be set before any kernel module is imported, which is why it lives here."""
import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Small test shapes gain nothing from intra-op threads; on shared CI cores they mostly contend.
torch.set_num_threads(1)

# Device on which Triton kernels are launched: compiled on CUDA, interpreted on CPU.
KERNEL_DEVICE = "cuda" if HAS_CUDA else "cpu"
# Devices on which operators/solvers are exercised (reference path on CPU, fused on CUDA).
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])

@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def kernel_device():
    return torch.device(KERNEL_DEVICE)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
