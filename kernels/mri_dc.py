"""Masked-FFT MRI operator and data consistency: Triton kernels around cuFFT, 2-D and 3-D.

The centred orthonormal FFT ``fftnc(z) = fftshift(fftn(ifftshift(z)))`` over the N = 2 (slice) or
3 (volume) spatial dimensions is split into three memory-bound kernels with
``torch.fft.fftn/ifftn`` (cuFFT on GPU) in between; the shifts are index arithmetic inside the
kernels (valid for odd sizes too), so no shifted copies are materialised:

* :func:`pre_fft`   image (B,2,*S) -> ``ifftshift(S * x)`` complex (B,C,*S): complex packing,
  coil-map multiply and the input shift in one pass.
* :func:`post_fft`  reads the unshifted spectrum ``K`` and the mask / measurement at the centred
  index. Modes: ``"forward"`` (centred ``M K``), ``"residual"`` (unshifted ``M (K - y)`` plus
  per-block partial sums of ``|r|^2`` per problem), ``"dc"`` (unshifted ``K + w M (y - K)`` with
  ``w = lam / (1 + lam)``, ``w = 1`` for hard replacement), ``"adjoint"`` (unshifted ``M y``, the
  input of A^H).
* :func:`post_ifft` conj-coil multiply, coil sum, output fftshift, unpack to (B,2,*S), scale.

The kernels always index a volume (D,H,W); a 2-D slice (H,W) is launched as the volume (1,H,W)
through a size-1 view, so one kernel family serves both. Mask dimensions of size 1 broadcast
(stride 0): a (1,H,W) mask samples whole readout lines of a volume without being expanded.

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
def _split3(offs, H, W):
    """Flat index over (D,H,W) -> (d, i, j)."""
    hw = offs % (H * W)
    return offs // (H * W), hw // W, hw % W


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
    x_ptr, s_ptr, out_ptr, C, D, H, W,
    sx_b, sx_c, sx_d, sx_h, sx_w,
    ss_b, ss_c, ss_d, ss_h, ss_w,
    so_b, so_c,
    HAS_SMAPS: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < D * H * W
    d, i, j = _split3(offs, H, W)
    # out[d, i, j] = (S x)[(d + D//2) % D, (i + H//2) % H, (j + W//2) % W]   (ifftshift)
    sd = _wrap(d, D, D // 2).to(tl.int64)
    si = _wrap(i, H, H // 2).to(tl.int64)
    sj = _wrap(j, W, W // 2).to(tl.int64)
    xoff = b * sx_b + sd * sx_d + si * sx_h + sj * sx_w
    xr = tl.load(x_ptr + xoff, mask=valid, other=0.0).to(tl.float32)
    xi = tl.load(x_ptr + xoff + sx_c, mask=valid, other=0.0).to(tl.float32)
    ooff = b * so_b + offs.to(tl.int64) * 2
    if HAS_SMAPS:
        soff = b * ss_b + sd * ss_d + si * ss_h + sj * ss_w
        for c in range(C):
            sr, sim = _load_c(s_ptr, soff + c * ss_c, valid)
            _store_c(out_ptr, ooff + c * so_c, sr * xr - sim * xi, sr * xi + sim * xr, valid)
    else:
        _store_c(out_ptr, ooff, xr, xi, valid)


@triton.jit
def _post_fft_kernel(
    k_ptr, y_ptr, m_ptr, out_ptr, part_ptr, w, D, H, W,
    sk_b, sk_c, sk_d, sk_h, sk_w,
    sy_b, sy_c, sy_d, sy_h, sy_w,
    sm_b, sm_d, sm_h, sm_w,
    so_b, so_c, n_part,
    MODE: tl.constexpr, HAS_Y: tl.constexpr, WRITE_LOSS: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    c = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < D * H * W
    vd, vi, vj = _split3(offs, H, W)  # unshifted spectrum index
    # centred index: fftshift(K)[u] = K[v] with u = (v + n//2) % n in every dimension
    ud = _wrap(vd, D, D // 2).to(tl.int64)
    ui = _wrap(vi, H, H // 2).to(tl.int64)
    uj = _wrap(vj, W, W // 2).to(tl.int64)
    m = tl.load(m_ptr + b * sm_b + ud * sm_d + ui * sm_h + uj * sm_w, mask=valid, other=0.0).to(tl.float32)
    if MODE != 3:
        koff = b * sk_b + c * sk_c + vd.to(tl.int64) * sk_d + vi.to(tl.int64) * sk_h + vj.to(tl.int64) * sk_w
        kr, ki = _load_c(k_ptr, koff, valid)
    if HAS_Y:
        yr, yi = _load_c(y_ptr, b * sy_b + c * sy_c + ud * sy_d + ui * sy_h + uj * sy_w, valid)
    obase = b * so_b + c * so_c
    if MODE == 0:  # forward: centred M K
        _store_c(out_ptr, obase + ((ud * H + ui) * W + uj) * 2, m * kr, m * ki, valid)
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
        dw = w * m
        if HAS_Y:
            dr = kr + dw * (yr - kr)
            di = ki + dw * (yi - ki)
        else:
            dr = kr - dw * kr
            di = ki - dw * ki
        _store_c(out_ptr, obase + offs.to(tl.int64) * 2, dr, di, valid)
    else:  # adjoint input: unshifted M y
        _store_c(out_ptr, obase + offs.to(tl.int64) * 2, m * yr, m * yi, valid)


@triton.jit
def _post_ifft_kernel(
    z_ptr, s_ptr, out_ptr, scale, C, D, H, W,
    sz_b, sz_c, sz_d, sz_h, sz_w,
    ss_b, ss_c, ss_d, ss_h, ss_w,
    so_b, so_c,
    HAS_SMAPS: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < D * H * W
    d, i, j = _split3(offs, H, W)
    # out[i] = Z[(i - n//2) % n] = Z[(i + n - n//2) % n]   (fftshift) in every dimension
    zd = _wrap(d, D, D - D // 2).to(tl.int64)
    zi_ = _wrap(i, H, H - H // 2).to(tl.int64)
    zj_ = _wrap(j, W, W - W // 2).to(tl.int64)
    zoff = b * sz_b + zd * sz_d + zi_ * sz_h + zj_ * sz_w
    soff = b * ss_b + d.to(tl.int64) * ss_d + i.to(tl.int64) * ss_h + j.to(tl.int64) * ss_w
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
# launchers: every tensor is viewed with three spatial dimensions (a slice as a 1-deep volume)


def _vol(t: torch.Tensor | None, nd: int) -> torch.Tensor | None:
    """View with spatial dims (D,H,W): a 2-D tensor gains D = 1 before its last two dims."""
    return t if t is None or nd == 3 else t.unsqueeze(-3)


def _spatial_rank(t: torch.Tensor) -> int:
    nd = t.ndim - 2
    if nd not in (2, 3):
        raise ValueError(f"expected (B, C, H, W) or (B, C, D, H, W), got shape {tuple(t.shape)}")
    return nd


def _ri(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t.resolve_conj())


def _smaps5(smaps: torch.Tensor | None, nd: int, B: int) -> torch.Tensor | None:
    """Coil maps as (B,C,D,H,W), a stride-0 view for shared (C,*S) or batch-1 maps."""
    if smaps is None:
        return None
    s = _vol(smaps[None] if smaps.ndim == nd + 1 else smaps, nd)
    return s.expand(B, *s.shape[1:])


def _mask4(mask: torch.Tensor, nd: int, B: int, shape) -> torch.Tensor:
    """Mask as (B,D,H,W); size-1 dimensions (shared batch, broadcast readout) become stride 0."""
    m = _vol(mask[None] if mask.ndim == nd else mask, nd)
    return m.expand(B, *shape)


def _w(lam: float) -> float:
    return 1.0 if math.isinf(lam) else float(lam) / (1.0 + float(lam))


def pre_fft(x: torch.Tensor, smaps: torch.Tensor | None = None, out: torch.Tensor | None = None,
            block: int = BLOCK) -> torch.Tensor:
    """``ifftshift(S * (x[:,0] + i x[:,1]))`` as complex64 (B,C,*S); C = 1 without coil maps."""
    nd = _spatial_rank(x)
    B, S = x.shape[0], tuple(x.shape[2:])
    s5 = _smaps5(smaps, nd, B)
    C = 1 if s5 is None else s5.shape[1]
    if out is None:
        out = torch.empty((B, C, *S), dtype=torch.complex64, device=x.device)
    x5, o = _vol(x, nd), _ri(_vol(out, nd))
    s = _ri(s5) if s5 is not None else o
    D, H, W = x5.shape[2:]
    _pre_fft_kernel[(triton.cdiv(D * H * W, block), B)](
        x5, s, o, C, D, H, W,
        *x5.stride(),
        *(s.stride()[:5] if s5 is not None else (0,) * 5),
        o.stride(0), o.stride(1),
        HAS_SMAPS=s5 is not None, BLOCK=block,
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
    nd = _spatial_rank(ref)
    B, C, S = ref.shape[0], ref.shape[1], tuple(ref.shape[2:])
    if out is None:
        out = torch.empty((B, C, *S), dtype=torch.complex64, device=ref.device)
    o = _ri(_vol(out, nd))
    D, H, W = o.shape[2:5]
    m4 = _mask4(mask, nd, B, (D, H, W))
    kr = _ri(_vol(k, nd)) if k is not None else o
    yr = _ri(_vol(y, nd)) if y is not None else o
    nblk = triton.cdiv(D * H * W, block)
    write_loss = write_loss and code == 1
    part = torch.empty((B, C * nblk) if write_loss else (1,), dtype=torch.float32, device=ref.device)
    _post_fft_kernel[(nblk, C, B)](
        kr, yr, m4, o, part, _w(lam), D, H, W,
        *(kr.stride()[:5] if k is not None else (0,) * 5),
        *(yr.stride()[:5] if y is not None else (0,) * 5),
        *m4.stride(),
        o.stride(0), o.stride(1), C * nblk,
        MODE=code, HAS_Y=y is not None, WRITE_LOSS=write_loss, BLOCK=block,
    )
    return out, (part.sum(1) if write_loss else None)


def post_ifft(z: torch.Tensor, smaps: torch.Tensor | None = None, scale: float = 1.0,
              out: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float32,
              block: int = BLOCK) -> torch.Tensor:
    """``scale * sum_c conj(S_c) fftshift(z_c)`` unpacked to real (B,2,*S) of ``out_dtype``."""
    nd = _spatial_rank(z)
    B, C, S = z.shape[0], z.shape[1], tuple(z.shape[2:])
    s5 = _smaps5(smaps, nd, B)
    if out is None:
        out = torch.empty((B, 2, *S), dtype=out_dtype, device=z.device)
    zr, o = _ri(_vol(z, nd)), _vol(out, nd)
    s = _ri(s5) if s5 is not None else zr
    D, H, W = o.shape[2:]
    _post_ifft_kernel[(triton.cdiv(D * H * W, block), B)](
        zr, s, o, float(scale), C, D, H, W,
        *zr.stride()[:5],
        *(s.stride()[:5] if s5 is not None else (0,) * 5),
        o.stride(0), o.stride(1),
        HAS_SMAPS=s5 is not None, BLOCK=block,
    )
    return out


# ---------------------------------------------------------------------------------------------
# composite operations (same signatures and semantics as fastsd.reference.mri)


def _dims(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, t.ndim))


def _fft(z: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftn(z, dim=_dims(z), norm="ortho")


def _ifft(z: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifftn(z, dim=_dims(z), norm="ortho")


def mri_forward(x, mask, smaps=None):
    """A x = M fftnc(S x), centred complex64 (B,C,*S)."""
    k = _fft(pre_fft(x, smaps))
    return post_fft(k, None, mask, "forward")[0]


def mri_adjoint(y, mask, smaps=None):
    """A^H y = sum_c conj(S_c) ifftnc(M y_c) as float32 (B,2,*S)."""
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
