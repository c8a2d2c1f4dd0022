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
problem (B,).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastsd.kernels.fidelity import _block_coords, _offsets, collapse_dims, needs_int64

__all__ = ["noisy_input", "gaussian_noise", "BLOCK"]

BLOCK = 1024


@triton.jit
def _noisy_input_kernel(
    x_ptr, sigma_ptr, scale_ptr, seed_ptr, step_ptr, out_ptr,
    scale_value, n_per, c_step, c_b, D2, D3,
    sx_b, sx_1, sx_2, sx_3, s_sigma, s_scale, s_seed,
    HAS_X: tl.constexpr, HAS_SCALE: tl.constexpr, FLAT: tl.constexpr, BIG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b, offs, valid = _block_coords(n_per, BLOCK, BIG)
    seed = tl.load(seed_ptr + b * s_seed)
    step = tl.load(step_ptr)
    eps = tl.randn(seed, step * c_step + b * c_b + offs.to(tl.int64))  # int64 counter: hi word used
    if HAS_X:
        xv = tl.load(x_ptr + _offsets(offs, b, sx_b, sx_1, sx_2, sx_3, D2, D3, FLAT), mask=valid, other=0.0)
        sigma = tl.load(sigma_ptr + b * s_sigma).to(tl.float32)
        res = xv.to(tl.float32) + sigma * eps
    else:
        res = eps
    if HAS_SCALE:
        res = tl.load(scale_ptr + b * s_scale).to(tl.float32) * res
    res = res * scale_value
    tl.store(out_ptr + b * n_per + offs, res, mask=valid)


def _output_shape(x: torch.Tensor) -> tuple[int, ...]:
    """Output shape of the noisy input: complex (B,H,W) -> real (B,2,H,W); real unchanged."""
    if x.is_complex():
        b, h, w = x.shape
        return (b, 2, h, w)
    return tuple(x.shape)


def _layout(x: torch.Tensor):
    """(real tensor, (D1, D2, D3), inner strides) of ``x`` read in the packed output layout."""
    if x.is_complex():
        _, h, w = x.shape
        xr = torch.view_as_real(x.resolve_conj())  # (B, H, W, 2), strides in real units
        d, (st,) = collapse_dims((2, h, w), (xr.stride(3), xr.stride(1), xr.stride(2)))
        return xr, d, st
    layout = collapse_dims(x.shape[1:], x.stride()[1:])
    if layout is None:  # more than three unmergeable inner dims
        x = x.contiguous()
        layout = collapse_dims(x.shape[1:], x.stride()[1:])
    d, (st,) = layout
    return x, d, st


def _stride0(t) -> int:
    return t.stride(0) if t is not None and t.ndim else 0


def _launch(x, sigma, seed, step, scale, scale_value, out, has_x, block):
    shape = _output_shape(x)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=x.device)
    elif tuple(out.shape) != shape or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of shape {shape}")
    total = out.numel()
    if total == 0:
        return out
    B = shape[0]
    n_per = total // B
    if has_x:
        xt, (D1, D2, D3), st = _layout(x)
    else:  # gaussian_noise reads no input: out stands in as an unused pointer
        xt, (D1, D2, D3), st = out, (1, 1, n_per), (0, 0, 1)
    per_problem_seed = seed.ndim == 1
    c_step, c_b = (n_per, 0) if per_problem_seed else (total, n_per)
    _noisy_input_kernel[(B * triton.cdiv(n_per, block),)](
        xt, sigma if has_x else out, scale if scale is not None else out, seed, step, out,
        float(scale_value), n_per, c_step, c_b, D2, D3,
        xt.stride(0), *st, _stride0(sigma) if has_x else 0, _stride0(scale), _stride0(seed),
        HAS_X=has_x, HAS_SCALE=scale is not None, FLAT=(D1 == 1 and D2 == 1), BIG=needs_int64(n_per, block),
        BLOCK=block,
    )
    return out


def noisy_input(x, sigma, seed, step, scale=None, scale_value: float = 1.0, out=None, block: int = BLOCK):
    """``scale_value * scale * (x + sigma * eps)`` in float32 (complex (B,H,W) -> (B,2,H,W)).

    ``x`` real (B, ...) of any strides or complex64 (B, H, W); ``sigma``/``scale`` 0-d or (B,)
    (``scale`` may be None); ``seed`` int64 0-d or (B,); ``step`` int64 0-d; ``out`` contiguous
    float32 of the output shape."""
    return _launch(x, sigma, seed, step, scale, scale_value, out, True, block)


def gaussian_noise(like: torch.Tensor, seed, step, out=None, block: int = BLOCK) -> torch.Tensor:
    """The noise ``eps`` that :func:`noisy_input` adds to ``like`` (float32, packed layout)."""
    return _launch(like, None, seed, step, None, 1.0, out, False, block)
