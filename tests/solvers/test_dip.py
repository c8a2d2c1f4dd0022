"""DIP, aSeqDIP, the skip network and ES-WMV early stopping."""
import pytest
import torch

import fastsd
from fastsd.data import natural_image
from fastsd.metrics import psnr
from fastsd.nets.skip import SkipNet, max_depth
from fastsd.ops.image import Denoise, Inpainting, random_pixel_mask
from fastsd.ops.matrix import MatrixOp, compressed_sensing_matrix
from fastsd.solvers.dip import DIP, ASeqDIP
from fastsd.solvers.early_stopping import ESWMV
from fastsd.testing import assert_close, assert_graphed_as_eager

NET = dict(width=8, depth=2, skip_channels=2)


def _inpainting(size=16, dtype=torch.float64, batch=1):
    x = natural_image("camera", size=size, gray=True).to(dtype)
    x = torch.cat([x, x.flip(-1)][:batch])
    op = Inpainting(random_pixel_mask((size, size), 0.5, seed=0))
    return x, op, op(x)


# -- SkipNet ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dim,shape", [(2, (2, 3, 16, 20)), (1, (2, 3, 40))])
def test_skipnet_shapes_and_gradients(dim, shape):
    net = SkipNet(3, 5, depth=3, channels_down=[4, 6, 8], channels_up=6, channels_skip=[2, 0, 2], dim=dim)
    x = torch.randn(shape, requires_grad=True)
    out = net(x)
    assert out.shape == (shape[0], 5) + shape[2:]
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert (SkipNet(3, 1, depth=2, sigmoid=True, dim=dim)(x.detach()) > 0).all()


def test_skipnet_rejects_bad_sizes():
    assert max_depth(16) == 3 and max_depth(17) == 3 and max_depth(3) == 0
    with pytest.raises(ValueError, match="too small"):
        SkipNet(1, 1, depth=4)(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="expects"):
        SkipNet(1, 1, depth=2)(torch.randn(1, 1, 16))
    with pytest.raises(ValueError, match="channels_down has 2 entries"):
        SkipNet(1, 1, depth=3, channels_down=[4, 4])
    with pytest.raises(ValueError, match="dim"):
        SkipNet(1, 1, dim=3)


# -- DIP against a hand-written loop -----------------------------------------------------------


def _hand_written_dip(op, y, iters: int, seed: int, noise_std: float = 0.0):
    """The textbook DIP loop on a plain SkipNet: Adam on ‖A f(z + σ ε_i) − y‖², z ~ U(0, 0.1) from
    the CPU generator seeded ``seed``, ε_i the counter-based noise of step i. Returns (f(z), losses)."""
    from fastsd.functional.noise import gaussian_noise

    torch.manual_seed(seed)
    net = SkipNet(4, 1, depth=2, channels_down=8, channels_up=8, channels_skip=2).double()
    z = 0.1 * torch.rand((4, 16, 16), generator=torch.Generator().manual_seed(seed)).double()[None]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for i in range(iters):
        opt.zero_grad()
        z_in = z + noise_std * gaussian_noise(z.float(), torch.tensor([seed]), torch.tensor(i)).double() \
            if noise_std else z
        loss = (op(net(z_in)) - y).square().sum()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        return net(z), losses


def test_dip_equals_hand_written_loop():
    """The solver (BatchedNet, fused fidelity, in-place step) does exactly the textbook DIP loop."""
    x, op, y = _inpainting()
    iters, seed = 6, 5
    res = DIP(iterations=iters, input_channels=4, seed=seed, **NET).solve(y, op)
    ref, losses = _hand_written_dip(op, y, iters, seed)
    # Not bit-equal: the fused fidelity gradient rounds differently from autograd, and Adam turns the
    # rounding noise on zero-gradient parameters (conv biases ahead of BatchNorm) into ~lr·1e-6 steps.
    # A real deviation (lr, input, loss scale, noise) moves the output by ~1e-2.
    assert_close("x", res.x, ref, factor=1e7)
    assert_close("loss history", torch.tensor(res.history["loss"], dtype=torch.float64),
                 torch.tensor(losses, dtype=torch.float64), factor=1e6)


def test_aseqdip_equals_hand_written_loop():
    """aSeqDIP: input = A^H y, two Adam steps on ‖A f(z) − y‖² + λ‖f(z) − z‖², then z ← f(z)."""
    x, op, y = _inpainting()
    rounds, lam, seed = 3, 0.5, 2
    res = ASeqDIP(iterations=2 * rounds, ae_weight=lam, seed=seed, **NET).solve(y, op)

    torch.manual_seed(seed)
    net = SkipNet(1, 1, depth=2, channels_down=8, channels_up=8, channels_skip=2).double()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    z = op.adjoint(y)
    for _ in range(rounds):
        for _ in range(2):
            opt.zero_grad()
            out = net(z)
            ((op(out) - y).square().sum() + lam * (out - z).square().sum()).backward()
            opt.step()
        with torch.no_grad():
            z = net(z)
    assert_close("x", res.x, z)
    assert res.info["rounds"] == rounds and res.info["iterations"] == 2 * rounds


def test_batched_problems_equal_separate_runs():
    """Problem b of a batch runs with seed + b: its own weights, input and input-noise stream."""
    x, op, y = _inpainting(batch=2)
    kw = dict(iterations=4, input_channels=4, reg_noise_std=0.05, **NET)
    both = DIP(seed=3, **kw).solve(y, op).x
    first = DIP(seed=3, **kw).solve(y[:1], op).x
    second = DIP(seed=4, **kw).solve(y[1:], op).x
    assert_close("x", both, torch.cat([first, second]))
    assert not torch.allclose(both, DIP(seed=3, **dict(kw, reg_noise_std=0.0)).solve(y, op).x)


# -- does it reconstruct? ---------------------------------------------------------------------


def test_dip_inpaints_better_than_mean_fill():
    x, op, y = _inpainting(size=32)
    m = op.mask
    mean_fill = y + (1 - m) * (y.sum() / m.sum())
    res = fastsd.solve(y, op, "dip", iterations=100, width=16, depth=3, input_channels=8, sigmoid=True, seed=0)
    assert res.history["loss"][-1] < 0.02 * res.history["loss"][0]
    assert psnr(res.x[0], x[0]) > psnr(mean_fill[0], x[0]) + 3  # measured 24.1 vs 19.6 dB


def test_aseqdip_reduces_the_data_loss_on_vectors():
    A = compressed_sensing_matrix(16, 32, seed=0).double()
    op = MatrixOp(A)
    x = torch.sin(torch.linspace(0, 3, 32, dtype=torch.float64))[None]
    y = op(x)
    res = fastsd.solve(y, op, "aseqdip", iterations=200, width=8, depth=3, ae_weight=0.1, seed=0)
    assert res.history["loss"][-1] < 0.1 * res.history["loss"][0]


# -- ES-WMV -----------------------------------------------------------------------------------


def test_eswmv_finds_the_quietest_window_and_stops():
    """Outputs whose spread shrinks until update 30 and grows after: the best output is the last
    of the quietest window, and the stop comes ``patience`` updates after it."""
    g = torch.Generator().manual_seed(0)
    amp = [abs(t - 30) + 1.0 for t in range(200)]
    xs = [a * torch.randn(2, 8, generator=g, dtype=torch.float64) for a in amp]
    es = ESWMV(window=5, patience=20)
    stopped = None
    for t, x in enumerate(xs):
        if es.update(x):
            stopped = t
            break
    var = [torch.stack(xs[t - 4 : t + 1]).var(0, unbiased=False).mean(-1) for t in range(4, stopped + 1)]
    best = torch.stack(var).argmin(0) + 4  # per problem, end index of the quietest window
    assert es.best_iter.tolist() == best.tolist()
    for b in range(2):
        assert torch.equal(es.best[b], xs[int(best[b])][b])  # the stored window end, copied
    assert stopped == int(best.max()) + 20
    with pytest.raises(ValueError, match="window"):
        ESWMV(window=1)
    with pytest.raises(ValueError, match="patience"):
        ESWMV(patience=0)


def test_dip_early_stopping_returns_the_best_output():
    x, op, y = _inpainting()
    res = DIP(iterations=200, input_channels=4, early_stop=True, es_window=3, es_patience=4, seed=0, **NET).solve(y, op)
    assert res.info["stopped_at"] is not None and res.info["stopped_at"] < 199
    assert len(res.history["loss"]) == res.info["stopped_at"] + 1
    assert res.info["es_best_iter"][0] == res.info["stopped_at"] - 4


def test_dip_option_errors():
    y = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="iterations"):
        DIP(iterations=0)
    with pytest.raises(ValueError, match="net must be"):
        DIP(net="resnet")
    with pytest.raises(ValueError, match="too small"):
        DIP(iterations=1).solve(torch.rand(1, 1, 3, 3), Denoise())
    with pytest.raises(ValueError, match="use_graph=True needs a CUDA device"):
        DIP(iterations=1, use_graph=True, device="cpu", **NET).solve(y, Denoise())
    with pytest.raises(ValueError, match="init"):
        ASeqDIP(init="zeros")


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [DIP, ASeqDIP])
def test_cuda_graph_matches_eager(cls, monkeypatch):
    """The graphed step replays the eager arithmetic (capturable Adam on both paths). SkipNet itself is
    not bit-deterministic on CUDA (reflect padding and bilinear upsampling accumulate gradients with
    atomics), so the comparison uses a network whose CUDA kernels are deterministic."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)

    def net(cin, cout):
        return torch.nn.Sequential(torch.nn.Conv2d(cin, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                   torch.nn.Conv2d(8, cout, 3, padding=1))

    x, op, y = _inpainting(dtype=torch.float32)
    kw = dict(iterations=12, seed=0, device="cuda", net=net)
    if cls is DIP:
        kw.update(input_channels=4, reg_noise_std=0.05)
    assert_graphed_as_eager(cls, y, op, **kw)


# -- what the early-stopped and noisy-input runs return ------------------------------------------


def _outputs_per_step():
    """A callback recording the output of every step, and the list it fills."""
    outs = []
    return outs, lambda i, state: outs.append(state["x"].clone())


def test_dip_early_stopping_returns_the_recorded_best_not_the_last_output():
    x, op, y = _inpainting()
    outs, cb = _outputs_per_step()
    res = DIP(iterations=200, input_channels=4, early_stop=True, es_window=3, es_patience=4, seed=0,
              **NET).solve(y, op, callback=cb)
    best = int(res.info["es_best_iter"][0])
    assert best < len(outs) - 1
    assert torch.equal(res.x, outs[best])
    assert not torch.allclose(res.x, outs[-1])


def test_dmplug_early_stopping_returns_the_recorded_best_not_the_last_output():
    from test_solvers_posterior import gaussian_problem

    from fastsd.solvers.dmplug import DMPlug

    op, y, prior, _, _, _ = gaussian_problem(0.05, copies=2)
    outs, cb = _outputs_per_step()
    res = DMPlug(prior, iterations=60, lr=0.5, early_stop=True, es_window=3, es_patience=5, seed=0).solve(
        y, op, callback=cb)
    best = [int(i) for i in res.info["es_best_iter"]]
    for b in range(2):
        assert torch.equal(res.x[b], outs[best[b]][b])
    assert not torch.allclose(res.x, outs[-1])


def test_dip_input_noise_is_fresh_at_every_step():
    """DIP with input noise equals the hand-written loop whose step i adds the counter-based noise
    of step i (``gaussian_noise(z, seed, i)``): a counter that never advances reuses step 0's noise."""
    x, op, y = _inpainting()
    iters, seed, std = 5, 3, 0.05
    res = DIP(iterations=iters, input_channels=4, reg_noise_std=std, seed=seed, **NET).solve(y, op)
    _, losses = _hand_written_dip(op, y, iters, seed, std)
    assert_close("loss history", torch.tensor(res.history["loss"], dtype=torch.float64),
                 torch.tensor(losses, dtype=torch.float64), factor=1e6)
