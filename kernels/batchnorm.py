"""Fused train-mode BatchNorm + ReLU, forward and backward, for NCHW or channels-last activations.

The U-Net's training step normalises every convolution output with its batch statistics and
applies ReLU. Unfused (cuDNN BatchNorm, then ReLU, and under bf16 autocast a float32 copy on each
side) that is 5–7 passes over each activation forward and as many backward; here it is:

* forward: ``_bn_stats_kernel`` (one read: per-channel partial sums) and ``_bn_relu_forward_kernel``
  (one read, one write: statistics from the summed partials, normalise, affine, ReLU);
* backward: ``_bn_relu_backward_reduce_kernel`` (reads x and dy: partial Σg, Σg·x̂ with the ReLU
  mask recomputed from x; their totals are dbias and dweight) and ``_bn_relu_backward_dx_kernel``
  (reads x and dy, writes dx).

Layout: ``x`` (N, C, H, W) whose spatial dims merge into one (``stride_h == W·stride_w``: true for
contiguous NCHW and channels-last) is read as rows ``r = (n, s)`` of C channels at
``n·s_n + s·s_s + c·s_c``; Triton specialises unit strides, so channels-last loads are contiguous
along C. The grid is the batch grid of :mod:`fastsd.kernels.utils` with chunks of
``rows_per_chunk`` rows as its problems and the C channels as their elements: program
(``i_k``, channel block ``o_c``) walks its chunk in blocks of ``BLOCK_R`` rows. Partial sums go to
a (chunks, 2, C) buffer that one ``torch.sum`` reduces before the next kernel (deterministic, no
atomics). Sums are shifted by the channel's first value, so a large mean does not cancel the
variance in float32. The accumulator ``ACC`` is float32 (float64 for float64 ``x``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsd._utils import accumulate_dtype
from fastsd.kernels.utils import acc_type, batch_grid, block_coords

__all__ = ["bn_relu_forward", "bn_relu_backward"]


@triton.jit
def _row_offsets(o_r, o_c, S, s_n, s_s, s_c):
    """Memory offsets (int64) of rows ``o_r`` (int64) and channels ``o_c``."""
    return ((o_r // S) * s_n + (o_r % S) * s_s)[:, None] + o_c.to(tl.int64)[None, :] * s_c


@triton.jit
def _row_block(o_r0, i, R, m_c, BLOCK_R: tl.constexpr):
    """Rows ``o_r0 + i + [0, BLOCK_R)`` and the (rows × channels) validity mask."""
    o_r = o_r0 + i + tl.arange(0, BLOCK_R)
    return o_r, (o_r < R)[:, None] & m_c[None, :]


@triton.jit
def _load_rows(p, o_r, o_c, m, S, s_n, s_s, s_c, ACC: tl.constexpr):
    return tl.load(p + _row_offsets(o_r, o_c, S, s_n, s_s, s_c), mask=m, other=0.0).to(ACC)


@triton.jit
def _load_channels(p, o_c, m_c, ACC: tl.constexpr):
    return tl.load(p + o_c, mask=m_c, other=0.0).to(ACC)


@triton.jit
def _relu_grad(b_x, b_dy, b_w, b_b, b_mean, b_rstd):
    """(x̂, g = dy · [y > 0]) with the ReLU mask recomputed from x."""
    b_xhat = (b_x - b_mean[None, :]) * b_rstd[None, :]
    return b_xhat, tl.where(b_xhat * b_w[None, :] + b_b[None, :] > 0, b_dy, 0.0)


@triton.jit
def _store_partials(part_ptr, i_k, C, o_c, m_c, b_a, b_b):
    """This program's two per-channel partial sums (column sums of the row blocks ``b_a`` and
    ``b_b``) into its chunk's row of the (chunks, 2, C) buffer."""
    p_part = part_ptr + i_k * 2 * C + o_c
    tl.store(p_part, tl.sum(b_a, axis=0), mask=m_c)
    tl.store(p_part + C, tl.sum(b_b, axis=0), mask=m_c)


@triton.jit
def _bn_stats_kernel(
    x_ptr, part_ptr,
    R, C, S, rows_per_chunk,
    sx_n, sx_s, sx_c,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    i_k, o_c, m_c = block_coords(C, BLOCK_C, False)  # problem i_k = chunk of rows
    o_r0 = i_k * rows_per_chunk
    b_shift = _load_channels(x_ptr, o_c * sx_c, m_c, ACC)
    b_sum = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    b_sq = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    for i in range(0, rows_per_chunk, BLOCK_R):
        o_r, m = _row_block(o_r0, i, R, m_c, BLOCK_R)
        b_x = tl.where(m, _load_rows(x_ptr, o_r, o_c, m, S, sx_n, sx_s, sx_c, ACC) - b_shift[None, :], 0.0)
        b_sum += b_x
        b_sq += b_x * b_x
    _store_partials(part_ptr, i_k, C, o_c, m_c, b_sum, b_sq)


@triton.jit
def _bn_relu_forward_kernel(
    x_ptr, y_ptr, w_ptr, b_ptr, tot_ptr, mean_ptr, rstd_ptr,
    R, C, S, rows_per_chunk, eps,
    sx_n, sx_s, sx_c, sy_n, sy_s, sy_c,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    i_k, o_c, m_c = block_coords(C, BLOCK_C, False)
    o_r0 = i_k * rows_per_chunk
    b_sum = _load_channels(tot_ptr, o_c, m_c, ACC)
    b_sq = _load_channels(tot_ptr + C, o_c, m_c, ACC)
    b_shift = _load_channels(x_ptr, o_c * sx_c, m_c, ACC)
    b_dmean = b_sum / R
    b_var = tl.maximum(b_sq / R - b_dmean * b_dmean, 0.0)
    b_mean = b_shift + b_dmean
    b_rstd = 1.0 / tl.sqrt(b_var + eps)
    if i_k == 0:  # the first chunk's programs publish the statistics for the backward
        tl.store(mean_ptr + o_c, b_mean, mask=m_c)
        tl.store(rstd_ptr + o_c, b_rstd, mask=m_c)
    b_scale = _load_channels(w_ptr, o_c, m_c, ACC) * b_rstd
    b_bias = _load_channels(b_ptr, o_c, m_c, ACC) - b_mean * b_scale
    for i in range(0, rows_per_chunk, BLOCK_R):
        o_r, m = _row_block(o_r0, i, R, m_c, BLOCK_R)
        b_x = _load_rows(x_ptr, o_r, o_c, m, S, sx_n, sx_s, sx_c, ACC)
        b_y = tl.maximum(b_x * b_scale[None, :] + b_bias[None, :], 0.0)
        tl.store(y_ptr + _row_offsets(o_r, o_c, S, sy_n, sy_s, sy_c), b_y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bn_relu_backward_reduce_kernel(
    x_ptr, dy_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, part_ptr,
    R, C, S, rows_per_chunk,
    sx_n, sx_s, sx_c, sd_n, sd_s, sd_c,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    i_k, o_c, m_c = block_coords(C, BLOCK_C, False)
    o_r0 = i_k * rows_per_chunk
    b_w = _load_channels(w_ptr, o_c, m_c, ACC)
    b_b = _load_channels(b_ptr, o_c, m_c, ACC)
    b_mean = _load_channels(mean_ptr, o_c, m_c, ACC)
    b_rstd = _load_channels(rstd_ptr, o_c, m_c, ACC)
    b_g = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    b_gx = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
    for i in range(0, rows_per_chunk, BLOCK_R):
        o_r, m = _row_block(o_r0, i, R, m_c, BLOCK_R)
        b_xhat, b_gi = _relu_grad(_load_rows(x_ptr, o_r, o_c, m, S, sx_n, sx_s, sx_c, ACC),
                                  _load_rows(dy_ptr, o_r, o_c, m, S, sd_n, sd_s, sd_c, ACC),
                                  b_w, b_b, b_mean, b_rstd)
        b_gi = tl.where(m, b_gi, 0.0)
        b_g += b_gi
        b_gx += b_gi * b_xhat
    _store_partials(part_ptr, i_k, C, o_c, m_c, b_g, b_gx)


@triton.jit
def _bn_relu_backward_dx_kernel(
    x_ptr, dy_ptr, dx_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, tot_ptr,
    R, C, S, rows_per_chunk,
    sx_n, sx_s, sx_c, sd_n, sd_s, sd_c, so_n, so_s, so_c,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    i_k, o_c, m_c = block_coords(C, BLOCK_C, False)
    o_r0 = i_k * rows_per_chunk
    b_kg = _load_channels(tot_ptr, o_c, m_c, ACC) / R
    b_kgx = _load_channels(tot_ptr + C, o_c, m_c, ACC) / R
    b_w = _load_channels(w_ptr, o_c, m_c, ACC)
    b_b = _load_channels(b_ptr, o_c, m_c, ACC)
    b_mean = _load_channels(mean_ptr, o_c, m_c, ACC)
    b_rstd = _load_channels(rstd_ptr, o_c, m_c, ACC)
    b_wr = b_w * b_rstd
    for i in range(0, rows_per_chunk, BLOCK_R):
        o_r, m = _row_block(o_r0, i, R, m_c, BLOCK_R)
        b_xhat, b_g = _relu_grad(_load_rows(x_ptr, o_r, o_c, m, S, sx_n, sx_s, sx_c, ACC),
                                 _load_rows(dy_ptr, o_r, o_c, m, S, sd_n, sd_s, sd_c, ACC),
                                 b_w, b_b, b_mean, b_rstd)
        b_dx = b_wr[None, :] * (b_g - b_kg[None, :] - b_xhat * b_kgx[None, :])
        tl.store(dx_ptr + _row_offsets(o_r, o_c, S, so_n, so_s, so_c), b_dx.to(dx_ptr.dtype.element_ty), mask=m)


# ---------------------------------------------------------------------------------------------
# launchers


def _rows(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``t`` (copied to contiguous if its spatial dims do not merge) and its (s_n, s_s, s_c)."""
    if t.ndim == 2:  # (N, C): one spatial position
        return t, (t.stride(0), 0, t.stride(1))
    sizes, strides = t.shape[2:], t.stride()[2:]
    if not all(strides[i] == strides[i + 1] * sizes[i + 1] for i in range(len(sizes) - 1) if sizes[i] > 1):
        t = t.contiguous()
        strides = t.stride()[2:]
    return t, (t.stride(0), strides[-1] if strides else 0, t.stride(1))


def _settings(x: torch.Tensor) -> dict:
    """Block sizes and row chunking: about four programs per multiprocessor (one in the interpreter)."""
    N, C = x.shape[:2]
    R = x.numel() // C
    block_c = min(64, triton.next_power_of_2(C))
    block_r = 32 if block_c >= 64 else 64
    n_cblocks = triton.cdiv(C, block_c)
    programs = 4 * torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4
    n_chunks = max(1, min(triton.cdiv(R, block_r), programs // n_cblocks))
    rows_per_chunk = block_r * triton.cdiv(triton.cdiv(R, n_chunks), block_r)
    n_chunks = triton.cdiv(R, rows_per_chunk)
    return dict(grid=batch_grid(n_chunks, C, block_c), n_chunks=n_chunks, sizes=(R, C, R // N, rows_per_chunk),
                meta=dict(ACC=acc_type(x), BLOCK_R=block_r, BLOCK_C=block_c, num_warps=4))


def bn_relu_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
    """``(y, mean, rstd)``: ``y = relu(weight (x − mean) rstd + bias)`` with per-channel batch
    statistics of ``x`` (N, C, ...); ``y`` has ``x``'s dtype and memory format."""
    xr, sx = _rows(x)
    y = torch.empty_like(xr)
    _, sy = _rows(y)
    acc = accumulate_dtype(x)
    C = x.shape[1]
    mean = torch.empty(C, dtype=acc, device=x.device)
    rstd = torch.empty(C, dtype=acc, device=x.device)
    if x.numel() == 0:
        return y, mean.fill_(float("nan")), rstd.fill_(float("nan"))
    st = _settings(x)
    part = torch.empty((st["n_chunks"], 2, C), dtype=acc, device=x.device)
    _bn_stats_kernel[st["grid"]](xr, part, *st["sizes"], *sx, **st["meta"])
    _bn_relu_forward_kernel[st["grid"]](xr, y, weight, bias, part.sum(0), mean, rstd, *st["sizes"], eps, *sx, *sy,
                                        **st["meta"])
    return y, mean, rstd


def bn_relu_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     mean: torch.Tensor, rstd: torch.Tensor):
    """``(dx, dweight, dbias)`` of :func:`bn_relu_forward` for upstream gradient ``dy``."""
    xr, sx = _rows(x)
    dyr, sd = _rows(dy)
    dx = torch.empty_like(xr)
    _, so = _rows(dx)
    acc = accumulate_dtype(x)
    C = x.shape[1]
    if x.numel() == 0:
        return dx, torch.zeros_like(weight), torch.zeros_like(bias)
    st = _settings(x)
    part = torch.empty((st["n_chunks"], 2, C), dtype=acc, device=x.device)
    _bn_relu_backward_reduce_kernel[st["grid"]](xr, dyr, weight, bias, mean, rstd, part, *st["sizes"], *sx, *sd,
                                                **st["meta"])
    tot = part.sum(0)  # (2, C): Σg (= dbias) and Σg·x̂ (= dweight)
    _bn_relu_backward_dx_kernel[st["grid"]](xr, dyr, dx, weight, bias, mean, rstd, tot, *st["sizes"], *sx, *sd, *so,
                                            **st["meta"])
    # separate tensors: a custom op's outputs must not alias one another
    return dx, tot[1].to(weight.dtype, copy=True), tot[0].to(bias.dtype, copy=True)
