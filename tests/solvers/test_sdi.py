"""Self-diffusion: schedule values, the algorithm step by step, reconstruction quality on a real
MRI slice, reproducibility, options and errors."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from fastsd.api import solve
from fastsd.data import mri_slice
from fastsd.functional.noise import noisy_input
from fastsd.metrics import magnitude, psnr
from fastsd.ops.masks import equispaced_mask
from fastsd.ops.matrix import MatrixOp, compressed_sensing_matrix
from fastsd.ops.mri import MRI
from fastsd.solvers.schedules import linear_betas, sdi_sigmas
from fastsd.solvers.sdi import SelfDiffusion, fourier_l1, total_variation
from fastsd.testing import MaskOp, assert_close

# -- schedule ----------------------------------------------------------------------------------


def _sigmas_by_hand(T, b0, b1):
    betas = [b0 + (b1 - b0) * i / (T - 1) for i in range(T)]
    out, prod = [], 1.0
    for b in betas:
        prod *= 1.0 - b
        out.append(math.sqrt(1.0 - prod))
    return out[::-1]


@pytest.mark.parametrize("T,b0,b1", [(40, 1e-4, 1e-2), (30, 1e-4, 1e-2), (40, 1e-4, 2e-2), (7, 1e-4, 1e-3)])
def test_schedule_matches_definition(T, b0, b1):
    got = sdi_sigmas(T, b0, b1, dtype=torch.float64)
    assert got.shape == (T,)
    assert_close("sigmas", got, torch.tensor(_sigmas_by_hand(T, b0, b1), dtype=torch.float64))
    assert (got[1:] < got[:-1]).all()  # largest first


def test_schedule_defaults_and_variants():
    s = sdi_sigmas(40)
    assert s.dtype == torch.float32
    assert s[0].item() == pytest.approx(0.42833, abs=1e-5)
    assert s[-1].item() == pytest.approx(0.01, abs=1e-7)
    smaller = sdi_sigmas(40, factor=4.0)  # the official code's beta divisor: a smaller peak
    assert smaller[0] < s[0] and smaller[0].item() == pytest.approx(_sigmas_by_hand(40, 2.5e-5, 2.5e-3)[0])
    assert linear_betas(3, 1e-4, 3e-4).tolist() == pytest.approx([1e-4, 2e-4, 3e-4])
    for bad in (dict(T=0), dict(T=2.5), dict(T=4, beta_start=0.1, beta_end=0.01), dict(T=4, factor=0)):
        with pytest.raises(ValueError):
            linear_betas(**bad)


# -- the algorithm, observed through a recording network ---------------------------------------

RECORD = []


class Recorder(nn.Module):
    """A small user network that logs every (input, output) pair it sees (single problem)."""

    def __init__(self, c=2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, c, 1))

    def forward(self, x):
        out = self.body(x)
        RECORD.append((x.detach().clone(), out.detach().clone()))
        return out


@pytest.fixture
def small_problem():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 12, 12, generator=g)
    mask = (torch.rand(1, 2, 12, 12, generator=g) < 0.5).float()
    return MaskOp(mask), mask * x


def _run(op, y, **kw):
    RECORD.clear()
    torch.manual_seed(123)
    net = Recorder()
    res = SelfDiffusion(preset="image", net=net, lr=1e-2, **kw).solve(y, op)
    return res, list(RECORD)


@pytest.mark.parametrize("mode", ["per_level", "resample", "no_noise"])
def test_noise_and_update_rules(small_problem, mode):
    """x̂₀ ~ N(0, I); inputs x̂_t + σ_t ε (ε fixed per level, fresh per step, or absent);
    x̂_{t+1} = the output of level t's last inner step."""
    op, y = small_problem
    T, K, seed = 3, 4, 11
    res, rec = _run(op, y, T=T, K=K, seed=seed, resample_noise=(mode == "resample"), no_noise=(mode == "no_noise"))
    assert len(rec) == T * K
    sig = sdi_sigmas(T)
    x_hat = torch.randn((2, 12, 12), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()[None]
    sd = torch.tensor(seed)
    for t in range(T):
        for k in range(K):
            x_in = rec[t * K + k][0]
            if mode == "no_noise":
                expected = x_hat
            elif mode == "per_level":
                expected = noisy_input(x_hat, sig[t], sd, torch.tensor(t))
            else:
                expected = noisy_input(x_hat, sig[t], sd, torch.tensor(t * K + k))
            assert torch.equal(x_in, expected), (t, k)
        if mode == "per_level":
            assert torch.equal(rec[t * K][0], rec[t * K + K - 1][0])
            assert (rec[t * K][0] - x_hat).std().item() == pytest.approx(sig[t].item(), rel=0.15)
        if mode == "resample":
            assert not torch.equal(rec[t * K][0], rec[t * K + 1][0])
        x_hat = rec[t * K + K - 1][1]
    assert torch.equal(res.x, x_hat)
    assert len(res.history["loss"]) == T * K and res.info["iterations"] == T * K


def test_refresh_update(small_problem):
    op, y = small_problem
    res, rec = _run(op, y, T=2, K=3, update="refresh")
    assert len(rec) == 2 * 4  # one extra forward per level with the updated weights
    assert torch.equal(rec[3][0], rec[2][0])  # same noisy input
    assert torch.equal(res.x, rec[-1][1])


def test_losses_as_defined():
    """The loss recorded at the first iteration equals the stated formula on the first output."""
    x = mri_slice(32)
    op = MRI(equispaced_mask((32, 32), 4, acs_lines=4))
    y = op(x)
    res, rec = _run(op, y, T=1, K=1, seed=2)  # preset 'image' -> mse
    out = rec[0][1]
    assert_close("mse loss", res.history["loss"][0], ((op(out) - y).abs() ** 2).mean().item(), dtype=torch.float32)

    RECORD.clear()
    res = SelfDiffusion("mri", net=Recorder(), T=1, K=1, seed=2).solve(y, op)
    (z_in, z_out), (_, out) = RECORD[0], RECORD[1]  # the scaling forward, then the first step
    s = res.info["scale"][0]
    ref = torch.linalg.vector_norm(op(out) - s * y) + 1e-4 * (out.diff(dim=2).abs().sum() + out.diff(dim=3).abs().sum())
    assert_close("mri loss", res.history["loss"][0], ref.item(), dtype=torch.float32)
    # the scale: ||D(z)|| / ||A^H y||, z the second draw of the problem's generator (after x̂₀)
    g = torch.Generator().manual_seed(2)
    torch.randn((2, 32, 32), generator=g, dtype=torch.float64)
    z = torch.randn((2, 32, 32), generator=g, dtype=torch.float64).float()[None]
    assert torch.equal(z_in, z)
    assert_close("scale", s, (torch.linalg.vector_norm(z_out) / torch.linalg.vector_norm(op.adjoint(y))).item(),
                 dtype=torch.float32)


def test_regularisers():
    z = torch.arange(12.0).reshape(1, 1, 3, 4) ** 2
    tv = sum(abs(z[0, 0, i + 1, j] - z[0, 0, i, j]) for i in range(2) for j in range(4))
    tv += sum(abs(z[0, 0, i, j + 1] - z[0, 0, i, j]) for i in range(3) for j in range(3))
    assert total_variation(z).item() == pytest.approx(float(tv))
    v = torch.randn(2, 16, dtype=torch.float64)
    ref = np.abs(np.fft.fft(v.numpy(), axis=1)).sum(1)
    assert_close("fourier_l1", fourier_l1(v), torch.from_numpy(ref), factor=1e3)  # smoothed: sqrt(|f|² + 1e-10)


# -- quality, reproducibility, other operators ----------------------------------------------------


def test_sdi_beats_zero_filled_on_real_mri():
    """64x64 head slice, 4x equispaced + 6 ACS lines: zero-filled ≈ 21.7 dB, SDI (300 steps, small
    network) ≈ 23.8 dB; the test asks for a 1.5 dB margin."""
    x = mri_slice(64)
    op = MRI(equispaced_mask((64, 64), 4, acs_lines=6))
    y = op(x)
    zf = psnr(magnitude(op.zero_filled(y))[0], magnitude(x)[0])
    res = SelfDiffusion("mri", T=15, K=20, lr=5e-3, small=True, seed=0).solve(y, op, x_true=x)
    got = psnr(magnitude(res.x)[0], magnitude(x)[0])
    assert got > zf + 1.5, (got, zf)
    assert res.history["psnr"][-1] == pytest.approx(got)
    assert res.x.shape == x.shape and res.info["preset"] == "mri" and res.info["scale"][0] > 0


def test_bit_reproducible_per_seed():
    x = mri_slice(32, phase="smooth")
    op = MRI(equispaced_mask((32, 32), 4, acs_lines=4))
    y = op(x)
    kw = dict(T=2, K=3, small=True, resample_noise=True)
    a = SelfDiffusion("mri", seed=5, **kw).solve(y, op)
    b = SelfDiffusion("mri", seed=5, **kw).solve(y, op)
    c = SelfDiffusion("mri", seed=6, **kw).solve(y, op)
    assert torch.equal(a.x, b.x) and a.history["loss"] == b.history["loss"]
    assert not torch.allclose(a.x, c.x)


def test_vector_unknowns_use_the_1d_network():
    """1D compressed sensing (n=128, m=35) with a MatrixOp: the ConvNet1d fits the measurements."""
    A = compressed_sensing_matrix(35, 128, seed=0)
    t = torch.arange(128.0)
    x = (torch.sin(2 * math.pi * t / 128) + 0.5 * torch.sin(2 * math.pi * 6 * t / 128))[None]
    op = MatrixOp(A)
    y = op(x)
    res = SelfDiffusion("cs1d", T=4, K=25, lr=1e-2, small=True).solve(y, op)
    assert res.x.shape == (1, 128) and res.x.dtype == torch.float32
    assert res.history["loss"][-1] < 0.6 * res.history["loss"][0]
    assert res.info["fourier_weight"] == 0.01 and res.info["params_per_problem"] < 10_000


def test_complex_vector_unknown_and_sigmoid_output():
    A = torch.randn(10, 20, dtype=torch.complex64)
    op = MatrixOp(A)
    y = op(torch.randn(2, 20, dtype=torch.complex64))
    res = SelfDiffusion("radar", T=2, K=2, small=True).solve(y, op)
    assert res.x.shape == (2, 20) and res.x.is_complex()
    r = MatrixOp(A, real_input=True)
    res = SelfDiffusion("radar", T=2, K=2, small=True).solve(r(torch.rand(1, 20)), r)
    assert res.x.min() >= 0 and res.x.max() <= 1  # sigmoid output


def test_callback_early_stop_and_api():
    x = mri_slice(32)
    op = MRI(equispaced_mask((32, 32), 4, acs_lines=4))
    y = op(x)
    seen = []

    def cb(it, state):
        seen.append((it, sorted(state)))
        return len(seen) == 2

    res = solve(y, op, "sdi", T=5, K=3, small=True, callback=cb, x_true=x)
    assert [s[0] for s in seen] == [3, 6]
    assert seen[0][1] == ["level", "loss", "psnr", "sigma", "x"]
    assert res.info["iterations"] == 6 and len(res.history["psnr"]) == 2 and len(res.history["loss"]) == 6
    with pytest.raises(ValueError, match="unknown method"):
        solve(y, op, "nope")
    with pytest.raises(ValueError, match="sdi"):
        solve(y, op, "sdi", not_an_option=1)


@pytest.mark.parametrize("kw,match", [
    (dict(preset="ct"), "unknown preset"),
    (dict(loss="l1"), "unknown loss"),
    (dict(update="avg"), "update"),
    (dict(T=0), "T must be"),
    (dict(K=1.5), "K must be"),
    (dict(lr=-1.0), "lr must be"),
    (dict(net=lambda x: x), "nn.Module"),
    (dict(dtype=torch.float16), "dtype"),
])
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        SelfDiffusion(**kw)


def test_bad_inputs():
    x = mri_slice(32)
    op = MRI(equispaced_mask((32, 32), 4, acs_lines=4))
    y = op(x)
    with pytest.raises(ValueError, match="x_true"):
        SelfDiffusion(T=1, K=1, small=True).solve(y, op, x_true=x[:, :1])
    bad = y.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        SelfDiffusion(T=1, K=1, small=True).solve(bad, op)
    op24 = MRI(torch.ones(24, 24))
    with pytest.raises(ValueError, match="minimum of 32 a side"):
        SelfDiffusion(T=1, K=1, small=True).solve(op24(mri_slice(24)), op24)
