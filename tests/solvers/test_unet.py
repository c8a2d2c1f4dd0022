"""The paper's U-Net: parameter count, shapes, odd sizes, initialisation; the 1D network."""
import pytest
import torch
from torch import nn

from fastsd.nets import ConvNet1d, UNet


def _conv(cin, cout, k=3):
    return cin * cout * k * k + cout


def _double(cin, mid, cout):  # (conv3 + BN + ReLU) x 2
    return _conv(cin, mid) + 2 * mid + _conv(mid, cout) + 2 * cout


def test_paper_parameter_count():
    """Count from the layer list of the paper's network (64-128-256-512-1024-1024 + bottleneck)."""
    enc = [(2, 64, 64), (64, 128, 128), (128, 256, 256), (256, 512, 512), (512, 1024, 1024), (1024, 1024, 1024)]
    bottleneck = [(1024, 1024, 1024)]
    dec = [(2048, 1024, 512), (1024, 512, 256), (512, 256, 128), (256, 128, 64), (128, 64, 64)]
    expected = sum(_double(*b) for b in enc + bottleneck + dec) + _conv(64, 2, k=1)
    net = UNet(2, 2)  # width 64, depth 5
    n = sum(p.numel() for p in net.parameters())
    assert n == expected
    assert 87e6 < n < 89e6  # "about 88 M"


def test_channel_progression():
    net = UNet(3, 3, width=4, depth=5)
    outs = [net.inc[3].out_channels] + [d[3].out_channels for d in net.downs]
    assert outs == [4, 8, 16, 32, 64, 64]
    assert net.bottleneck[3].out_channels == 64
    assert [u[3].out_channels for u in net.ups] == [32, 16, 8, 4, 4]
    assert net.outc.kernel_size == (1, 1) and net.outc.out_channels == 3


@pytest.mark.parametrize("shape", [(1, 2, 32, 32), (2, 2, 37, 45), (1, 3, 64, 50)])
def test_shapes_including_odd_sizes(shape):
    net = UNet.small(shape[1], 5)
    out = net(torch.randn(shape))
    assert out.shape == (shape[0], 5) + shape[2:]
    assert torch.isfinite(out).all()


def test_sigmoid_output_and_errors():
    net = UNet(1, 1, width=4, depth=3, out_activation="sigmoid")
    out = net(torch.randn(1, 1, 20, 17))
    assert out.min() > 0 and out.max() < 1
    with pytest.raises(ValueError, match="H, W >= 16"):
        net(torch.randn(1, 1, 15, 40))
    with pytest.raises(ValueError, match="out_activation"):
        UNet(1, 1, out_activation="tanh")


def test_initialisation_statistics():
    net = UNet(2, 2, width=16, depth=3, seed=0)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    w = torch.cat([m.weight.flatten() for m in convs])
    assert abs(w.std().item() - 0.02) < 1e-3 and abs(w.mean().item()) < 1e-3
    assert all((m.bias == 0).all() for m in convs)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    g = torch.cat([m.weight.flatten() for m in bns])
    assert abs(g.mean().item() - 1) < 5e-3 and 0.01 < g.std().item() < 0.03
    assert all((m.bias == 0).all() for m in bns)
    same = UNet(2, 2, width=16, depth=3, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), same.parameters()))


def test_convnet1d():
    net = ConvNet1d(2, 2, width=16)
    assert net(torch.randn(3, 2, 35)).shape == (3, 2, 35)
    with pytest.raises(ValueError, match=r"\(B, C, n\)"):
        net(torch.randn(3, 35))
