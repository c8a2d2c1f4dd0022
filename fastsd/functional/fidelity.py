"""Fused fidelity loss and gradient for mask-type operators, ``A = diag(m)``.

One pass over ``x``/``y``/``m`` yields the per-problem loss ``‖m x − y‖²`` (shape (B,), float32;
float64 for float64 ``x``) and the gradient ``2 m (m x − y)`` (``x``'s shape and dtype), instead
of the four tensor passes of the unfused expression plus a second trip for autograd.
``mask=None`` is the identity (denoising); :func:`residual_loss` applies the same kernel to
``z = A x`` for operators that are not masks.
"""
from __future__ import annotations

from typing import Optional

import torch

from fastsd._backend import implementation
from fastsd._checks import check_finite, check_same_device, check_tensor
from fastsd._utils import accumulate_dtype, capturing, per_problem

__all__ = ["masked_fidelity", "residual_loss"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_MASK_DTYPES = _DTYPES + (torch.bool, torch.uint8)


@torch.library.custom_op("fastsd::masked_fidelity", mutates_args=())
def _masked_fidelity_op(
    x: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    fn = implementation(x, "fidelity").masked_fidelity
    return fn(x, y, mask)


@_masked_fidelity_op.register_fake
def _(x, y, mask):
    return x.new_empty((x.shape[0],), dtype=accumulate_dtype(x)), x.new_empty(x.shape)


def _setup(ctx, inputs, output):
    x, y, mask = inputs
    ctx.save_for_backward(x, y, mask, output[1])


def _backward(ctx, g_loss, g_grad):
    """Backward of loss (through the saved gradient) and of grad = 2 m (m x − y) itself."""
    x, y, mask, grad = ctx.saved_tensors
    acc = accumulate_dtype(x)
    m = 1.0 if mask is None else mask.to(acc)
    gl = None if g_loss is None else per_problem(g_loss.to(acc), x)
    gg = None if g_grad is None else g_grad.to(acc)
    gx = gy = gm = None
    if ctx.needs_input_grad[0]:
        gx = torch.zeros_like(x, dtype=acc) if gl is None else gl * grad.to(acc)
        if gg is not None:
            gx = gx + 2.0 * m * m * gg
        gx = gx.to(x.dtype)
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        xf = x.to(acc)
        r = m * xf - y.to(acc)
        if ctx.needs_input_grad[1]:
            gy = torch.zeros_like(r) if gl is None else -2.0 * gl * r
            if gg is not None:
                gy = gy - 2.0 * m * gg
            gy = gy.to(y.dtype)
        if ctx.needs_input_grad[2]:
            gm = torch.zeros_like(r) if gl is None else 2.0 * gl * r * xf
            if gg is not None:
                gm = gm + 2.0 * gg * (r + m * xf)
            gm = gm.sum_to_size(mask.shape).to(mask.dtype)
    return gx, gy, gm


_masked_fidelity_op.register_autograd(_backward, setup_context=_setup)


def _check(x, y, mask, validate: bool) -> None:
    check_tensor("x", x, dtypes=_DTYPES)
    check_tensor("y", y, dtypes=_DTYPES)
    if x.ndim < 1:
        raise ValueError("x needs a batch dimension, got a 0-d tensor")
    if y.shape != x.shape:
        raise ValueError(f"y has shape {tuple(y.shape)}; expected x's shape {tuple(x.shape)}")
    if mask is not None:
        check_tensor("mask", mask, dtypes=_MASK_DTYPES)
        try:
            ok = mask.ndim <= x.ndim and torch.broadcast_shapes(mask.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"mask of shape {tuple(mask.shape)} cannot be broadcast to x's shape {tuple(x.shape)}")
    check_same_device(x=x, y=y, mask=mask)
    if validate and not capturing(y):
        check_finite("y", y)


def masked_fidelity(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, *, validate: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-problem ``loss_b = Σ (m x − y)²`` (shape (B,)) and ``grad = 2 m (m x − y)``.

    Args:
        x, y: real float32/float16/bfloat16/float64 tensors of equal shape (B, ...), any strides;
            dim 0 indexes problems. Arithmetic and the loss are float32 (float64 for float64 x).
        mask: ``None`` (identity) or a real/bool mask broadcastable to ``x`` (e.g. (H, W),
            (B, 1, H, W)); read with broadcast strides, never materialised.
        validate: scan ``y`` for NaN/Inf (one host sync; skipped during graph capture). Hot loops
            that validated ``y`` once pass ``validate=False``.

    Returns ``(loss, grad)``; ``grad`` is contiguous with ``x``'s dtype. Differentiable: the backward
    of ``loss`` is ``g_loss[b] * grad`` (no second pass over the operator).
    """
    _check(x, y, mask, validate)
    return _masked_fidelity_op(x, y, mask)


def residual_loss(
    z: torch.Tensor, y: torch.Tensor, *, validate: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ (z − y)², 2 (z − y))`` per problem for ``z = A x`` of a non-mask operator (blur,
    downsampling); chain the residual gradient through ``A^T`` to get the gradient in ``x``."""
    return masked_fidelity(z, y, None, validate=validate)
