"""Fused bilinear ×2 upsample + pad + concat (the U-Net decoder join): kernel and reference against
autograd through the U-Net's own ``F.interpolate`` + ``pad_to`` + ``torch.cat`` in float64 (an
independent path), on NCHW and channels-last inputs, uneven padding, one and several channels,
NaN-poisoned outputs; the kernel's backward as the exact adjoint of its forward for every small
size; the custom op against opcheck, gradcheck and torch.compile; fused U-Nets against plain ones
with the Triton kernels in the loop. Kernels run in the interpreter on CPU and compiled on CUDA."""
import importlib

import pytest
import torch
import torch.nn.functional as F

import fastsd.functional.batchnorm as FB
import fastsd.functional.upcat as FU
from fastsd import _backend
from fastsd.kernels import upcat as K
from fastsd.nets.fused import FusedUpsampleConcat, fuse_layers
from fastsd.nets.unet import UNet, pad_to
from fastsd.reference import upcat as R
from fastsd.testing import assert_close, assert_same_network, poisoned_like

# (N, Cs, Ch, H, W, h, w): uneven padding (5x7 -> 10x14 in 11x15), none, a 1x1 map, 2x2 maps,
# an odd padding in one dim only with many channels.
CASES = [(1, 1, 1, 11, 15, 5, 7), (2, 3, 5, 10, 14, 5, 7), (1, 2, 3, 2, 3, 1, 1), (2, 4, 2, 5, 4, 2, 2),
         (1, 6, 9, 13, 6, 6, 3)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _fmt(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format


def _problem(case, dtype, device, channels_last=False, seed=0):
    N, Cs, Ch, H, W, hh, ww = case
    g = torch.Generator().manual_seed(seed)
    shapes = [(N, Cs, H, W), (N, Ch, hh, ww), (N, Cs + Ch, H, W)]
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=_fmt(channels_last))
            for s in shapes]


def _autograd(skip, h, dout):
    """Output and gradients by autograd through the plain U-Net join, in float64."""
    s, hd = (t.detach().double().requires_grad_(True) for t in (skip, h))
    out = torch.cat([s, pad_to(F.interpolate(hd, scale_factor=2, mode="bilinear", align_corners=True), s)], dim=1)
    out.backward(dout.double())
    return out.detach(), s.grad, hd.grad


def _strides(shape, like):
    return torch.empty(shape, memory_format=R.memory_format(like)).stride()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_kernel_and_reference_match_autograd(case, dtype, channels_last, kernel_device):
    skip, h, dout = _problem(case, dtype, kernel_device, channels_last, seed=sum(case))
    Cs, (hh, ww) = skip.shape[1], h.shape[2:]
    out_ref, _, gh_ref = _autograd(skip, h, dout)
    outs = {}
    for name, fwd, bwd in (("kernel", lambda s, x: K.upcat_forward(s, x, block=256),
                            lambda d: K.upcat_backward(d, Cs, hh, ww, block=64)),
                           ("reference", R.upcat_forward, lambda d: R.upcat_backward(d, Cs, hh, ww))):
        out = fwd(skip, h)
        assert out.dtype == dtype and out.shape == out_ref.shape and not out.isnan().any(), name
        assert out.stride() == _strides(out.shape, skip), name  # skip's memory format
        assert torch.equal(out[:, :Cs], skip), name  # the skip channels are copied exactly
        assert_close(f"{name} out", out, out_ref)
        gh = bwd(dout)
        assert gh.dtype == dtype and gh.shape == h.shape and gh.stride() == _strides(gh.shape, dout), name
        assert_close(f"{name} grad_h", gh, gh_ref, factor=2)
        outs[name] = (out, gh)
    assert_close("kernel vs reference out", outs["kernel"][0], outs["reference"][0])
    assert_close("kernel vs reference grad_h", outs["kernel"][1], outs["reference"][1], factor=2)


@pytest.mark.parametrize("hh", range(1, 10))
def test_kernel_backward_is_the_adjoint(hh, kernel_device):
    """<up(h), g> = <h, up*(g)> in float64 for every map size up to 9, padding even and odd: a gather
    window that missed an output would break the identity."""
    ww = 10 - hh
    case = (2, 1, 3, 2 * hh + hh % 2, 2 * ww + (hh + 1) % 3, hh, ww)
    skip, h, g = _problem(case, torch.float64, kernel_device, seed=hh)
    up = K.upcat_forward(torch.zeros_like(skip), h, block=32)
    lhs = float((up * g)[:, 1:].sum())
    rhs = float((h * K.upcat_backward(g, 1, hh, ww, block=32)).sum())
    assert_close("<up(h), g> = <h, up*(g)>", lhs, rhs)


def test_mixed_layouts_and_poisoned_outputs(kernel_device):
    """Channels-last skip with NCHW h, a strided incoming gradient, and outputs of the other layout
    that start as NaN: every element is written, through any strides."""
    case = (2, 3, 4, 11, 9, 5, 4)
    skip, _, _ = _problem(case, torch.float32, kernel_device, channels_last=True, seed=1)
    _, h, dout = _problem(case, torch.float32, kernel_device, seed=2)
    dout = dout.transpose(2, 3).contiguous().transpose(2, 3)  # neither NCHW nor channels-last
    out_ref, _, gh_ref = _autograd(skip, h, dout)
    out = K.upcat_forward(skip, h, out=poisoned_like(out_ref.float()), block=128)
    gh = K.upcat_backward(dout, 3, 5, 4, out=poisoned_like(h).contiguous(memory_format=torch.channels_last), block=16)
    assert torch.isfinite(out).all() and torch.isfinite(gh).all()
    assert_close("out", out, out_ref, factor=0.1)
    assert_close("h.grad", gh, gh_ref, factor=0.1)


def test_op_gradcheck_and_opcheck(device):
    skip, h, _ = _problem((1, 2, 3, 7, 6, 3, 3), torch.float64, device, seed=5)
    inputs = tuple(t.detach().requires_grad_(True) for t in (skip, h))
    assert torch.autograd.gradcheck(FU.upsample_concat, inputs)
    for channels_last in (False, True):
        skip, h, dout = _problem((2, 3, 2, 9, 7, 4, 3), torch.float32, device, channels_last, seed=6)
        torch.library.opcheck(torch.ops.fastsd.upcat.default, (skip, h))
        torch.library.opcheck(torch.ops.fastsd.upcat.default, (skip.requires_grad_(True), h.requires_grad_(True)))
        torch.library.opcheck(torch.ops.fastsd.upcat_backward.default, (dout, 3, 4, 3))


@pytest.mark.parametrize("channels_last", [False, True])
def test_public_op_value_and_backward(channels_last, device, maybe_compile):
    skip, h, dout = _problem((2, 3, 4, 11, 15, 5, 7), torch.float32, device, channels_last, seed=7)
    out_ref, gs_ref, gh_ref = _autograd(skip, h, dout)
    skip, h = skip.requires_grad_(True), h.requires_grad_(True)
    out = maybe_compile(FU.upsample_concat)(skip, h)
    out.backward(dout)
    assert out.stride() == _strides(out.shape, skip)
    assert torch.equal(skip.grad, gs_ref)
    assert_close("out", out, out_ref)
    assert_close("h.grad", h.grad, gh_ref)


def test_validation():
    skip, h = torch.randn(2, 3, 9, 8), torch.randn(2, 4, 4, 4)
    with pytest.raises(ValueError, match="must fit in skip"):
        FU.upsample_concat(skip, torch.randn(2, 4, 5, 4))
    with pytest.raises(ValueError, match="same batch size"):
        FU.upsample_concat(skip, h[:1])
    with pytest.raises(ValueError, match="dimensions"):
        FU.upsample_concat(skip, h[0])
    with pytest.raises(ValueError, match="dtype"):
        FU.upsample_concat(skip, h.int())
    with pytest.raises(ValueError, match="up to 32767"):
        K.upcat_forward(torch.zeros(1, 1, 2, 2 * 2**15), torch.zeros(1, 1, 1, 2**15))
    assert FU.upsample_concat(skip, h.bfloat16()).dtype == torch.float32  # promoted as torch.cat does


@pytest.fixture(params=["default", "kernels"])
def backend(request, monkeypatch):
    """'default': each op's own choice (reference on CPU); 'kernels': the Triton kernels on any
    device (in the interpreter on CPU), for the fused BatchNorm + ReLU and upsample-concat ops."""
    if request.param == "kernels":
        def kernels(t, family):
            return importlib.import_module(_backend.FAMILIES[family].kernels)
        for mod in (FB, FU):
            monkeypatch.setattr(mod, "implementation", kernels)
    return request.param


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_fused_unet_matches_plain(dtype, channels_last, device, backend):
    """fuse_layers keeps the state dict and computes the same network (train mode), forward and
    weight gradients, in float32 and under bf16 autocast; an odd input size pads unevenly."""
    net = UNet(2, 2, width=4, depth=2, seed=1).to(device)
    fused = fuse_layers(UNet(2, 2, width=4, depth=2, seed=1).to(device))
    assert any(isinstance(m, FusedUpsampleConcat) for m in fused.modules())
    sd0, sd1 = net.state_dict(), fused.state_dict()
    assert list(sd0) == list(sd1) and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    x = torch.randn(2, 2, 18, 13, generator=torch.Generator().manual_seed(0)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        net, fused = net.to(memory_format=torch.channels_last), fused.to(memory_format=torch.channels_last)
    assert_same_network(net, fused, x, dtype)
