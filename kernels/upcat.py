"""Fused U-Net decoder join: bilinear ×2 upsampling (``align_corners=True``) of ``h``, zero padding
to the skip's size and channel concatenation ``[skip, up]``, forward and backward.

Unfused that is ``F.interpolate``, ``F.pad`` and ``torch.cat``: two temporaries written and read
again forward, their adjoints backward. Here:

* ``_upcat_kernel`` writes out (N, Cs + Ch, H, W) in one pass: channels c < Cs copy ``skip``,
  channel Cs + k is channel k of ``h`` (N, Ch, h, w) upsampled to (2h, 2w) at offset
  (top, left) = ((H − 2h) // 2, (W − 2w) // 2), zero around it (the split of ``pad_to``);
* ``_upcat_grad_h_kernel`` writes grad_h, the adjoint of upsampling and padding, as a gather: each
  element sums a window of ``TAPS × TAPS`` up-channel positions of the incoming gradient with the
  forward's interpolation weights. No atomics: the result is deterministic. grad_skip is the
  incoming gradient's first Cs channels (a view, no kernel).

Source positions, per dim (input size n, output 2n): output position o reads i0 = ⌊o (n − 1) / (2n − 1)⌋
with weight 1 − λ and i1 = min(i0 + 1, n − 1) with weight λ, λ the fractional part. Both come from
integer arithmetic (exact floor, λ from the exact remainder), so the backward knows exactly which
outputs reach input i: those whose source lies in (i − 1, i + 1), at most ``TAPS`` = 5 consecutive
ones (the interval is 4 + 2/(n − 1) long; for n ≤ 2 all 2n ≤ 4 outputs), starting at
⌊(i − 1)(2n − 1) / (n − 1)⌋ + 1. PyTorch computes the positions in float; the two agree to rounding.
Integer products stay below 2n² < 2³¹, so n is limited to 32767.

Layout: each kernel walks its output in memory order — (c, y, x) for NCHW, (y, x, c) for
channels-last (``CHANNELS_LAST``) — on the 1-D grid of :mod:`fastsd.kernels.utils` with one
problem per batch entry; every tensor is read and written through its own strides. The
accumulator ``ACC`` is float32 (float64 for float64 tensors), as everywhere in ``kernels/``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsd._utils import memory_format
from fastsd.kernels.utils import BLOCK, acc_type, batch_grid, block_coords, is_big, output

__all__ = ["upcat_forward", "upcat_backward", "BLOCK", "TAPS", "MAX_SIZE"]

TAPS = 5  # outputs along one dim that can reach one input position (module docstring)
MAX_SIZE = 2**15 - 1  # largest h or w: integer source positions stay in int32


@triton.jit
def _chw(o_j, C, H, W, CHANNELS_LAST: tl.constexpr):
    """(channel, row, column) of within-image offsets ``o_j`` in NCHW or channels-last order."""
    if CHANNELS_LAST:
        i_c = o_j % C
        t = o_j // C
        i_x = t % W
        i_y = t // W
    else:
        i_x = o_j % W
        t = o_j // W
        i_y = t % H
        i_c = t // H
    return i_c, i_y, i_x


@triton.jit
def _offsets(i_b, i_c, i_y, i_x, s_n, s_c, s_y, s_x):
    """Memory offsets (int64) of elements (i_b, i_c, i_y, i_x)."""
    return i_b * s_n + i_c.to(tl.int64) * s_c + i_y.to(tl.int64) * s_y + i_x.to(tl.int64) * s_x


@triton.jit
def _source(o, n, ACC: tl.constexpr):
    """(i0, i1, λ) of output positions ``o`` (≥ 0) along a dim upsampled from ``n`` to ``2n``."""
    num = o * (n - 1)
    den = 2 * n - 1
    i0 = num // den
    lam = (num - i0 * den).to(ACC) / den
    return i0, tl.minimum(i0 + 1, n - 1), lam


@triton.jit
def _weight(o, i, n, ACC: tl.constexpr):
    """Weight of input position ``i`` in output position ``o`` (0 for ``o`` ≥ 2n)."""
    i0, i1, lam = _source(o, n, ACC)
    w = tl.where(i0 == i, 1.0 - lam, 0.0) + tl.where(i1 == i, lam, 0.0)
    return tl.where(o < 2 * n, w, 0.0)


@triton.jit
def _first_tap(i, n):
    """First output position whose source lies above ``i − 1`` (0 for i = 0)."""
    return tl.where(i > 0, ((i - 1) * (2 * n - 1)) // tl.maximum(n - 1, 1) + 1, 0)


@triton.heuristics({"BIG": is_big})
@triton.jit
def _upcat_kernel(
    skip_ptr, h_ptr, out_ptr,
    n_per, Cs, C, H, W, Hh, Wh, top, left,
    ss_n, ss_c, ss_y, ss_x, sh_n, sh_c, sh_y, sh_x, so_n, so_c, so_y, so_x,
    ACC: tl.constexpr, CHANNELS_LAST: tl.constexpr, BIG: tl.constexpr, BLOCK: tl.constexpr,
):
    i_b, o_j, m_j = block_coords(n_per, BLOCK, BIG)
    i_c, i_y, i_x = _chw(o_j, C, H, W, CHANNELS_LAST)
    is_skip = i_c < Cs
    b_skip = tl.load(skip_ptr + _offsets(i_b, i_c, i_y, i_x, ss_n, ss_c, ss_y, ss_x), mask=m_j & is_skip, other=0.0)
    u_y = i_y - top
    u_x = i_x - left
    m_up = m_j & (i_c >= Cs) & (u_y >= 0) & (u_y < 2 * Hh) & (u_x >= 0) & (u_x < 2 * Wh)
    y0, y1, l_y = _source(tl.maximum(u_y, 0), Hh, ACC)
    x0, x1, l_x = _source(tl.maximum(u_x, 0), Wh, ACC)
    p_h = h_ptr + i_b * sh_n + (i_c - Cs).to(tl.int64) * sh_c
    o_y0, o_y1 = y0.to(tl.int64) * sh_y, y1.to(tl.int64) * sh_y
    o_x0, o_x1 = x0.to(tl.int64) * sh_x, x1.to(tl.int64) * sh_x
    b_00 = tl.load(p_h + o_y0 + o_x0, mask=m_up, other=0.0).to(ACC)
    b_01 = tl.load(p_h + o_y0 + o_x1, mask=m_up, other=0.0).to(ACC)
    b_10 = tl.load(p_h + o_y1 + o_x0, mask=m_up, other=0.0).to(ACC)
    b_11 = tl.load(p_h + o_y1 + o_x1, mask=m_up, other=0.0).to(ACC)
    b_up = (1.0 - l_y) * ((1.0 - l_x) * b_00 + l_x * b_01) + l_y * ((1.0 - l_x) * b_10 + l_x * b_11)
    b_out = tl.where(is_skip, b_skip.to(ACC), b_up)
    tl.store(out_ptr + _offsets(i_b, i_c, i_y, i_x, so_n, so_c, so_y, so_x),
             b_out.to(out_ptr.dtype.element_ty), mask=m_j)


@triton.heuristics({"BIG": is_big})
@triton.jit
def _upcat_grad_h_kernel(
    dout_ptr, dh_ptr,
    n_per, Cs, Ch, Hh, Wh, top, left,
    sd_n, sd_c, sd_y, sd_x, so_n, so_c, so_y, so_x,
    ACC: tl.constexpr, CHANNELS_LAST: tl.constexpr, BIG: tl.constexpr, BLOCK: tl.constexpr,
    TAPS: tl.constexpr,
):
    i_b, o_j, m_j = block_coords(n_per, BLOCK, BIG)
    i_c, i_y, i_x = _chw(o_j, Ch, Hh, Wh, CHANNELS_LAST)
    r_0 = _first_tap(i_y, Hh)
    c_0 = _first_tap(i_x, Wh)
    p_d = dout_ptr + i_b * sd_n + (i_c + Cs).to(tl.int64) * sd_c
    b_acc = tl.zeros([BLOCK], dtype=ACC)
    for k_r in tl.static_range(TAPS):
        r = r_0 + k_r
        w_r = _weight(r, i_y, Hh, ACC)
        o_r = (r + top).to(tl.int64) * sd_y
        for k_c in tl.static_range(TAPS):
            c = c_0 + k_c
            w = w_r * _weight(c, i_x, Wh, ACC)
            b_d = tl.load(p_d + o_r + (c + left).to(tl.int64) * sd_x, mask=m_j & (w != 0.0), other=0.0)
            b_acc += w * b_d.to(ACC)
    tl.store(dh_ptr + _offsets(i_b, i_c, i_y, i_x, so_n, so_c, so_y, so_x),
             b_acc.to(dh_ptr.dtype.element_ty), mask=m_j)


# ---------------------------------------------------------------------------------------------
# launchers


def _check_size(height: int, width: int) -> None:
    if max(height, width) > MAX_SIZE:
        raise ValueError(f"upcat kernels take h up to {MAX_SIZE} per side, got {height}x{width}")


def upcat_forward(skip: torch.Tensor, h: torch.Tensor, out: torch.Tensor | None = None,
                  block: int = BLOCK) -> torch.Tensor:
    """(N, Cs + Ch, H, W): ``skip`` (N, Cs, H, W) then ``h`` (N, Ch, h, w) upsampled ×2 and
    zero-padded to (H, W); written to ``out`` (any strides) or a new tensor in ``skip``'s format."""
    N, Cs, H, W = skip.shape
    Ch, Hh, Wh = h.shape[1:]
    _check_size(Hh, Wh)
    out = output(out, (N, Cs + Ch, H, W), skip.dtype, skip.device, memory_format(skip))
    n_per = (Cs + Ch) * H * W
    if out.numel() == 0:
        return out
    _upcat_kernel[batch_grid(N, n_per, block)](
        skip, h, out,
        n_per, Cs, Cs + Ch, H, W, Hh, Wh, (H - 2 * Hh) // 2, (W - 2 * Wh) // 2,
        *skip.stride(), *h.stride(), *out.stride(),
        ACC=acc_type(skip), CHANNELS_LAST=memory_format(out) == torch.channels_last, BLOCK=block,
    )
    return out


def upcat_backward(dout: torch.Tensor, skip_channels: int, height: int, width: int,
                   out: torch.Tensor | None = None, block: int = BLOCK) -> torch.Tensor:
    """``grad_h`` (N, Ch, height, width) of :func:`upcat_forward` for the incoming gradient
    ``dout`` (N, Cs + Ch, H, W); written to ``out`` or a new tensor in ``dout``'s format."""
    N, C, H, W = dout.shape
    Ch = C - skip_channels
    _check_size(height, width)
    out = output(out, (N, Ch, height, width), dout.dtype, dout.device, memory_format(dout))
    n_per = Ch * height * width
    if out.numel() == 0:
        return out
    _upcat_grad_h_kernel[batch_grid(N, n_per, block)](
        dout, out,
        n_per, skip_channels, Ch, height, width, (H - 2 * height) // 2, (W - 2 * width) // 2,
        *dout.stride(), *out.stride(),
        ACC=acc_type(dout), CHANNELS_LAST=memory_format(out) == torch.channels_last, BLOCK=block, TAPS=TAPS,
    )
    return out
