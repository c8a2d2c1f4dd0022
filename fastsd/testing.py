"""Helpers for comparing fused kernels with their references (used by the test suite)."""
from __future__ import annotations

import torch

from fastsd.ops.base import LinearOperator

__all__ = ["TOLERANCE", "rel_err", "poisoned_like", "MaskOp"]

# Relative-error tolerance per input dtype for kernel-vs-reference comparisons.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.complex128: 1e-12,
    torch.float32: 1e-5,
    torch.complex64: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64 (complex-safe); NaN anywhere in ``out`` gives NaN."""
    out, ref = out.detach().cpu(), ref.detach().cpu()
    out = out.to(torch.complex128 if out.is_complex() else torch.float64)
    ref = ref.to(torch.complex128 if ref.is_complex() else torch.float64)
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-300))


def poisoned_like(t: torch.Tensor) -> torch.Tensor:
    """An output buffer filled with NaN, so a kernel that skips an element is caught."""
    return torch.full_like(t, float("nan"))


class MaskOp(LinearOperator):
    """y = m * x with a mask broadcast over (B, C, H, W): a tiny operator independent of the fused
    ones, for testing solvers and the step engine against hand-written loops."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x):
        return self.mask * x

    def adjoint(self, y):
        return self.mask * y
