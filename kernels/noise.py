"""Noisy network input ``scale * (x + sigma * eps)`` with in-kernel Philox noise, CUDA-graph safe.

Seed and step are read from int64 device tensors inside the kernel, so a captured graph draws new
noise on every replay once the caller increments ``step`` in place. The output has ``N`` elements,
``n`` per problem; element ``j`` of problem ``b`` (flat index ``i = b n + j``) draws
``tl.randn(key, counter)`` (Philox4x32-10, Box-Muller) with

* a shared 0-d ``seed``: key ``seed``, counter ``step * N + i``;
* per-problem seeds of shape (B,): key ``seed[b]``, counter ``step * n + j`` — the noise of
  problem b alone with ``seed[b]``.

:mod:`fastsd.reference.noise` reproduces the stream bit for bit in the integers (up to float ulps
of log/cos in the normal values). Complex (B,H,W) inputs are packed to real (B,2,H,W) through the
strides of their ``view_as_real`` view. ``sigma`` and the optional ``scale`` tensor are 0-d or per
problem (B,). :func:`gaussian_noise` is the same kernel without ``x`` (and ``sigma``). Grid,
layout and the accumulator (``ACC``: float32, the dtype of the output and of ``tl.randn``) follow
:mod:`fastsd.kernels.utils`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsd._utils import noise_shape
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
    problem_stride,
    real_view,
    strided_offsets,
)

__all__ = ["noisy_input", "gaussian_noise", "BLOCK"]


@triton.heuristics({
    "HAS_X": has("x_ptr"),
    "HAS_SCALE": has("scale_ptr"),
    "FLAT": is_flat,
    "BIG": is_big,
})
@triton.jit
def _noisy_input_kernel(
    x_ptr, sigma_ptr, scale_ptr, seed_ptr, step_ptr, out_ptr,
    scale_value, n_per, c_step, c_b, D1, D2, D3,
    sx_b, sx_1, sx_2, sx_3, s_sigma, s_scale, s_seed,
    ACC: tl.constexpr, HAS_X: tl.constexpr, HAS_SCALE: tl.constexpr, FLAT: tl.constexpr, BIG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i_b, o_j, m_j = block_coords(n_per, BLOCK, BIG)
    seed = tl.load(seed_ptr + i_b * s_seed)
    step = tl.load(step_ptr)
    b_eps = tl.randn(seed, step * c_step + i_b * c_b + o_j.to(tl.int64))  # int64 counter: hi word used
    if HAS_X:
        b_x = tl.load(x_ptr + strided_offsets(o_j, i_b, sx_b, sx_1, sx_2, sx_3, D2, D3, FLAT), mask=m_j, other=0.0)
        sigma = tl.load(sigma_ptr + i_b * s_sigma).to(ACC)
        b_out = b_x.to(ACC) + sigma * b_eps
    else:
        b_out = b_eps
    if HAS_SCALE:
        b_out = tl.load(scale_ptr + i_b * s_scale).to(ACC) * b_out
    b_out = b_out * scale_value
    tl.store(out_ptr + i_b * n_per + o_j, b_out, mask=m_j)


def _launch(like, seed, step, out, block, x=None, sigma=None, scale=None, scale_value: float = 1.0):
    """Write ``scale_value * scale * (x + sigma * eps)`` (``eps`` alone without ``x``) in the
    packed output layout of ``like`` to ``out`` (checked, or a new float32 tensor)."""
    shape = noise_shape(like)
    out = output(out, shape, torch.float32, like.device)
    total = out.numel()
    if total == 0:
        return out
    B = shape[0]
    n_per = total // B
    if x is not None and x.is_complex():
        x = real_view(x).permute(0, 3, 1, 2)  # (B, 2, H, W), read through the strides
    (xt,), sizes, (sx,) = batch_layout(shape, x)
    c_step, c_b = (n_per, 0) if seed.ndim == 1 else (total, n_per)  # per-problem or shared seed
    _noisy_input_kernel[batch_grid(B, n_per, block)](
        xt, sigma, scale, seed, step, out,
        float(scale_value), n_per, c_step, c_b, *sizes,
        *sx, problem_stride(sigma), problem_stride(scale), problem_stride(seed),
        ACC=acc_type(out), BLOCK=block,
    )
    return out


def noisy_input(x, sigma, seed, step, scale=None, scale_value: float = 1.0, out=None, block: int = BLOCK):
    """``scale_value * scale * (x + sigma * eps)`` in float32 (complex (B,H,W) -> (B,2,H,W)).

    ``x`` real (B, ...) of any strides or complex64 (B, H, W); ``sigma``/``scale`` 0-d or (B,)
    (``scale`` may be None); ``seed`` int64 0-d or (B,); ``step`` int64 0-d; ``out`` contiguous
    float32 of the output shape."""
    return _launch(x, seed, step, out, block, x=x, sigma=sigma, scale=scale, scale_value=scale_value)


def gaussian_noise(like: torch.Tensor, seed, step, out=None, block: int = BLOCK) -> torch.Tensor:
    """The noise ``eps`` that :func:`noisy_input` adds to ``like`` (float32, packed layout)."""
    return _launch(like, seed, step, out, block)
