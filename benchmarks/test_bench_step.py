"""pytest-benchmark: one SDI inner step, eager with the reference backend, eager fused, and fused
replayed as a CUDA graph (skipped without CUDA). MRI single-coil and multi-coil; the small U-Net
preset everywhere, the paper's U-Net on CUDA only."""
import contextlib

import pytest
import torch

from benchmarks import cases
from fastsd._backend import use_backend

HAS_CUDA = torch.cuda.is_available()
PROBLEMS = [(1, 256, 256), (15, 320, 320)] if HAS_CUDA else [(1, 32, 32), (4, 32, 32)]
NETS = list(cases.NETS) if HAS_CUDA else ["unet-small"]
MODES = ["reference-eager", "fused-eager", "fused-graph"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("net_kind", NETS)
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: cases.case_name(p[1], p[2], p[0]))
def test_sdi_step(bench, benchmark, device, problem, net_kind, mode):
    if mode == "fused-graph" and device.type != "cuda":
        pytest.skip("CUDA graphs need a CUDA device")
    C, H, W = problem
    p = cases.mri_problem(1, C, H, W, device)
    runner, inner = cases.sdi_step(p, cases.make_net(net_kind), graphed=mode == "fused-graph")
    benchmark.group = f"step:{cases.case_name(H, W, C)}:{net_kind}"
    benchmark.extra_info.update(C=C, H=H, W=W, net=net_kind, mode=mode)
    ctx = use_backend("reference") if mode == "reference-eager" else contextlib.nullcontext()
    with ctx:
        bench(lambda: runner.run(1), warmup=5 if device.type == "cuda" else 1)
    assert bool(torch.isfinite(inner.loss).all())
    assert int(inner.counter) == runner.steps_run  # every call ran one step (a capture runs none)
