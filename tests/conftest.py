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


@pytest.fixture
def backend_from_env(monkeypatch):
    """``load(name)`` re-imports ``fastsd._backend`` with ``FASTSD_BACKEND=name`` (so its import-time
    check runs) and returns the module; the variable and the backend are restored afterwards."""
    import importlib

    from fastsd import _backend
    saved = _backend._state["backend"]

    def load(name: str):
        monkeypatch.setenv("FASTSD_BACKEND", name)
        return importlib.reload(_backend)

    yield load
    monkeypatch.delenv("FASTSD_BACKEND", raising=False)
    importlib.reload(_backend)
    _backend._state["backend"] = saved


# torch.compile(fullgraph=True) parametrisation of the custom-op tests. On CUDA inductor compiles
# the graph around the Triton custom ops. On CPU the ops run their reference behind torch.library,
# so compiling checks the tracing, the fake and the autograd registrations: AOTAutograd's eager
# backend checks exactly those, without inductor's C++ build (about half a minute of warm-up on
# a 2-core CPU).
COMPILE_BACKEND = "inductor" if HAS_CUDA else "aot_eager"
_compile_probe: list = []


def _compile_unavailable() -> str | None:
    """Why torch.compile cannot run here (None when it can); probed once per session."""
    if not _compile_probe:
        try:
            torch.compile(lambda t: t + 1, fullgraph=True, backend=COMPILE_BACKEND)(torch.ones(2))
            _compile_probe.append(None)
        except Exception as e:  # noqa: BLE001 - any failure means: cannot compile on this machine
            _compile_probe.append(f"torch.compile({COMPILE_BACKEND!r}) does not run here: {type(e).__name__}: {e}")
    return _compile_probe[0]


@pytest.fixture(params=[False, True], ids=["eager", "compiled"])
def maybe_compile(request):
    """A wrapper for the function under test: the identity, or torch.compile(fullgraph=True)
    (no graph breaks allowed) after a reset, so earlier tests' caches cannot hide a recompile."""
    if not request.param:
        return lambda fn: fn
    reason = _compile_unavailable()
    if reason:
        pytest.skip(reason)
    torch.compiler.reset()
    return lambda fn: torch.compile(fn, fullgraph=True, backend=COMPILE_BACKEND, dynamic=False)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
