"""The step engine: BatchedNet, the SDI inner step (eager on CPU), batching, CUDA-graph replay."""
import copy

import pytest
import torch

from fastsd.functional.noise import noisy_input
from fastsd.graphs.step_graph import BatchedNet, SDIStep, StepGraph
from fastsd.nets import UNet
from fastsd.solvers.sdi import SelfDiffusion
from fastsd.testing import MaskOp, assert_close, assert_graphed_as_eager


def _problem(B=2, C=2, H=16, W=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, C, H, W, generator=g)
    mask = (torch.rand(B, C, H, W, generator=g) < 0.6).float()
    return x, mask


@pytest.mark.parametrize("vectorize", [False, True])
def test_batched_net_equals_separate_networks(vectorize):
    nets = [UNet(2, 3, width=4, depth=2, seed=s) for s in range(3)]
    x = torch.randn(3, 2, 17, 19)
    out = BatchedNet(nets, vectorize=vectorize)(x)
    out.sum().backward()  # gradients flow to the stacked leaves
    for b, net in enumerate(nets):
        assert_close(f"output of network {b}", out[b : b + 1], net(x[b : b + 1]))
    with pytest.raises(ValueError, match="holds 3 networks"):
        BatchedNet(nets)(x[:2])
    with pytest.raises(ValueError, match="same architecture"):
        BatchedNet([nets[0], UNet(2, 3, width=8, depth=2)])


def test_channels_last_layout_keeps_the_arithmetic():
    """NHWC weights (the CUDA default) give the same outputs and gradients as NCHW, each problem's
    weight and gradient slice is channels-last, and moving the module keeps the layout."""
    nets = [UNet(2, 3, width=4, depth=2, seed=s) for s in range(2)]
    x = torch.randn(2, 2, 17, 19, dtype=torch.float64)
    nchw, nhwc = (BatchedNet(nets, channels_last=c).double() for c in (False, True))
    outs = []
    for net in (nchw, nhwc):
        out = net(x)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        outs.append(out)
    assert_close("output", outs[1], outs[0])
    conv = [k for k, v in nhwc.params.items() if v.dim() == 5]
    assert conv
    for k in conv:
        w, g = nhwc.params[k], nhwc.params[k].grad
        assert w[1].is_contiguous(memory_format=torch.channels_last)
        assert w.shape[-1] == 1 or not w[1].is_contiguous()  # 1x1 kernels are both
        assert g.stride() == w.stride()
        assert_close(f"grad of {k}", g, nchw.params[k].grad)
    assert all(v[0].is_contiguous() for v in nchw.params.values())
    # vmap's batched convolution backward gets channels-last weight gradients wrong: never combined
    assert all(v.is_contiguous() for v in BatchedNet(nets, vectorize=True, channels_last=True).params.values())


@pytest.mark.parametrize("resample", [True, False])
def test_eager_step_equals_hand_written_step(resample):
    x, mask = _problem(B=1)
    op = MaskOp(mask)
    y = op(x)
    net = UNet(2, 2, width=4, depth=2, seed=1)
    x_hat = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    sigma, seed = torch.tensor(0.3), torch.tensor(5)

    bnet = BatchedNet([net])
    opt = torch.optim.Adam(bnet.parameters(), lr=1e-2)
    step = SDIStep(bnet, lambda z: op.fidelity_loss(z, y), opt, x_hat.clone(), sigma=sigma,
                   seeds=seed.reshape(1), step=torch.tensor(0), resample_noise=resample, history_len=3)
    if not resample:
        step.x_in.copy_(step.noisy())
    StepGraph(step, "cpu").run(3)

    ref = copy.deepcopy(net).train()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    losses = []
    for k in range(3):
        x_in = noisy_input(x_hat, sigma, seed, torch.tensor(k if resample else 0))
        out = ref(x_in)
        loss = ((mask * out - y) ** 2).sum()  # explicit residual norm, not the fused op
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        losses.append(loss.item())
    for name, p in ref.named_parameters():
        assert_close(name, bnet.params[name][0], p)
    assert_close("output", step.out, out.detach())
    assert_close("loss history", step.history[:, 0], torch.tensor(losses))
    assert int(step.step) == (3 if resample else 0)
    assert int(step.counter) == 3


def test_batched_run_equals_separate_runs():
    """Problem b of a batch with seed s is the run of problem b alone with seed s + b."""
    x, mask = _problem(B=2)
    y = MaskOp(mask)(x)
    opts = dict(preset="image", T=3, K=4, lr=1e-2, width=4, depth=2)
    batched = SelfDiffusion(seed=3, **opts).solve(y, MaskOp(mask))
    for b in range(2):
        single = SelfDiffusion(seed=3 + b, **opts).solve(y[b : b + 1], MaskOp(mask[b : b + 1]))
        assert torch.equal(batched.x[b : b + 1], single.x)  # same arithmetic, bit for bit
    one = SelfDiffusion(seed=3, **opts).solve(y[:1], MaskOp(mask[:1]))
    assert not torch.allclose(one.x, SelfDiffusion(seed=4, **opts).solve(y[:1], MaskOp(mask[:1])).x)


def test_step_graph_cpu_rules():
    calls = []
    g = StepGraph(lambda: calls.append(1), "cpu")
    assert not g.use_graph
    g.run(4)
    g.run(0)
    assert len(calls) == 4 and g.steps_run == 4
    with pytest.raises(ValueError, match="n must be"):
        g.run(-1)
    with pytest.raises(ValueError, match="use_graph=True needs a CUDA device"):
        StepGraph(lambda: None, "cpu", use_graph=True)


def _mri_problem_cuda(n=64):
    from fastsd.data import mri_slice
    from fastsd.ops.masks import equispaced_mask
    from fastsd.ops.mri import MRI

    op = MRI(equispaced_mask((n, n), 4, acs_lines=8)).cuda()
    return op(mri_slice(n).cuda()), op


@pytest.mark.gpu
@pytest.mark.parametrize("resample", [False, True])
def test_graph_path_equals_eager_path_on_gpu(resample, monkeypatch):
    """With a network whose CUDA kernels are deterministic, the captured inner step replays exactly
    the eager loop's arithmetic (the paper's U-Net is not bit-deterministic on CUDA: the backward
    of bilinear upsampling accumulates with atomics, so two eager runs already differ)."""
    y, op = _mri_problem_cuda()
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 2, 3, padding=1))
    kw = dict(preset="mri", T=3, K=6, lr=1e-3, net=net, seed=0, resample_noise=resample)
    assert_graphed_as_eager(SelfDiffusion, y, op, **kw)


@pytest.mark.gpu
def test_graph_path_matches_eager_path_with_unet_on_gpu():
    """With the U-Net, a graphed run fits the data as well as eager runs do. Exact agreement is the
    deterministic test above's job: here cuDNN and the bilinear-upsampling backward reorder sums and
    Adam amplifies that (two eager runs measured 0.5% apart, a graphed one 7% on an H100)."""
    y, op = _mri_problem_cuda()
    kw = dict(preset="mri", T=4, K=10, lr=1e-3, small=True, seed=0)
    runs = [SelfDiffusion(use_graph=g, **kw).solve(y, op) for g in (False, False, True)]
    final = [r.history["level_loss"][-1] for r in runs]
    spread = abs(final[1] - final[0])
    assert abs(final[2] - final[0]) < max(3 * spread, 0.15 * final[0]), final
    assert final[2] < 0.7 * runs[2].history["level_loss"][0], "graphed run did not fit the data"


@pytest.mark.gpu
def test_step_graph_counts_replays_on_gpu():
    counter = torch.zeros((), dtype=torch.int64, device="cuda")
    g = StepGraph(lambda: counter.add_(1), "cuda", warmup=2)
    g.run(1)  # warm-up only
    g.run(5)  # 1 more warm-up, capture, 4 replays
    torch.cuda.synchronize()
    assert int(counter) == 6 and g.graph is not None
