"""pytest-benchmark: each fused op (``torch.ops.fastsd.*``) next to its plain-PyTorch reference.

On CUDA the fused ops run the Triton kernels; on CPU both paths are the reference (the fused one
through the custom op). Each test also checks once that the timed fused op agrees with the
reference, so the numbers belong to correct code.
"""
import pytest
import torch

from benchmarks import cases
from fastsd.testing import rel_err

OPS = ["mri_forward", "mri_adjoint", "mri_fidelity", "mri_dc", "noisy_input", "masked_fidelity"]


@pytest.fixture(scope="module")
def op_cases(device):
    if device.type == "cuda":
        mri, elem = (2, 15, 320, 320), (8, 2, 512, 512)
    else:
        mri, elem = (1, 4, 32, 32), (1, 2, 32, 32)
    found = cases.mri_op_cases(*mri, device, "bench") + cases.elementwise_op_cases(elem, device, "bench")
    return {c.op: c for c in found}


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("op", OPS)
def test_op(bench, benchmark, op_cases, op, impl):
    c = op_cases[op]
    benchmark.group = f"op:{op}"
    benchmark.extra_info.update(c.params, bytes_moved=c.bytes_moved, impl=impl)
    with torch.no_grad():
        bench(c.fused if impl == "fused" else c.reference)
        out, ref = c.fused(), c.reference()
    outs = out if isinstance(out, tuple) else (out,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    for o, r in zip(outs, refs):
        assert rel_err(o, r) < 1e-4
