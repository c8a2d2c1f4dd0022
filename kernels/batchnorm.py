"""Fused train-mode BatchNorm + ReLU, forward and backward, for NCHW or channels-last activations.

The U-Net's training step normalises every convolution output with its batch statistics and
applies ReLU. Unfused (cuDNN BatchNorm, then ReLU, and under bf16 autocast a float32 copy on each
side) that is 5–7 passes over each activation forward and as many backward; here it is:

* forward: ``_stats`` (one read: per-channel partial sums) and ``_forward`` (one read, one write:
  statistics from the summed partials, normalise, affine, ReLU);
* backward: ``_backward_reduce`` (reads x and dy: partial Σg, Σg·x̂ with the ReLU mask recomputed
  from x; their totals are dbias and dweight) and ``_backward_dx`` (reads x and dy, writes dx).

Layout: ``x`` (N, C, H, W) whose spatial dims merge into one (``stride_h == W·stride_w``: true for
contiguous NCHW and channels-last) is read as rows ``r = (n, s)`` of C channels at
``n·s_n + s·s_s + c·s_c``; Triton specialises unit strides, so channels-last loads are contiguous
along C. The grid is one-dimensional: program ``pid`` takes channel block ``pid % n_cblocks`` and
row chunk ``pid // n_cblocks``. Partial sums go to a (chunks, 2, C) buffer that one ``torch.sum``
reduces before the next kernel (deterministic, no atomics). Sums are shifted by the channel's first value, so a large mean
does not cancel the variance in float32. Arithmetic is float32 (float64 for float64 ``x``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsd._utils import accumulate_dtype

__all__ = ["bn_relu_forward", "bn_relu_backward"]


@triton.jit
def _tile(pid, n_cblocks, C, rows_per_chunk, BLOCK_C: tl.constexpr):
    """(first row of this program's chunk, channel indices, channel mask)."""
    c = (pid % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    r0 = (pid // n_cblocks).to(tl.int64) * rows_per_chunk
    return r0, c, c < C


@triton.jit
def _row_offsets(r, c, S, s_n, s_s, s_c):
    """Memory offsets (int64) of rows ``r`` (int64) and channels ``c``."""
    return ((r // S) * s_n + (r % S) * s_s)[:, None] + c.to(tl.int64)[None, :] * s_c


@triton.jit
def _row_block(r0, i, R, m_c, BLOCK_R: tl.constexpr):
    """Rows ``r0 + i + [0, BLOCK_R)`` and the (rows × channels) validity mask."""
    r = r0 + i + tl.arange(0, BLOCK_R)
    return r, (r < R)[:, None] & m_c[None, :]


@triton.jit
def _load(ptr, r, c, m, S, s_n, s_s, s_c, acc_ty):
    return tl.load(ptr + _row_offsets(r, c, S, s_n, s_s, s_c), mask=m, other=0.0).to(acc_ty)


@triton.jit
def _channel_params(w_ptr, b_ptr, mean_ptr, rstd_ptr, c, m_c, acc_ty):
    """weight, bias, mean, rstd of channels ``c``."""
    w = tl.load(w_ptr + c, mask=m_c, other=0.0).to(acc_ty)
    b = tl.load(b_ptr + c, mask=m_c, other=0.0).to(acc_ty)
    return w, b, tl.load(mean_ptr + c, mask=m_c, other=0.0), tl.load(rstd_ptr + c, mask=m_c, other=0.0)


@triton.jit
def _relu_grad(v, d, w, b, mean, rstd):
    """(x̂, g = dy · [y > 0]) with the ReLU mask recomputed from x."""
    xhat = (v - mean[None, :]) * rstd[None, :]
    return xhat, tl.where(xhat * w[None, :] + b[None, :] > 0, d, 0.0)


@triton.jit
def _store_partials(part_ptr, pid, n_cblocks, C, c, m_c, a, b):
    """This program's two per-channel partial sums (column sums of the row blocks ``a`` and ``b``)
    into its chunk's row of the (chunks, 2, C) buffer."""
    p_part = part_ptr + (pid // n_cblocks) * 2 * C + c
    tl.store(p_part, tl.sum(a, axis=0), mask=m_c)
    tl.store(p_part + C, tl.sum(b, axis=0), mask=m_c)


@triton.jit
def _stats(
    x_ptr, part_ptr,
    R, C, S, rows_per_chunk, n_cblocks,
    s_n, s_s, s_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    acc_ty = part_ptr.dtype.element_ty
    pid = tl.program_id(0)
    r0, c, m_c = _tile(pid, n_cblocks, C, rows_per_chunk, BLOCK_C)
    shift = tl.load(x_ptr + c * s_c, mask=m_c, other=0.0).to(acc_ty)
    b_sum = tl.zeros([BLOCK_R, BLOCK_C], dtype=acc_ty)
    b_sq = tl.zeros([BLOCK_R, BLOCK_C], dtype=acc_ty)
    for i in range(0, rows_per_chunk, BLOCK_R):
        r, m = _row_block(r0, i, R, m_c, BLOCK_R)
        v = tl.where(m, _load(x_ptr, r, c, m, S, s_n, s_s, s_c, acc_ty) - shift[None, :], 0.0)
        b_sum += v
        b_sq += v * v
    _store_partials(part_ptr, pid, n_cblocks, C, c, m_c, b_sum, b_sq)


@triton.jit
def _forward(
    x_ptr, y_ptr, w_ptr, b_ptr, tot_ptr, mean_ptr, rstd_ptr,
    R, C, S, rows_per_chunk, n_cblocks, eps,
    sx_n, sx_s, sx_c, sy_n, sy_s, sy_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    acc_ty = tot_ptr.dtype.element_ty
    pid = tl.program_id(0)
    r0, c, m_c = _tile(pid, n_cblocks, C, rows_per_chunk, BLOCK_C)
    s_sum = tl.load(tot_ptr + c, mask=m_c, other=0.0)
    s_sq = tl.load(tot_ptr + C + c, mask=m_c, other=0.0)
    shift = tl.load(x_ptr + c * sx_c, mask=m_c, other=0.0).to(acc_ty)
    d_mean = s_sum / R
    var = tl.maximum(s_sq / R - d_mean * d_mean, 0.0)
    mean = shift + d_mean
    rstd = 1.0 / tl.sqrt(var + eps)
    if pid < n_cblocks:  # the first chunk's programs publish the statistics for the backward
        tl.store(mean_ptr + c, mean, mask=m_c)
        tl.store(rstd_ptr + c, rstd, mask=m_c)
    scale = tl.load(w_ptr + c, mask=m_c, other=0.0).to(acc_ty) * rstd
    bias = tl.load(b_ptr + c, mask=m_c, other=0.0).to(acc_ty) - mean * scale
    for i in range(0, rows_per_chunk, BLOCK_R):
        r, m = _row_block(r0, i, R, m_c, BLOCK_R)
        v = _load(x_ptr, r, c, m, S, sx_n, sx_s, sx_c, acc_ty)
        out = tl.maximum(v * scale[None, :] + bias[None, :], 0.0)
        tl.store(y_ptr + _row_offsets(r, c, S, sy_n, sy_s, sy_c), out.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _backward_reduce(
    x_ptr, dy_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, part_ptr,
    R, C, S, rows_per_chunk, n_cblocks,
    sx_n, sx_s, sx_c, sd_n, sd_s, sd_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    acc_ty = part_ptr.dtype.element_ty
    pid = tl.program_id(0)
    r0, c, m_c = _tile(pid, n_cblocks, C, rows_per_chunk, BLOCK_C)
    w, b, mean, rstd = _channel_params(w_ptr, b_ptr, mean_ptr, rstd_ptr, c, m_c, acc_ty)
    b_g = tl.zeros([BLOCK_R, BLOCK_C], dtype=acc_ty)
    b_gx = tl.zeros([BLOCK_R, BLOCK_C], dtype=acc_ty)
    for i in range(0, rows_per_chunk, BLOCK_R):
        r, m = _row_block(r0, i, R, m_c, BLOCK_R)
        xhat, g = _relu_grad(_load(x_ptr, r, c, m, S, sx_n, sx_s, sx_c, acc_ty),
                             _load(dy_ptr, r, c, m, S, sd_n, sd_s, sd_c, acc_ty), w, b, mean, rstd)
        g = tl.where(m, g, 0.0)
        b_g += g
        b_gx += g * xhat
    _store_partials(part_ptr, pid, n_cblocks, C, c, m_c, b_g, b_gx)


@triton.jit
def _backward_dx(
    x_ptr, dy_ptr, dx_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, tot_ptr,
    R, C, S, rows_per_chunk, n_cblocks,
    sx_n, sx_s, sx_c, sd_n, sd_s, sd_c, so_n, so_s, so_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    acc_ty = tot_ptr.dtype.element_ty
    pid = tl.program_id(0)
    r0, c, m_c = _tile(pid, n_cblocks, C, rows_per_chunk, BLOCK_C)
    s_g = tl.load(tot_ptr + c, mask=m_c, other=0.0)
    s_gx = tl.load(tot_ptr + C + c, mask=m_c, other=0.0)
    w, b, mean, rstd = _channel_params(w_ptr, b_ptr, mean_ptr, rstd_ptr, c, m_c, acc_ty)
    k_g = s_g / R
    k_gx = s_gx / R
    wr = w * rstd
    for i in range(0, rows_per_chunk, BLOCK_R):
        r, m = _row_block(r0, i, R, m_c, BLOCK_R)
        xhat, g = _relu_grad(_load(x_ptr, r, c, m, S, sx_n, sx_s, sx_c, acc_ty),
                             _load(dy_ptr, r, c, m, S, sd_n, sd_s, sd_c, acc_ty), w, b, mean, rstd)
        dx = wr[None, :] * (g - k_g[None, :] - xhat * k_gx[None, :])
        tl.store(dx_ptr + _row_offsets(r, c, S, so_n, so_s, so_c), dx.to(dx_ptr.dtype.element_ty), mask=m)


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
    return dict(R=R, C=C, S=R // N, rows_per_chunk=rows_per_chunk, n_cblocks=n_cblocks, n_chunks=n_chunks,
                BLOCK_R=block_r, BLOCK_C=block_c, num_warps=4)


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
    grid = (st["n_chunks"] * st["n_cblocks"],)
    _stats[grid](xr, part, st["R"], C, st["S"], st["rows_per_chunk"], st["n_cblocks"], *sx,
                 BLOCK_R=st["BLOCK_R"], BLOCK_C=st["BLOCK_C"], num_warps=st["num_warps"])
    _forward[grid](xr, y, weight, bias, part.sum(0), mean, rstd,
                   st["R"], C, st["S"], st["rows_per_chunk"], st["n_cblocks"], eps, *sx, *sy,
                   BLOCK_R=st["BLOCK_R"], BLOCK_C=st["BLOCK_C"], num_warps=st["num_warps"])
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
    grid = (st["n_chunks"] * st["n_cblocks"],)
    _backward_reduce[grid](xr, dyr, weight, bias, mean, rstd, part,
                           st["R"], C, st["S"], st["rows_per_chunk"], st["n_cblocks"], *sx, *sd,
                           BLOCK_R=st["BLOCK_R"], BLOCK_C=st["BLOCK_C"], num_warps=st["num_warps"])
    tot = part.sum(0)  # (2, C): Σg (= dbias) and Σg·x̂ (= dweight)
    _backward_dx[grid](xr, dyr, dx, weight, bias, mean, rstd, tot,
                       st["R"], C, st["S"], st["rows_per_chunk"], st["n_cblocks"], *sx, *sd, *so,
                       BLOCK_R=st["BLOCK_R"], BLOCK_C=st["BLOCK_C"], num_warps=st["num_warps"])
    # separate tensors: a custom op's outputs must not alias one another
    return dx, tot[1].to(weight.dtype, copy=True), tot[0].to(bias.dtype, copy=True)
