"""Masked-FFT MRI operator and data consistency: Triton kernels around cuFFT.

The centred orthonormal FFT ``fft2c(z) = fftshift(fft2(ifftshift(z)))`` is split into three
memory-bound kernels with ``torch.fft.fft2/ifft2`` (cuFFT on GPU) in between; the shifts are index
arithmetic inside the kernels (valid for odd sizes too), so no shifted copies are materialised:

* :func:`pre_fft`   image (B,2,H,W) -> ``ifftshift(S * x)`` complex (B,C,H,W): complex packing,
  coil-map multiply and the input shift in one pass.
* :func:`post_fft`  reads the unshifted spectrum ``K`` and the mask / measurement at the centred
  index. Modes: ``"forward"`` (centred ``M K``), ``"residual"`` (unshifted ``M (K - y)`` plus
  per-block partial sums of ``|r|^2`` per problem), ``"dc"`` (unshifted ``K + w M (y - K)`` with
  ``w = lam / (1 + lam)``, ``w = 1`` for hard replacement), ``"adjoint"`` (unshifted ``M y``, the
  input of A^H).
* :func:`post_ifft` conj-coil multiply, coil sum, output fftshift, unpack to (B,2,H,W), scale.

Composite launchers (:func:`mri_forward`, :func:`mri_adjoint`, :func:`mri_normal`,
:func:`mri_fidelity`, :func:`mri_dc`) chain them and match :mod:`fastsd.reference.mri`.
Complex tensors enter the kernels as ``torch.view_as_real`` views (interleaved re/im, strides in
float units); all arithmetic is fp32; image inputs may be fp32/fp16/bf16 (cast on load).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

__all__ = [
    "pre_fft",
    "post_fft",
    "post_ifft",
    "mri_forward",
    "mri_adjoint",
    "mri_normal",
    "mri_fidelity",
    "mri_dc",
    "MODES",
]

BLOCK = 1024
MODES = {"forward": 0, "residual": 1, "dc": 2, "adjoint": 3}


@triton.jit
def _wrap(i, n, shift):
    """(i + shift) mod n for 0 <= i < n and 0 <= shift < n."""
    s = i + shift
    return tl.where(s >= n, s - n, s)


@triton.jit
def _load_c(ptr, off, valid):
    """Load complex values whose real parts sit at ``ptr + off`` (imaginary at +1)."""
    two = tl.arange(0, 2)
    v = tl.load(ptr + off[:, None] + two[None, :], mask=valid[:, None], other=0.0).to(tl.float32)
    return tl.split(v)


@triton.jit
def _store_c(ptr, off, re, im, valid):
    two = tl.arange(0, 2)
    tl.store(ptr + off[:, None] + two[None, :], tl.join(re, im), mask=valid[:, None])


@triton.jit
def _pre_fft_kernel(
    x_ptr, s_ptr, out_ptr, C, H, W,
    sx_b, sx_c, sx_h, sx_w,
    ss_b, ss_c, ss_h, ss_w,
    so_b, so_c,
    HAS_SMAPS: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < H * W
    i = offs // W
    j = offs % W
    # out[i, j] = (S x)[(i + H//2) % H, (j + W//2) % W]   (ifftshift)
    si = _wrap(i, H, H // 2).to(tl.int64)
    sj = _wrap(j, W, W // 2).to(tl.int64)
    xoff = b * sx_b + si * sx_h + sj * sx_w
    xr = tl.load(x_ptr + xoff, mask=valid, other=0.0).to(tl.float32)
    xi = tl.load(x_ptr + xoff + sx_c, mask=valid, other=0.0).to(tl.float32)
    ooff = b * so_b + offs.to(tl.int64) * 2
    if HAS_SMAPS:
        soff = b * ss_b + si * ss_h + sj * ss_w
        for c in range(C):
            sr, sim = _load_c(s_ptr, soff + c * ss_c, valid)
            _store_c(out_ptr, ooff + c * so_c, sr * xr - sim * xi, sr * xi + sim * xr, valid)
    else:
        _store_c(out_ptr, ooff, xr, xi, valid)


@triton.jit
def _post_fft_kernel(
    k_ptr, y_ptr, m_ptr, out_ptr, part_ptr, w, H, W,
    sk_b, sk_c, sk_h, sk_w,
    sy_b, sy_c, sy_h, sy_w,
    sm_b, sm_h, sm_w,
    so_b, so_c, n_part,
    MODE: tl.constexpr, HAS_Y: tl.constexpr, WRITE_LOSS: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    c = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < H * W
    vi = offs // W  # unshifted spectrum index
    vj = offs % W
    # centred index: fftshift(K)[u] = K[v] with u = (v + H//2) % H
    ui = _wrap(vi, H, H // 2).to(tl.int64)
    uj = _wrap(vj, W, W // 2).to(tl.int64)
    m = tl.load(m_ptr + b * sm_b + ui * sm_h + uj * sm_w, mask=valid, other=0.0).to(tl.float32)
    if MODE != 3:
        koff = b * sk_b + c * sk_c + vi.to(tl.int64) * sk_h + vj.to(tl.int64) * sk_w
        kr, ki = _load_c(k_ptr, koff, valid)
    if HAS_Y:
        yr, yi = _load_c(y_ptr, b * sy_b + c * sy_c + ui * sy_h + uj * sy_w, valid)
    obase = b * so_b + c * so_c
    if MODE == 0:  # forward: centred M K
        _store_c(out_ptr, obase + (ui * W + uj) * 2, m * kr, m * ki, valid)
    elif MODE == 1:  # residual: unshifted M (K - y)
        if HAS_Y:
            rr = m * (kr - yr)
            ri = m * (ki - yi)
        else:
            rr = m * kr
            ri = m * ki
        _store_c(out_ptr, obase + offs.to(tl.int64) * 2, rr, ri, valid)
        if WRITE_LOSS:
            part = tl.sum(rr * rr + ri * ri, axis=0)
            tl.store(part_ptr + b * n_part + c * tl.num_programs(0) + pid, part)
    elif MODE == 2:  # data consistency: K + w M (y - K)
        d = w * m
        if HAS_Y:
            dr = kr + d * (yr - kr)
            di = ki + d * (yi - ki)
        else:
            dr = kr - d * kr
            di = ki - d * ki
        _store_c(out_ptr, obase + offs.to(tl.int64) * 2, dr, di, valid)
    else:  # adjoint input: unshifted M y
        _store_c(out_ptr, obase + offs.to(tl.int64) * 2, m * yr, m * yi, valid)


@triton.jit
def _post_ifft_kernel(
    z_ptr, s_ptr, out_ptr, scale, C, H, W,
    sz_b, sz_c, sz_h, sz_w,
    ss_b, ss_c, ss_h, ss_w,
    so_b, so_c,
    HAS_SMAPS: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < H * W
    i = offs // W
    j = offs % W
    # out[i] = Z[(i - H//2) % H] = Z[(i + H - H//2) % H]   (fftshift)
    zi_ = _wrap(i, H, H - H // 2).to(tl.int64)
    zj_ = _wrap(j, W, W - W // 2).to(tl.int64)
    zoff = b * sz_b + zi_ * sz_h + zj_ * sz_w
    soff = b * ss_b + i.to(tl.int64) * ss_h + j.to(tl.int64) * ss_w
    acc_r = tl.zeros([BLOCK], dtype=tl.float32)
    acc_i = tl.zeros([BLOCK], dtype=tl.float32)
    for c in range(C):
        zr, zim = _load_c(z_ptr, zoff + c * sz_c, valid)
        if HAS_SMAPS:
            sr, sim = _load_c(s_ptr, soff + c * ss_c, valid)
            acc_r += sr * zr + sim * zim  # conj(s) * z
            acc_i += sr * zim - sim * zr
        else:
            acc_r += zr
            acc_i += zim
    ooff = b * so_b + offs.to(tl.int64)
    ty = out_ptr.dtype.element_ty
    tl.store(out_ptr + ooff, (scale * acc_r).to(ty), mask=valid)
    tl.store(out_ptr + ooff + so_c, (scale * acc_i).to(ty), mask=valid)


# ---------------------------------------------------------------------------------------------
# launchers


def _ri(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t.resolve_conj())


def _smaps4(smaps: torch.Tensor | None, B: int) -> torch.Tensor | None:
    """Coil maps as (B,C,H,W), a stride-0 view for shared (C,H,W) or batch-1 maps."""
    if smaps is None:
        return None
    if smaps.ndim == 3:
        smaps = smaps[None]
    return smaps.expand(B, *smaps.shape[1:])


def _mask3(mask: torch.Tensor, B: int) -> torch.Tensor:
    if mask.ndim == 2:
        mask = mask[None]
    return mask.expand(B, *mask.shape[1:])


def _w(lam: float) -> float:
    return 1.0 if math.isinf(lam) else float(lam) / (1.0 + float(lam))


def pre_fft(x: torch.Tensor, smaps: torch.Tensor | None = None, out: torch.Tensor | None = None,
            block: int = BLOCK) -> torch.Tensor:
    """``ifftshift(S * (x[:,0] + i x[:,1]))`` as complex64 (B,C,H,W); C = 1 without coil maps."""
    B, _, H, W = x.shape
    s4 = _smaps4(smaps, B)
    C = 1 if s4 is None else s4.shape[1]
    if out is None:
        out = torch.empty((B, C, H, W), dtype=torch.complex64, device=x.device)
    o = _ri(out)
    s = _ri(s4) if s4 is not None else o
    _pre_fft_kernel[(triton.cdiv(H * W, block), B)](
        x, s, o, C, H, W,
        *x.stride(),
        *(s.stride()[:4] if s4 is not None else (0, 0, 0, 0)),
        o.stride(0), o.stride(1),
        HAS_SMAPS=s4 is not None, BLOCK=block,
    )
    return out


def post_fft(k: torch.Tensor | None, y: torch.Tensor | None, mask: torch.Tensor, mode: str,
             lam: float = math.inf, out: torch.Tensor | None = None, write_loss: bool = True,
             block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mask / residual / data-consistency step on an unshifted spectrum (see module doc).

    ``k`` is the unshifted spectrum (unused in ``"adjoint"`` mode), ``y`` the centred measurement
    (optional in ``"residual"`` and ``"dc"`` modes: treated as zero). Returns ``(out, loss)`` where
    ``loss`` (B,) float32 is ``sum |r|^2`` in ``"residual"`` mode with ``write_loss``, else ``None``.
    """
    code = MODES[mode]
    ref = y if k is None else k
    B, C, H, W = ref.shape
    m3 = _mask3(mask, B)
    if out is None:
        out = torch.empty((B, C, H, W), dtype=torch.complex64, device=ref.device)
    o = _ri(out)
    kr = _ri(k) if k is not None else o
    yr = _ri(y) if y is not None else o
    nblk = triton.cdiv(H * W, block)
    write_loss = write_loss and code == 1
    part = torch.empty((B, C * nblk) if write_loss else (1,), dtype=torch.float32, device=ref.device)
    _post_fft_kernel[(nblk, C, B)](
        kr, yr, m3, o, part, _w(lam), H, W,
        *(kr.stride()[:4] if k is not None else (0, 0, 0, 0)),
        *(yr.stride()[:4] if y is not None else (0, 0, 0, 0)),
        *m3.stride(),
        o.stride(0), o.stride(1), C * nblk,
        MODE=code, HAS_Y=y is not None, WRITE_LOSS=write_loss, BLOCK=block,
    )
    return out, (part.sum(1) if write_loss else None)


def post_ifft(z: torch.Tensor, smaps: torch.Tensor | None = None, scale: float = 1.0,
              out: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float32,
              block: int = BLOCK) -> torch.Tensor:
    """``scale * sum_c conj(S_c) fftshift(z_c)`` unpacked to real (B,2,H,W) of ``out_dtype``."""
    B, C, H, W = z.shape
    s4 = _smaps4(smaps, B)
    if out is None:
        out = torch.empty((B, 2, H, W), dtype=out_dtype, device=z.device)
    zr = _ri(z)
    s = _ri(s4) if s4 is not None else zr
    _post_ifft_kernel[(triton.cdiv(H * W, block), B)](
        zr, s, out, float(scale), C, H, W,
        *zr.stride()[:4],
        *(s.stride()[:4] if s4 is not None else (0, 0, 0, 0)),
        out.stride(0), out.stride(1),
        HAS_SMAPS=s4 is not None, BLOCK=block,
    )
    return out


# ---------------------------------------------------------------------------------------------
# composite operations (same signatures and semantics as fastsd.reference.mri)


def _fft(z: torch.Tensor) -> torch.Tensor:
    return torch.fft.fft2(z, norm="ortho")


def _ifft(z: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft2(z, norm="ortho")


def mri_forward(x, mask, smaps=None):
    """A x = M fft2c(S x), centred complex64 (B,C,H,W)."""
    k = _fft(pre_fft(x, smaps))
    return post_fft(k, None, mask, "forward")[0]


def mri_adjoint(y, mask, smaps=None):
    """A^H y = sum_c conj(S_c) ifft2c(M y_c) as float32 (B,2,H,W)."""
    r = post_fft(None, y, mask, "adjoint")[0]
    return post_ifft(_ifft(r), smaps)


def mri_normal(x, mask, smaps=None):
    """A^H A x in the dtype of x."""
    k = _fft(pre_fft(x, smaps))
    r = post_fft(k, None, mask, "residual", write_loss=False)[0]
    return post_ifft(_ifft(r), smaps, out_dtype=x.dtype)


def mri_fidelity(x, y, mask, smaps=None):
    """(loss (B,) = ||M (F S x - y)||^2, grad = 2 A^H (A x - y) in the dtype of x)."""
    k = _fft(pre_fft(x, smaps))
    r, loss = post_fft(k, y, mask, "residual")
    return loss, post_ifft(_ifft(r), smaps, scale=2.0, out_dtype=x.dtype)


def mri_dc(x, y, mask, smaps=None, lam=math.inf):
    """S^H F^H ((1 - M) F S x + M (F S x + lam y) / (1 + lam)), hard replacement for lam = inf."""
    k = _fft(pre_fft(x, smaps))
    d = post_fft(k, y, mask, "dc", lam=lam)[0]
    return post_ifft(_ifft(d), smaps, out_dtype=x.dtype)
