"""Small helpers every layer shares (reference, functional, kernels, ops, solvers); no fastsd
imports, so any module can use them without creating a cycle."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["per_problem", "dc_weight", "capturing", "pad_to", "accumulate_dtype", "noise_shape", "memory_format"]


def accumulate_dtype(x: torch.Tensor) -> torch.dtype:
    """Dtype of the fused ops' arithmetic, statistics and losses: float64 for float64 ``x``, else
    float32 (so bf16/fp16 inputs accumulate in float32)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


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


def pad_to(h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``h`` zero-padded (split evenly, the odd one after) to ``like``'s spatial size (dims 2...):
    how the U-Nets join an upsampled map to a larger skip."""
    pad = []
    for d in range(h.ndim - 1, 1, -1):  # F.pad order: last dimension first
        diff = like.shape[d] - h.shape[d]
        pad += [diff // 2, diff - diff // 2]
    return F.pad(h, pad) if any(pad) else h


def noise_shape(x: torch.Tensor) -> tuple[int, ...]:
    """Output shape of the noisy input: complex (B,H,W) -> real (B,2,H,W); real unchanged."""
    if x.is_complex():
        b, h, w = x.shape
        return (b, 2, h, w)
    return tuple(x.shape)


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """``channels_last`` for a channels-last (and not also contiguous) 4-D tensor, else contiguous:
    the layout the upsample-concat op's outputs take from ``t``."""
    cl = not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format
