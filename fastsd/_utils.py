"""Small helpers every layer shares (reference, functional, kernels, ops, solvers); no fastsd
imports, so any module can use them without creating a cycle."""
from __future__ import annotations

import math

import torch

__all__ = ["per_problem", "dc_weight", "capturing"]


def per_problem(v, like: torch.Tensor):
    """A per-problem value (tensor of shape (B,) or ()) reshaped to broadcast over ``like``
    (B, ...); Python numbers pass through unchanged."""
    if not isinstance(v, torch.Tensor):
        return v
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def dc_weight(lam: float) -> float:
    """Weight ``w = lam / (1 + lam)`` of the measurement in soft data consistency
    ``(1 - w M) k + w M y``; ``lam = inf`` gives ``w = 1`` (hard replacement)."""
    lam = float(lam)
    return 1.0 if math.isinf(lam) else lam / (1.0 + lam)


def capturing(t: torch.Tensor) -> bool:
    """True while ``t``'s CUDA stream is being captured into a graph: host syncs, checks that read
    values and fresh allocations must be skipped then (the graph was validated eagerly)."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()
