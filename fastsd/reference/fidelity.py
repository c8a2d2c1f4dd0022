"""Reference of the fused masked fidelity: per-problem ``‖m ⊙ x − y‖²`` and its gradient.

For a mask operator A = diag(m) (inpainting; ``mask=None`` is the identity, i.e. denoising) the
loss and the gradient ``2 m (m x − y)`` come from the same residual, which the Triton kernel
computes in one pass. Arithmetic and the loss are float32 (float64 for float64 ``x``); the
gradient has ``x``'s shape and dtype.
"""
from __future__ import annotations

import torch

from fastsd._utils import accumulate_dtype

__all__ = ["masked_fidelity", "accumulate_dtype"]


def masked_fidelity(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, out=None):
    """Return ``(loss, grad)``: ``loss_b = Σ (m x − y)²`` over problem b, ``grad = 2 m (m x − y)``."""
    acc = accumulate_dtype(x)
    xf, yf = x.to(acc), y.to(acc)
    if mask is None:
        r = xf - yf
        g = 2.0 * r
    else:
        m = mask.to(acc)
        r = m * xf - yf
        g = 2.0 * m * r
    B = x.shape[0]
    loss = (r * r).reshape(B, x.numel() // B if B else 0).sum(1)
    g = g.to(x.dtype)
    if out is None:
        return loss, g.contiguous()
    return loss, out.copy_(g)
