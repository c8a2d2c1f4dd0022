"""Triton kernels of the masked-FFT MRI family, launched directly (interpreter on CPU, compiled on
CUDA), against explicit fftshift / fft2 expressions and the PyTorch reference."""
import math

import pytest
import torch

from fastsd.kernels import mri as K
from fastsd.reference import mri as R
from fastsd.testing import assert_close, complex_randn, poisoned_like

DIMS = (-2, -1)

# (B, C, H, W, per-problem mask/maps); C = 0 means single coil (no coil maps)
CASES = [(2, 3, 17, 13, False), (2, 0, 16, 12, False), (3, 2, 9, 11, True)]


def _fftshift(t):
    return torch.fft.fftshift(t, dim=DIMS)


def _ifftshift(t):
    return torch.fft.ifftshift(t, dim=DIMS)


def _problem(case, device, seed=0):
    """Fresh random image, coil maps, 0/1 mask and measurement on ``device``."""
    B, C, H, W, batched = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 2, H, W, generator=g).to(device)
    smaps = None if C == 0 else complex_randn(*((B,) if batched else ()), C, H, W, gen=g, device=device)
    mask = (torch.rand(*((B,) if batched else ()), H, W, generator=g) < 0.4).float().to(device)
    y = complex_randn(B, max(C, 1), H, W, gen=g, device=device)
    return x, smaps, mask, y


def _m4(mask):
    return mask[:, None] if mask.ndim == 3 else mask


@pytest.fixture(params=CASES, ids=lambda c: "x".join(map(str, c[:4])) + ("-batched" if c[4] else ""))
def case(request):
    return request.param


@pytest.mark.parametrize("block", [1024, 64])
def test_pre_fft(case, kernel_device, block):
    x, smaps, _, _ = _problem(case, kernel_device)
    B, _, H, W = x.shape
    C = 1 if smaps is None else smaps.shape[-3]
    out = poisoned_like(torch.empty(B, C, H, W, dtype=torch.complex64, device=kernel_device))
    got = K.pre_fft(x, smaps, out=out, block=block)
    z = torch.complex(x[:, 0], x[:, 1])[:, None]
    want = _ifftshift(z if smaps is None else z * smaps)
    assert got.data_ptr() == out.data_ptr()
    assert_close("pre_fft", got, want)


def test_pre_fft_strided_input(kernel_device):
    """Non-contiguous x (channels-last memory) is read through its strides."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 5, 2, generator=g).permute(0, 3, 1, 2).to(kernel_device)
    want = _ifftshift(torch.complex(x[:, 0], x[:, 1])[:, None])
    assert_close("pre_fft", K.pre_fft(x), want)


@pytest.mark.parametrize("block", [1024, 64])
def test_post_fft_forward_and_adjoint_modes(case, kernel_device, block):
    x, smaps, mask, y = _problem(case, kernel_device)
    k = complex_randn(*y.shape, gen=torch.Generator().manual_seed(2), device=kernel_device)
    out, loss = K.post_fft(k, None, mask, "forward", out=poisoned_like(k), block=block)
    assert loss is None
    assert_close("post_fft forward", out, _m4(mask) * _fftshift(k))
    out, _ = K.post_fft(None, y, mask, "adjoint", out=poisoned_like(y), block=block)
    assert_close("post_fft adjoint", out, _ifftshift(_m4(mask) * y))


@pytest.mark.parametrize("block", [1024, 64])
def test_post_fft_residual_mode(case, kernel_device, block):
    _, _, mask, y = _problem(case, kernel_device)
    k = complex_randn(*y.shape, gen=torch.Generator().manual_seed(3), device=kernel_device)
    out, loss = K.post_fft(k, y, mask, "residual", out=poisoned_like(k), block=block)
    r = _m4(mask) * (_fftshift(k) - y)
    assert_close("post_fft residual", out, _ifftshift(r))
    assert_close("post_fft residual loss", loss, r.abs().square().sum((1, 2, 3)))
    # no measurement: M K (the normal operator's middle step), no loss requested
    out, loss = K.post_fft(k, None, mask, "residual", write_loss=False, block=block)
    assert loss is None
    assert_close("post_fft residual without y", out, _ifftshift(_m4(mask) * _fftshift(k)))


@pytest.mark.parametrize("lam", [math.inf, 0.7, 0.0])
def test_post_fft_dc_mode(case, kernel_device, lam):
    _, _, mask, y = _problem(case, kernel_device)
    k = complex_randn(*y.shape, gen=torch.Generator().manual_seed(4), device=kernel_device)
    kc, m = _fftshift(k), _m4(mask)
    soft = kc if lam == 0 else (y if math.isinf(lam) else (kc + lam * y) / (1 + lam))
    want = _ifftshift((1 - m) * kc + m * soft)
    out, loss = K.post_fft(k, y, mask, "dc", lam=lam, out=poisoned_like(k), block=64)
    assert loss is None
    assert_close("post_fft dc", out, want)
    soft0 = torch.zeros_like(kc) if math.isinf(lam) else kc / (1 + lam)
    out, _ = K.post_fft(k, None, mask, "dc", lam=lam)
    assert_close("post_fft dc without y", out, _ifftshift((1 - m) * kc + m * soft0))


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
def test_post_ifft(case, kernel_device, out_dtype):
    _, smaps, _, y = _problem(case, kernel_device)
    out = torch.full((y.shape[0], 2, *y.shape[2:]), float("nan"), dtype=out_dtype, device=kernel_device)
    got = K.post_ifft(y, smaps, scale=2.5, out=out, block=64)
    zc = _fftshift(y)
    z = zc[:, 0] if smaps is None else (smaps.conj() * zc).sum(1)
    want = 2.5 * torch.stack([z.real, z.imag], 1)
    assert got.dtype == out_dtype and got.data_ptr() == out.data_ptr()
    assert_close("post_ifft", got, want)


def test_composites_match_reference(case, kernel_device):
    x, smaps, mask, y = _problem(case, kernel_device)
    assert_close("mri_forward", K.mri_forward(x, mask, smaps), R.mri_forward(x, mask, smaps))
    assert_close("mri_adjoint", K.mri_adjoint(y, mask, smaps), R.mri_adjoint(y, mask, smaps))
    assert_close("mri_normal", K.mri_normal(x, mask, smaps), R.mri_normal(x, mask, smaps))
    loss, grad = K.mri_fidelity(x, y, mask, smaps)
    loss_ref, grad_ref = R.mri_fidelity(x, y, mask, smaps)
    assert loss.shape == (x.shape[0],) and loss.dtype == torch.float32
    assert_close("mri_fidelity loss", loss, loss_ref)
    assert_close("mri_fidelity grad", grad, grad_ref)
    for lam in (math.inf, 0.3):
        assert_close("mri_dc", K.mri_dc(x, y, mask, smaps, lam), R.mri_dc(x, y, mask, smaps, lam))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images(kernel_device, dtype):
    """Half images are cast on load; k-space stays complex64; image outputs come back in x.dtype."""
    x, smaps, mask, y = _problem(CASES[0], kernel_device)
    xh = x.to(dtype)
    x32 = xh.float()
    assert_close("mri_forward", K.mri_forward(xh, mask, smaps), R.mri_forward(x32, mask, smaps))
    loss, grad = K.mri_fidelity(xh, y, mask, smaps)
    loss_ref, grad_ref = R.mri_fidelity(x32, y, mask, smaps)
    assert grad.dtype == dtype
    assert_close("loss", loss, loss_ref)
    assert_close("grad", grad, grad_ref)
    dc = K.mri_dc(xh, y, mask, smaps, 0.5)
    assert dc.dtype == dtype
    assert_close("mri_dc", dc, R.mri_dc(x32, y, mask, smaps, 0.5))
    assert_close("reference mri_dc", R.mri_dc(xh, y, mask, smaps, 0.5), R.mri_dc(x32, y, mask, smaps, 0.5))


def test_modes_table_and_out_checks(kernel_device):
    """Modes are named in one table; a given ``out`` must be contiguous with the output's shape."""
    assert sorted(K.MODES) == ["adjoint", "dc", "forward", "residual"]
    assert len(set(K.MODES.values())) == 4
    x, smaps, mask, y = _problem(CASES[0], kernel_device)
    with pytest.raises(ValueError, match="out must be a contiguous complex64"):
        K.post_fft(y, None, mask, "forward", out=torch.empty_like(y).transpose(-1, -2).contiguous())
    with pytest.raises(ValueError, match="out must be a contiguous complex64"):
        K.pre_fft(x, smaps, out=torch.empty_like(y)[:, :1])
