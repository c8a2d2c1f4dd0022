"""Fused train-mode BatchNorm + ReLU as a differentiable custom op (``fastsd::bn_relu``).

Every block of the paper's U-Net is (conv, BatchNorm with batch statistics, ReLU) twice; in the
training step the normalisation and the activation are pure memory traffic. One op computes
``relu(w (x − μ) / sqrt(σ² + eps) + b)`` with per-channel batch statistics in float32 (float64
for float64 ``x``) whatever ``x``'s dtype — bf16 activations under autocast keep float32
statistics without float32 copies — and its backward recomputes the ReLU mask from ``x`` instead
of storing ``y``. CUDA tensors run :mod:`fastsd.kernels.batchnorm`, everything else the reference
:mod:`fastsd.reference.batchnorm`. Statistics are taken over every dim but 1, as
``F.batch_norm(training=True)`` does; running statistics are the caller's business
(:class:`fastsd.nets.fused.BatchNormReLU`).
"""
from __future__ import annotations

import torch

from fastsd._backend import implementation
from fastsd._checks import FLOAT_DTYPES, check_same_device, check_tensor
from fastsd._utils import accumulate_dtype

__all__ = ["bn_relu"]


@torch.library.custom_op("fastsd::bn_relu", mutates_args=())
def _bn_relu_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return implementation(x, "batchnorm").bn_relu_forward(x, weight, bias, eps)


@_bn_relu_op.register_fake
def _(x, weight, bias, eps):
    stat = x.new_empty((x.shape[1],), dtype=accumulate_dtype(x))
    return torch.empty_like(x), stat, torch.empty_like(stat)


@torch.library.custom_op("fastsd::bn_relu_backward", mutates_args=())
def _bn_relu_backward_op(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
    mean: torch.Tensor, rstd: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return implementation(x, "batchnorm").bn_relu_backward(dy, x, weight, bias, mean, rstd)


@_bn_relu_backward_op.register_fake
def _(dy, x, weight, bias, mean, rstd):
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(bias)


def _setup(ctx, inputs, output):
    x, weight, bias, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, bias, mean, rstd)


def _backward(ctx, dy, _dmean, _drstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    if dy is None:
        return None, None, None, None
    dx, dw, db = _bn_relu_backward_op(dy, x, weight, bias, mean, rstd)
    return dx, dw, db, None


_bn_relu_op.register_autograd(_backward, setup_context=_setup)


def bn_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5,
            *, return_stats: bool = False):
    """``relu(weight (x − mean) / sqrt(var + eps) + bias)`` with the batch statistics of ``x``.

    Args:
        x: (N, C, ...) float32/float16/bfloat16/float64, any memory format (channels-last stays
            channels-last); statistics per channel over all other dims (biased variance).
        weight, bias: (C,) affine parameters (float32 with low-precision ``x`` under autocast).
        eps: added to the variance.
        return_stats: also return ``(mean, var)`` (detached, float32/float64) for running statistics.

    Differentiable in ``x``, ``weight`` and ``bias`` (one fused backward op).
    """
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, C, ...), got {tuple(x.shape)}")
    C = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        check_tensor(name, t, dtypes=FLOAT_DTYPES)
        if t.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},) for x with {C} channels, got {tuple(t.shape)}")
    check_same_device(x=x, weight=weight, bias=bias)
    if x.numel() == 0 or x.numel() == C:
        raise ValueError(f"batch statistics need more than one value per channel, got x of shape {tuple(x.shape)}")
    y, mean, rstd = _bn_relu_op(x, weight, bias, float(eps))
    if not return_stats:
        return y
    return y, (mean.detach(), (rstd.detach() ** -2 - eps).clamp_min(0))
