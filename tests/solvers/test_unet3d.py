"""The official 3-D U-Net: parameter count from the layer list, shapes with odd sizes,
initialisation (transposed convs included), errors; SDI runs it on 5-D MRI3D unknowns."""
import pytest
import torch
from torch import nn

from fastsd.nets import UNet3d
from fastsd.ops import MRI3D, birdcage_maps, poisson_disc_mask_2d
from fastsd.solvers.sdi import PRESETS, SelfDiffusion


def _conv(cin, cout, k=3):
    return cin * cout * k**3 + cout


def _double(cin, cout):  # (conv3 + BN + ReLU) x 2
    return _conv(cin, cout) + 2 * cout + _conv(cout, cout) + 2 * cout


def test_paper_parameter_count():
    """32-64-128-256-512-1024, no bottleneck, ConvTranspose3d(c, c/2, 2) + double conv per level."""
    ch = [32, 64, 128, 256, 512, 1024]
    enc = _double(2, 32) + sum(_double(ch[i], ch[i + 1]) for i in range(5))
    dec = sum(ch[i + 1] * ch[i] * 8 + ch[i] + _double(ch[i + 1], ch[i]) for i in range(5))
    net = UNet3d(2, 2)
    n = sum(p.numel() for p in net.parameters())
    assert n == enc + dec + _conv(32, 2, k=1)
    assert 90e6 < n < 91e6
    assert [u.out_channels for u in net.upsample] == [512, 256, 128, 64, 32]
    assert not any(isinstance(m, nn.Upsample) for m in net.modules())


@pytest.mark.parametrize("shape", [(1, 2, 8, 10, 12), (2, 2, 9, 11, 13)])
def test_shapes_including_odd_sizes(shape):
    net = UNet3d.small(shape[1], 3, seed=0)
    out = net(torch.randn(shape))
    assert out.shape == (shape[0], 3) + shape[2:] and torch.isfinite(out).all()


def test_initialisation_and_errors():
    net = UNet3d(2, 2, width=8, depth=2, seed=0)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    w = torch.cat([m.weight.flatten() for m in convs])
    assert abs(w.std().item() - 0.02) < 1e-3 and all((m.bias == 0).all() for m in convs)
    assert abs(torch.cat([m.weight.flatten() for m in net.upsample]).std().item() - 0.02) < 2e-3
    g = torch.cat([m.weight for m in net.modules() if isinstance(m, nn.BatchNorm3d)])
    assert abs(g.mean().item() - 1) < 5e-3
    same = UNet3d(2, 2, width=8, depth=2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), same.parameters()))
    with pytest.raises(ValueError, match="D, H, W >= 8"):
        net(torch.randn(1, 2, 7, 16, 16))
    with pytest.raises(ValueError, match="out_activation"):
        UNet3d(1, 1, out_activation="tanh")


def test_sdi_runs_the_3d_network_on_volumes():
    shape = (8, 10, 12)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, *shape, generator=g)
    op = MRI3D(poisson_disc_mask_2d(shape[1:], 3, calib=4, seed=0), birdcage_maps(4, shape, per_ring=2))
    y = op(x)
    kw = dict(T=2, K=3, small=True, seed=3)
    res = SelfDiffusion(**kw).solve(y, op, x_true=x)
    assert res.info["preset"] == "mri3d" and res.info["loss"] == "norm" and res.info["tv_weight"] == 0
    assert (res.info["T"], res.info["K"]) == (2, 3) and PRESETS["mri3d"]["K"] == 50
    assert res.x.shape == x.shape and torch.isfinite(res.x).all() and len(res.history["psnr"]) == 2
    assert 15_000 < res.info["params_per_problem"] < 30_000
    again = SelfDiffusion(**kw).solve(y, op)
    assert torch.equal(res.x, again.x)


def test_sdi_3d_beats_zero_filled():
    """16³ two-blob phantom, 4 birdcage coils, 4x Poisson-disc over (ky, kz), 4x4 calibration box:
    zero-filled ≈ 20.4 dB, 3-D SDI (100 steps, small network) ≈ 22.6-24.2 dB over seeds 0-2; the
    test asks for a 1 dB margin."""
    from fastsd.data3d import simulate_acquisition
    from fastsd.metrics import magnitude, psnr

    shape = (16, 16, 16)
    g = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n, dtype=torch.float64) for n in shape], indexing="ij"))
    v = ((g**2).sum(0) < 0.8) * (1 + 0.5 * g[1]) + (((g - 0.3) ** 2).sum(0) < 0.1) * 0.5
    x = torch.stack([v.float(), torch.zeros(shape)])[None]
    y, op = simulate_acquisition(x, coils=4, acceleration=4, calib=4, seed=0)
    zf = psnr(magnitude(op.adjoint(y))[0], magnitude(x)[0])
    res = SelfDiffusion(T=5, K=20, lr=1e-2, small=True, seed=0).solve(y, op)
    assert psnr(magnitude(res.x)[0], magnitude(x)[0]) > zf + 1.0
