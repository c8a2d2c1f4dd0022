"""Reference of the fused train-mode BatchNorm + ReLU: ``y = relu(w (x − μ) / sqrt(σ² + eps) + b)``.

Statistics are per channel (dim 1) over every other dim, biased variance, as
``F.batch_norm(training=True)`` computes them; the network's training step uses them with batch
statistics only. Arithmetic runs in float32 (float64 for float64 ``x``) whatever ``x``'s dtype, so
bf16 activations get float32 statistics; ``y`` and ``dx`` have ``x``'s dtype and memory format.
``mean`` and ``rstd`` (shape (C,), float32/float64) are what the backward needs besides ``x``.
"""
from __future__ import annotations

import torch

from fastsd._utils import accumulate_dtype

__all__ = ["bn_relu_forward", "bn_relu_backward", "accumulate_dtype"]


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [0] + list(range(2, x.ndim))


def bn_relu_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
    """``(y, mean, rstd)`` for ``x`` of shape (N, C, ...)."""
    acc = accumulate_dtype(x)
    xf = x.to(acc)
    var, mean = torch.var_mean(xf, dim=_reduce_dims(x), correction=0)
    rstd = torch.rsqrt(var + eps)
    scale = weight.to(acc) * rstd
    shift = bias.to(acc) - mean * scale
    y = torch.relu(xf * _per_channel(scale, x) + _per_channel(shift, x))
    return torch.empty_like(x).copy_(y), mean, rstd


def bn_relu_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     mean: torch.Tensor, rstd: torch.Tensor):
    """``(dx, dweight, dbias)`` of :func:`bn_relu_forward`'s ``y`` for upstream gradient ``dy``.

    With ``x̂ = (x − μ) rstd`` and ``g = dy · [y > 0]`` over the n elements of a channel:
    ``db = Σ g``, ``dw = Σ g x̂``, ``dx = w rstd (g − db / n − x̂ dw / n)``.
    """
    acc = accumulate_dtype(x)
    dims = _reduce_dims(x)
    n = x.numel() // x.shape[1] if x.shape[1] else 0
    xhat = (x.to(acc) - _per_channel(mean, x)) * _per_channel(rstd, x)
    w = weight.to(acc)
    g = torch.where(xhat * _per_channel(w, x) + _per_channel(bias.to(acc), x) > 0, dy.to(acc), 0.0)
    db = g.sum(dims)
    dw = (g * xhat).sum(dims)
    dx = _per_channel(w * rstd, x) * (g - _per_channel(db / n, x) - xhat * _per_channel(dw / n, x))
    return torch.empty_like(x).copy_(dx), dw.to(weight.dtype), db.to(bias.dtype)
