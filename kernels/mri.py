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
  ``w = dc_weight(lam)``), ``"adjoint"`` (unshifted ``M y``, the input of A^H). An absent ``k`` or
  ``y`` reads as zero.
* :func:`post_ifft` conj-coil multiply, coil sum, output fftshift, unpack to (B,2,*S), scale.

The kernels always index a volume (D,H,W); a 2-D slice (H,W) is launched as the volume (1,H,W)
through a size-1 view, so one kernel family serves both. Inputs are read through their strides;
mask dimensions of size 1 broadcast (stride 0): a (1,H,W) mask samples whole readout lines of a
volume without being expanded. Outputs are contiguous. The grid is the 1-D batch grid of
:mod:`fastsd.kernels.utils` with one problem per image (``pre_fft``, ``post_ifft``) or per coil
image (``post_fft``) and ``D·H·W`` elements each.

Composite launchers (:func:`mri_forward`, :func:`mri_adjoint`, :func:`mri_normal`,
:func:`mri_fidelity`, :func:`mri_dc`) chain them and match :mod:`fastsd.reference.mri`.
Complex tensors enter the kernels as ``torch.view_as_real`` views (interleaved re/im, strides in
float units); the accumulator ``ACC`` (:mod:`fastsd.kernels.utils`) is float32, that of the
complex64 spectra; image inputs may be fp32/fp16/bf16 (cast on load).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fastsd._utils import dc_weight
from fastsd.kernels.utils import BLOCK, acc_type, batch_grid, block_coords, has, is_big, output, real_view

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
    "BLOCK",
]

_MODE_FORWARD: tl.constexpr = tl.constexpr(0)
_MODE_RESIDUAL: tl.constexpr = tl.constexpr(1)
_MODE_DC: tl.constexpr = tl.constexpr(2)
_MODE_ADJOINT: tl.constexpr = tl.constexpr(3)
MODES = {
    "forward": _MODE_FORWARD.value,
    "residual": _MODE_RESIDUAL.value,
    "dc": _MODE_DC.value,
    "adjoint": _MODE_ADJOINT.value,
}


@triton.jit
def _roll(i, n, INVERSE: tl.constexpr):
    """``(i + n // 2) % n`` (``(i + n - n // 2) % n`` with ``INVERSE``) for ``0 <= i < n``."""
    if INVERSE:
        s = i + (n - n // 2)
    else:
        s = i + n // 2
    return tl.where(s >= n, s - n, s)


@triton.jit
def _coords(o_j, D, H, W, INVERSE: tl.constexpr):
    """``(d, h, w)`` of the row-major offsets ``o_j`` over (D,H,W), then that index rolled by
    :func:`_roll` in every dimension: where ``ifftshift(z)[o_j]`` reads ``z`` (also the centred
    index of the unshifted index ``o_j``), or with ``INVERSE`` where ``fftshift(z)[o_j]`` reads it."""
    d = o_j // (H * W)
    h = (o_j // W) % H
    w = o_j % W
    return d, h, w, _roll(d, D, INVERSE), _roll(h, H, INVERSE), _roll(w, W, INVERSE)


@triton.jit
def _at(d, h, w, s_d, s_h, s_w):
    """Memory offsets (int64) of the spatial index ``(d, h, w)``."""
    return d.to(tl.int64) * s_d + h.to(tl.int64) * s_h + w.to(tl.int64) * s_w


@triton.jit
def _load_c(p, m, ACC: tl.constexpr):
    """Complex values (re, im) whose real parts sit at ``p`` (imaginary at ``p + 1``), as ``ACC``."""
    b_v = tl.load(p[:, None] + tl.arange(0, 2)[None, :], mask=m[:, None], other=0.0).to(ACC)
    return tl.split(b_v)


@triton.jit
def _store_c(p, b_re, b_im, m):
    tl.store(p[:, None] + tl.arange(0, 2)[None, :], tl.join(b_re, b_im), mask=m[:, None])


@triton.heuristics({"HAS_SMAPS": has("s_ptr"), "BIG": is_big})
@triton.jit
def _pre_fft_kernel(
    x_ptr, s_ptr, out_ptr,
    n_per, C, D, H, W,
    sx_b, sx_c, sx_d, sx_h, sx_w,
    ss_b, ss_c, ss_d, ss_h, ss_w,
    ACC: tl.constexpr, HAS_SMAPS: tl.constexpr, BIG: tl.constexpr, BLOCK: tl.constexpr,
):
    i_b, o_j, m_j = block_coords(n_per, BLOCK, BIG)
    _, _, _, i_d, i_h, i_w = _coords(o_j, D, H, W, False)  # out[o_j] = (S x)[ifftshift source]
    p_x = x_ptr + i_b * sx_b + _at(i_d, i_h, i_w, sx_d, sx_h, sx_w)
    b_xr = tl.load(p_x, mask=m_j, other=0.0).to(ACC)
    b_xi = tl.load(p_x + sx_c, mask=m_j, other=0.0).to(ACC)
    if HAS_SMAPS:
        p_s = s_ptr + i_b * ss_b + _at(i_d, i_h, i_w, ss_d, ss_h, ss_w)
        for i_c in range(C):
            b_sr, b_si = _load_c(p_s, m_j, ACC)
            p_out = out_ptr + ((i_b * C + i_c) * n_per + o_j) * 2
            _store_c(p_out, b_sr * b_xr - b_si * b_xi, b_sr * b_xi + b_si * b_xr, m_j)
            p_s += ss_c
    else:
        _store_c(out_ptr + (i_b * n_per + o_j) * 2, b_xr, b_xi, m_j)


@triton.heuristics({"HAS_K": has("k_ptr"), "HAS_Y": has("y_ptr"), "HAS_PART": has("part_ptr"), "BIG": is_big})
@triton.jit
def _post_fft_kernel(
    k_ptr, y_ptr, m_ptr, out_ptr, part_ptr,
    dc_w, n_per, C, D, H, W,
    sk_b, sk_c, sk_d, sk_h, sk_w,
    sy_b, sy_c, sy_d, sy_h, sy_w,
    sm_b, sm_d, sm_h, sm_w,
    MODE: tl.constexpr, ACC: tl.constexpr, HAS_K: tl.constexpr, HAS_Y: tl.constexpr, HAS_PART: tl.constexpr,
    BIG: tl.constexpr, BLOCK: tl.constexpr,
):
    i_p, o_j, m_j = block_coords(n_per, BLOCK, BIG)  # problem i_p = coil image (i_b, i_c)
    i_b = i_p // C
    i_c = i_p % C
    # unshifted spectrum index (d, h, w); centred index u: fftshift(K)[u] = K[d, h, w]
    i_d, i_h, i_w, u_d, u_h, u_w = _coords(o_j, D, H, W, False)
    b_m = tl.load(m_ptr + i_b * sm_b + _at(u_d, u_h, u_w, sm_d, sm_h, sm_w), mask=m_j, other=0.0).to(ACC)
    if HAS_K:
        b_kr, b_ki = _load_c(k_ptr + i_b * sk_b + i_c * sk_c + _at(i_d, i_h, i_w, sk_d, sk_h, sk_w), m_j, ACC)
    else:
        b_kr = tl.zeros([BLOCK], dtype=ACC)
        b_ki = tl.zeros([BLOCK], dtype=ACC)
    if HAS_Y:
        b_yr, b_yi = _load_c(y_ptr + i_b * sy_b + i_c * sy_c + _at(u_d, u_h, u_w, sy_d, sy_h, sy_w), m_j, ACC)
    else:
        b_yr = tl.zeros([BLOCK], dtype=ACC)
        b_yi = tl.zeros([BLOCK], dtype=ACC)
    o_out = o_j
    if MODE == _MODE_FORWARD:  # centred M K
        b_or = b_m * b_kr
        b_oi = b_m * b_ki
        o_out = (u_d * H + u_h) * W + u_w
    elif MODE == _MODE_RESIDUAL:  # M (K - y)
        b_or = b_m * (b_kr - b_yr)
        b_oi = b_m * (b_ki - b_yi)
    elif MODE == _MODE_DC:  # K + w M (y - K)
        b_w = dc_w * b_m
        b_or = b_kr + b_w * (b_yr - b_kr)
        b_oi = b_ki + b_w * (b_yi - b_ki)
    else:  # adjoint input: M y
        b_or = b_m * b_yr
        b_oi = b_m * b_yi
    _store_c(out_ptr + (i_p * n_per + o_out) * 2, b_or, b_oi, m_j)
    if HAS_PART:
        tl.store(part_ptr + tl.program_id(0), tl.sum(b_or * b_or + b_oi * b_oi, axis=0))


@triton.heuristics({"HAS_SMAPS": has("s_ptr"), "BIG": is_big})
@triton.jit
def _post_ifft_kernel(
    z_ptr, s_ptr, out_ptr,
    scale, n_per, C, D, H, W,
    sz_b, sz_c, sz_d, sz_h, sz_w,
    ss_b, ss_c, ss_d, ss_h, ss_w,
    ACC: tl.constexpr, HAS_SMAPS: tl.constexpr, BIG: tl.constexpr, BLOCK: tl.constexpr,
):
    i_b, o_j, m_j = block_coords(n_per, BLOCK, BIG)
    i_d, i_h, i_w, z_d, z_h, z_w = _coords(o_j, D, H, W, True)  # out[o_j] = Σ conj(S) z[fftshift source]
    p_z = z_ptr + i_b * sz_b + _at(z_d, z_h, z_w, sz_d, sz_h, sz_w)
    if HAS_SMAPS:
        p_s = s_ptr + i_b * ss_b + _at(i_d, i_h, i_w, ss_d, ss_h, ss_w)
    b_ar = tl.zeros([BLOCK], dtype=ACC)
    b_ai = tl.zeros([BLOCK], dtype=ACC)
    for _ in range(C):
        b_zr, b_zi = _load_c(p_z, m_j, ACC)
        if HAS_SMAPS:
            b_sr, b_si = _load_c(p_s, m_j, ACC)
            b_ar += b_sr * b_zr + b_si * b_zi  # conj(s) * z
            b_ai += b_sr * b_zi - b_si * b_zr
            p_s += ss_c
        else:
            b_ar += b_zr
            b_ai += b_zi
        p_z += sz_c
    p_out = out_ptr + i_b * 2 * n_per + o_j
    ty = out_ptr.dtype.element_ty
    tl.store(p_out, (scale * b_ar).to(ty), mask=m_j)
    tl.store(p_out + n_per, (scale * b_ai).to(ty), mask=m_j)


# ---------------------------------------------------------------------------------------------
# launchers: every tensor is viewed with three spatial dimensions (a slice as a 1-deep volume)


def _spatial_rank(t: torch.Tensor) -> int:
    nd = t.ndim - 2
    if nd not in (2, 3):
        raise ValueError(f"expected (B, C, H, W) or (B, C, D, H, W), got shape {tuple(t.shape)}")
    return nd


def _vol(t: torch.Tensor | None, nd: int, complex_: bool = False) -> torch.Tensor | None:
    """View with spatial dims (D,H,W): a 2-D tensor gains D = 1 before its last two dims; complex
    tensors as their real view with a trailing (re, im) dim."""
    if t is None:
        return None
    t = t if nd == 3 else t.unsqueeze(-3)
    return real_view(t) if complex_ else t


def _strides(t: torch.Tensor | None) -> tuple:
    """(s_b, s_c, s_d, s_h, s_w) of a (B,C,D,H,W[,2]) view, ``None`` ×5 if absent."""
    return (None,) * 5 if t is None else t.stride()[:5]


def _smaps(smaps: torch.Tensor | None, nd: int, B: int) -> torch.Tensor | None:
    """Coil maps as a real (B,C,D,H,W,2) view, stride 0 over the batch for shared (C,*S) maps."""
    if smaps is None:
        return None
    s = _vol(smaps[None] if smaps.ndim == nd + 1 else smaps, nd, complex_=True)
    return s.expand(B, *s.shape[1:])


def pre_fft(x: torch.Tensor, smaps: torch.Tensor | None = None, out: torch.Tensor | None = None,
            block: int = BLOCK) -> torch.Tensor:
    """``ifftshift(S * (x[:,0] + i x[:,1]))`` as complex64 (B,C,*S); C = 1 without coil maps."""
    nd = _spatial_rank(x)
    B = x.shape[0]
    s = _smaps(smaps, nd, B)
    C = 1 if s is None else s.shape[1]
    out = output(out, (B, C, *x.shape[2:]), torch.complex64, x.device)
    x5 = _vol(x, nd)
    D, H, W = x5.shape[2:]
    _pre_fft_kernel[batch_grid(B, D * H * W, block)](
        x5, s, real_view(out),
        D * H * W, C, D, H, W, *x5.stride(), *_strides(s),
        ACC=acc_type(out), BLOCK=block,
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
    ref = y if k is None else k
    nd = _spatial_rank(ref)
    B, C = ref.shape[:2]
    out = output(out, ref.shape, torch.complex64, ref.device)
    k6, y6 = _vol(k, nd, complex_=True), _vol(y, nd, complex_=True)
    D, H, W = _vol(out, nd).shape[2:]
    m4 = _vol(mask[None] if mask.ndim == nd else mask, nd).expand(B, D, H, W)  # size-1 dims: stride 0
    grid = batch_grid(B * C, D * H * W, block)
    part = None
    if mode == "residual" and write_loss:
        part = torch.empty(grid[0], dtype=torch.float32, device=ref.device)
    _post_fft_kernel[grid](
        k6, y6, m4, real_view(out), part,
        dc_weight(lam), D * H * W, C, D, H, W, *_strides(k6), *_strides(y6), *m4.stride(),
        MODE=MODES[mode], ACC=acc_type(out), BLOCK=block,
    )
    return out, (None if part is None else part.view(B, -1).sum(1))


def post_ifft(z: torch.Tensor, smaps: torch.Tensor | None = None, scale: float = 1.0,
              out: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float32,
              block: int = BLOCK) -> torch.Tensor:
    """``scale * sum_c conj(S_c) fftshift(z_c)`` unpacked to real (B,2,*S) of ``out_dtype`` (that
    of ``out`` when given)."""
    nd = _spatial_rank(z)
    B, C = z.shape[:2]
    out = output(out, (B, 2, *z.shape[2:]), out_dtype if out is None else out.dtype, z.device)
    z6, s = _vol(z, nd, complex_=True), _smaps(smaps, nd, B)
    D, H, W = z6.shape[2:5]
    _post_ifft_kernel[batch_grid(B, D * H * W, block)](
        z6, s, out,
        float(scale), D * H * W, C, D, H, W, *_strides(z6), *_strides(s),
        ACC=acc_type(z), BLOCK=block,
    )
    return out


# ---------------------------------------------------------------------------------------------
# composite operations (same signatures and semantics as fastsd.reference.mri)


def _fft(z: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Unshifted orthonormal (inverse) FFT over the spatial dims of (B,C,*S)."""
    return (torch.fft.ifftn if inverse else torch.fft.fftn)(z, dim=tuple(range(2, z.ndim)), norm="ortho")


def _image_to_image(x, y, mask, smaps, mode, scale=1.0, **kw):
    """``(loss, image)``: ``x`` through ``pre_fft``, FFT, ``post_fft`` in ``mode``, inverse FFT and
    ``post_ifft`` back to an image in the dtype of ``x``."""
    k, loss = post_fft(_fft(pre_fft(x, smaps)), y, mask, mode, **kw)
    return loss, post_ifft(_fft(k, inverse=True), smaps, scale=scale, out_dtype=x.dtype)


def mri_forward(x, mask, smaps=None):
    """A x = M fftnc(S x), centred complex64 (B,C,*S)."""
    return post_fft(_fft(pre_fft(x, smaps)), None, mask, "forward")[0]


def mri_adjoint(y, mask, smaps=None):
    """A^H y = sum_c conj(S_c) ifftnc(M y_c) as float32 (B,2,*S)."""
    return post_ifft(_fft(post_fft(None, y, mask, "adjoint")[0], inverse=True), smaps)


def mri_normal(x, mask, smaps=None):
    """A^H A x in the dtype of x."""
    return _image_to_image(x, None, mask, smaps, "residual", write_loss=False)[1]


def mri_fidelity(x, y, mask, smaps=None):
    """(loss (B,) = ||M (F S x - y)||^2, grad = 2 A^H (A x - y) in the dtype of x)."""
    return _image_to_image(x, y, mask, smaps, "residual", scale=2.0)


def mri_dc(x, y, mask, smaps=None, lam=math.inf):
    """S^H F^H ((1 - M) F S x + M (F S x + lam y) / (1 + lam)), hard replacement for lam = inf."""
    return _image_to_image(x, y, mask, smaps, "dc", lam=lam)[1]
