"""Fused fidelity loss + gradient for mask operators ``A = diag(m)`` in one pass.

Each program reads a block of ``x``, ``y`` and (optionally) the mask of one problem, forms the
residual ``r = m x − y``, writes the gradient ``2 m r`` (in ``x``'s dtype) and stores the block's
partial ``Σ r²``; the partials are summed with ``torch.sum`` (deterministic, no atomics).
Broadcast masks are read through stride-0 dimensions, never materialised. Arithmetic runs in the
dtype of the partial-sum buffer: float32, or float64 for float64 ``x``.

:func:`collapse_dims` is the layout helper shared with :mod:`fastsd.kernels.noise`: it merges the
non-batch dimensions of several same-shaped strided tensors into at most three, so one kernel
handles any rank and the common contiguous case becomes a flat (division-free) loop.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["masked_fidelity", "collapse_dims", "BLOCK"]

BLOCK = 1024
_INT32_MAX = 2**31 - 1


def collapse_dims(shape, *strides):
    """Merge the inner (non-batch) dims of tensors sharing ``shape`` (given by their ``strides``).

    Returns ``((D1, D2, D3), [(s1, s2, s3), ...])`` or ``None`` when more than three dims remain.
    Size-1 dims are dropped; neighbours merge when every tensor is contiguous across them.
    """
    dims = [(n, [s[i] for s in strides]) for i, n in enumerate(shape) if n != 1]
    merged: list = []
    for n, st in dims:
        if merged:
            pn, pst = merged[-1]
            if all(p == c * n for p, c in zip(pst, st)):
                merged[-1] = (pn * n, st)
                continue
        merged.append((n, st))
    if len(merged) > 3:
        return None
    merged = [(1, [0] * len(strides))] * (3 - len(merged)) + merged
    sizes = tuple(n for n, _ in merged)
    return sizes, [tuple(st[k] for _, st in merged) for k in range(len(strides))]


def needs_int64(n_per: int, block: int) -> bool:
    """Whether within-problem indices of a grid over ``n_per`` elements can pass int32."""
    return n_per + block > _INT32_MAX


@triton.jit
def _block_coords(n_per, BLOCK: tl.constexpr, BIG: tl.constexpr):
    """(problem index b as int64, within-problem indices, validity mask) of this program.

    The grid is one-dimensional (problems × blocks), so neither the batch nor the image size is
    bounded by CUDA's 65535 limit on the second grid axis."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(n_per, BLOCK)
    b = (pid // n_blocks).to(tl.int64)
    blk = pid % n_blocks
    if BIG:
        offs = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    else:
        offs = blk * BLOCK + tl.arange(0, BLOCK)
    return b, offs, offs < n_per


@triton.jit
def _offsets(offs, b, s_b, s1, s2, s3, D2, D3, FLAT: tl.constexpr):
    """Memory offsets (int64) of the within-problem row-major indices ``offs`` of problem ``b``."""
    if FLAT:
        off = b * s_b + offs.to(tl.int64) * s3
    else:
        i3 = (offs % D3).to(tl.int64)
        t = offs // D3
        i2 = (t % D2).to(tl.int64)
        i1 = (t // D2).to(tl.int64)
        off = b * s_b + i1 * s1 + i2 * s2 + i3 * s3
    return off


@triton.jit
def _masked_fidelity_kernel(
    x_ptr, y_ptr, m_ptr, g_ptr, part_ptr, n_per, D2, D3,
    sx_b, sx_1, sx_2, sx_3,
    sy_b, sy_1, sy_2, sy_3,
    sm_b, sm_1, sm_2, sm_3,
    HAS_MASK: tl.constexpr, FLAT: tl.constexpr, BIG: tl.constexpr, BLOCK: tl.constexpr,
):
    acc_ty = part_ptr.dtype.element_ty
    b, offs, valid = _block_coords(n_per, BLOCK, BIG)  # masked lanes load 0, so r = 0 there
    xv = tl.load(x_ptr + _offsets(offs, b, sx_b, sx_1, sx_2, sx_3, D2, D3, FLAT), mask=valid, other=0.0)
    yv = tl.load(y_ptr + _offsets(offs, b, sy_b, sy_1, sy_2, sy_3, D2, D3, FLAT), mask=valid, other=0.0)
    xv = xv.to(acc_ty)
    yv = yv.to(acc_ty)
    if HAS_MASK:
        m = tl.load(m_ptr + _offsets(offs, b, sm_b, sm_1, sm_2, sm_3, D2, D3, FLAT), mask=valid, other=0)
        m = m.to(acc_ty)
        r = m * xv - yv
        g = 2.0 * m * r
    else:
        r = xv - yv
        g = 2.0 * r
    tl.store(g_ptr + b * n_per + offs, g.to(g_ptr.dtype.element_ty), mask=valid)
    tl.store(part_ptr + tl.program_id(0), tl.sum(r * r, axis=0))


def masked_fidelity(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, out=None, block: int = BLOCK):
    """``(loss, grad)`` with ``loss_b = Σ (m x − y)²`` ((B,), float32; float64 for float64 ``x``)
    and ``grad = 2 m (m x − y)``.

    ``x``/``y`` real of equal shape (B, ...), any strides; ``mask`` broadcastable to ``x`` or
    ``None``; ``grad`` is written to ``out`` (contiguous, ``x``'s shape and dtype) or a new tensor.
    """
    B = x.shape[0]
    n_per = x.numel() // B if B else 0
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    elif out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {x.dtype} tensor of shape {tuple(x.shape)}")
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if B == 0 or n_per == 0:
        return torch.zeros(B, dtype=acc, device=x.device), out
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = mask.view(torch.uint8)
        mask = mask.expand(x.shape)
    tensors = [x, y] + ([mask] if mask is not None else [])
    layout = collapse_dims(x.shape[1:], *(t.stride()[1:] for t in tensors))
    if layout is None:  # exotic strides with > 3 unmergeable dims: copy to contiguous
        tensors = [t.contiguous() for t in tensors]
        layout = collapse_dims(x.shape[1:], *(t.stride()[1:] for t in tensors))
    (D1, D2, D3), strides = layout
    xt, yt = tensors[0], tensors[1]
    mt = tensors[2] if mask is not None else xt  # placeholder pointer, never read without a mask
    m_strides = (mt.stride(0), *strides[2]) if mask is not None else (0, 0, 0, 0)
    n_blocks = triton.cdiv(n_per, block)
    part = torch.empty((B, n_blocks), dtype=acc, device=x.device)
    _masked_fidelity_kernel[(B * n_blocks,)](
        xt, yt, mt, out, part, n_per, D2, D3,
        xt.stride(0), *strides[0], yt.stride(0), *strides[1], *m_strides,
        HAS_MASK=mask is not None, FLAT=(D1 == 1 and D2 == 1), BIG=needs_int64(n_per, block), BLOCK=block,
    )
    return part.sum(1), out
