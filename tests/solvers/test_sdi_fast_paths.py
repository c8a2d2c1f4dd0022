"""The fast paths of the self-diffusion training step on CPU: fused BatchNorm + ReLU and
upsample-concat, bf16 autocast, one network shared by the slices of a volume, the prepared run that
benchmarks time, and cuDNN autotuning around the step graph. The same code runs compiled and graphed on a GPU."""
import pytest
import torch

from fastsd.data import mri_slice
from fastsd.functional.noise import noisy_input
from fastsd.graphs.step_graph import BatchedNet, SDIStep, StepGraph
from fastsd.metrics import magnitude, psnr
from fastsd.nets.fused import BatchNormReLU, FusedUpsampleConcat
from fastsd.nets.unet import UNet
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.masks import equispaced_mask
from fastsd.ops.mri import MRI
from fastsd.solvers.sdi import SelfDiffusion
from fastsd.testing import assert_close


def _problem(B=1, C=4, size=32):
    x = torch.cat([mri_slice(size, phase="smooth")] * B) * torch.linspace(0.6, 1.0, B).reshape(B, 1, 1, 1)
    op = MRI(equispaced_mask((size, size), 4, acs_lines=6), birdcage_maps(C, (size, size)))
    return x, op, op(x)


def _psnr(x, x_true):
    return sum(psnr(magnitude(x)[b], magnitude(x_true)[b]) for b in range(x.shape[0])) / x.shape[0]


@pytest.mark.parametrize("fused", [dict(fused_norm=True), dict(fused_upsample=True),
                                   dict(fused_norm=True, fused_upsample=True)])
def test_fused_layers_solve_equals_unfused(fused):
    """Same arithmetic: with T = K = 1 the result is the first forward (before any Adam update, which
    would amplify rounding differences of the zero-gradient conv biases), so both paths must agree."""
    x, op, y = _problem()
    kw = dict(preset="mri", small=True, T=1, K=1, seed=1)
    a = SelfDiffusion(fused_norm=False, **kw).solve(y, op)
    b = SelfDiffusion(**fused, **kw).solve(y, op)
    assert not a.info["fused_norm"] and not a.info["fused_upsample"]
    assert b.info["fused_norm"] == fused.get("fused_norm", False)
    assert b.info["fused_upsample"] == fused.get("fused_upsample", False)
    modules = list(SelfDiffusion(**fused, **kw).prepare(y, op).net.template.modules())
    assert any(isinstance(m, BatchNormReLU) for m in modules) == b.info["fused_norm"]
    assert any(isinstance(m, FusedUpsampleConcat) for m in modules) == b.info["fused_upsample"]
    assert_close("x", b.x, a.x)


@pytest.mark.slow
def test_bf16_reconstructs_like_fp32():
    """bf16 autocast on CPU: runs, stays finite and reconstructs within 1 dB of float32 (two seeds)."""
    x, op, y = _problem(size=48)
    kw = dict(preset="mri", small=True, T=4, K=15, fused_norm=True)
    d = []
    for seed in (0, 1):
        p32 = _psnr(SelfDiffusion(seed=seed, **kw).solve(y, op).x, x)
        p16 = _psnr(SelfDiffusion(seed=seed, precision="bf16", **kw).solve(y, op).x, x)
        d.append(p16 - p32)
    assert all(abs(v) < 1.0 for v in d), d


def test_bf16_step_keeps_float32_weights_and_output():
    x, op, y = _problem()
    run = SelfDiffusion(preset="mri", small=True, T=2, K=2, precision="bf16", fused_norm=True).prepare(y, op)
    run.runner.run(2)
    assert run.inner.out.dtype == torch.float32 and torch.isfinite(run.inner.out).all()
    assert all(p.dtype == torch.float32 for p in run.net.parameters())
    assert torch.isfinite(run.inner.loss).all()


def test_shared_net_trains_one_network_for_all_slices():
    x, op, y = _problem(B=3)
    res = SelfDiffusion(preset="mri", small=True, T=2, K=3, shared_net=True).solve(y, op)
    assert res.x.shape == x.shape and torch.isfinite(res.x).all()
    run = SelfDiffusion(preset="mri", small=True, T=2, K=3, shared_net=True).prepare(y, op)
    assert all(p.shape[0] == 1 for p in run.net.parameters())
    own = SelfDiffusion(preset="mri", small=True, T=2, K=3).prepare(y, op)
    assert all(p.shape[0] == 3 for p in own.net.parameters())


def test_shared_batched_net_is_one_network_on_the_batch():
    torch.manual_seed(0)
    net = UNet(2, 2, width=4, depth=2, seed=3)
    shared = BatchedNet([net], shared=True)
    x = torch.randn(3, 2, 16, 16)
    net.train()
    assert_close("output", shared(x), net(x), factor=0.1)
    with pytest.raises(ValueError, match="one network"):
        BatchedNet([net, net], shared=True)


def test_noisy_is_one_call_equal_to_per_problem_draws():
    B = 3
    x_hat = torch.randn(B, 2, 8, 6)
    net = BatchedNet([UNet(2, 2, width=2, depth=1)] * B)
    step = SDIStep(net, lambda z: z.flatten(1).sum(1), torch.optim.Adam(net.parameters()), x_hat,
                   sigma=torch.tensor(0.3), seeds=torch.tensor([5, 9, 2]), step=torch.tensor(4))
    got = step.noisy()
    for b in range(B):
        want = noisy_input(x_hat[b:b + 1], torch.tensor(0.3), torch.tensor(step.seeds[b].item()), torch.tensor(4))
        assert torch.equal(got[b:b + 1], want)


def test_prepared_run_is_the_solver_step():
    """The run a benchmark times is the one solve() drives: same first level, same state."""
    x, op, y = _problem()
    solver = SelfDiffusion(preset="mri", small=True, T=2, K=2, seed=4)
    run = solver.prepare(y, op)
    assert float(run.inner.sigma) == pytest.approx(float(run.sigmas[0]))
    assert torch.isfinite(run.inner.x_in).all() and run.inner.x_in.abs().sum() > 0
    run.runner.run(2)
    run.inner.x_hat.copy_(run.inner.out)
    run.set_level(1)
    run.runner.run(2)
    run.inner.x_hat.copy_(run.inner.out)
    assert_close("x", run.current(), solver.solve(y, op).x, factor=0.1)


def test_cudnn_benchmark_flag_is_restored():
    calls = []
    graph = StepGraph(lambda: calls.append(torch.backends.cudnn.benchmark), "cpu", cudnn_benchmark=True)
    before = torch.backends.cudnn.benchmark
    graph.run(2)
    assert calls == [True, True] and torch.backends.cudnn.benchmark == before


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        SelfDiffusion(precision="fp16")
    with pytest.raises(ValueError, match="needs dtype float32"):
        SelfDiffusion(precision="bf16", dtype=torch.float64)


def test_compiled_network_step_equals_eager():
    """torch.compile of the network inside the step (aot_eager on CPU: the same tracing, fake and
    autograd path as inductor, without C++ compilation): the first forward equals the eager one and
    training steps run."""
    torch._dynamo.reset()
    x, op, y = _problem()
    kw = dict(preset="mri", small=True, T=1, K=1, seed=2, fused_norm=True)
    a = SelfDiffusion(**kw).solve(y, op)
    b = SelfDiffusion(compile="aot_eager", **kw).solve(y, op)
    assert b.info["compile"] == "aot_eager"
    assert_close("x", b.x, a.x)
    run = SelfDiffusion(compile="aot_eager", preset="mri", small=True, T=1, K=3).prepare(y, op)
    run.runner.run(3)
    assert torch.isfinite(run.inner.loss).all()
    with pytest.raises(ValueError, match="compile must be"):
        SelfDiffusion(compile=3)
