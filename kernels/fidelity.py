"""Fused fidelity loss + gradient for mask operators ``A = diag(m)`` in one pass.

Each program reads a block of ``x``, ``y`` and (optionally) the mask of one problem, forms the
residual ``r = m x − y``, writes the gradient ``2 m r`` (in ``x``'s dtype) and stores the block's
partial ``Σ r²``; the partials are summed with ``torch.sum`` (deterministic, no atomics).
Broadcast masks are read through stride-0 dimensions, never materialised. Grid, layout and the
accumulator (``ACC``: float32, or float64 for float64 ``x``) follow :mod:`fastsd.kernels.utils`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsd._utils import accumulate_dtype
from fastsd.kernels.utils import (
    BLOCK,
    acc_type,
    batch_grid,
    batch_layout,
    block_coords,
    has,
    is_big,
    is_flat,
    output,
    strided_offsets,
)

__all__ = ["masked_fidelity", "BLOCK"]


@triton.heuristics({"HAS_MASK": has("m_ptr"), "FLAT": is_flat, "BIG": is_big})
@triton.jit
def _masked_fidelity_kernel(
    x_ptr, y_ptr, m_ptr, g_ptr, part_ptr,
    n_per, D1, D2, D3,
    sx_b, sx_1, sx_2, sx_3,
    sy_b, sy_1, sy_2, sy_3,
    sm_b, sm_1, sm_2, sm_3,
    ACC: tl.constexpr, HAS_MASK: tl.constexpr, FLAT: tl.constexpr, BIG: tl.constexpr, BLOCK: tl.constexpr,
):
    i_b, o_j, m_j = block_coords(n_per, BLOCK, BIG)  # masked lanes load 0, so r = 0 there
    b_x = tl.load(x_ptr + strided_offsets(o_j, i_b, sx_b, sx_1, sx_2, sx_3, D2, D3, FLAT), mask=m_j, other=0.0)
    b_y = tl.load(y_ptr + strided_offsets(o_j, i_b, sy_b, sy_1, sy_2, sy_3, D2, D3, FLAT), mask=m_j, other=0.0)
    b_x = b_x.to(ACC)
    b_y = b_y.to(ACC)
    if HAS_MASK:
        b_m = tl.load(m_ptr + strided_offsets(o_j, i_b, sm_b, sm_1, sm_2, sm_3, D2, D3, FLAT), mask=m_j, other=0)
        b_m = b_m.to(ACC)
        b_r = b_m * b_x - b_y
        b_g = 2.0 * b_m * b_r
    else:
        b_r = b_x - b_y
        b_g = 2.0 * b_r
    tl.store(g_ptr + i_b * n_per + o_j, b_g.to(g_ptr.dtype.element_ty), mask=m_j)
    tl.store(part_ptr + tl.program_id(0), tl.sum(b_r * b_r, axis=0))


def masked_fidelity(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, out=None, block: int = BLOCK):
    """``(loss, grad)`` with ``loss_b = Σ (m x − y)²`` ((B,), float32; float64 for float64 ``x``)
    and ``grad = 2 m (m x − y)``.

    ``x``/``y`` real of equal shape (B, ...), any strides; ``mask`` broadcastable to ``x`` or
    ``None``; ``grad`` is written to ``out`` (contiguous, ``x``'s shape and dtype) or a new tensor.
    """
    B = x.shape[0]
    n_per = x.numel() // B if B else 0
    out = output(out, x.shape, x.dtype, x.device)
    acc = accumulate_dtype(x)
    if B == 0 or n_per == 0:
        return torch.zeros(B, dtype=acc, device=x.device), out
    if mask is not None:
        mask = (mask.view(torch.uint8) if mask.dtype == torch.bool else mask).expand(x.shape)
    (xt, yt, mt), sizes, (sx, sy, sm) = batch_layout(x.shape, x, y, mask)
    grid = batch_grid(B, n_per, block)
    part = torch.empty(grid[0], dtype=acc, device=x.device)
    _masked_fidelity_kernel[grid](
        xt, yt, mt, out, part, n_per, *sizes, *sx, *sy, *sm, ACC=acc_type(x), BLOCK=block,
    )
    return part.view(B, -1).sum(1), out
