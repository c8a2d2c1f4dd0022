"""Noise levels for self-diffusion.

Betas ramp linearly over the ``T`` noise steps, ``alpha_bar = cumprod(1 - beta)`` and
``sigma_t = sqrt(1 - alpha_bar_t)``; self-diffusion visits them from the largest to the smallest.
With the official code's defaults (``beta_start=1e-4, beta_end=1e-2, T=40``) that is
0.428 -> 0.010. A smaller peak (the paper's MRI text describes a gentler schedule than the code) is
had with ``beta_end`` or with ``factor``, which divides every beta like the official code's
progressive stages do.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["linear_betas", "sdi_sigmas"]


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 1e-2, factor: float = 1.0) -> np.ndarray:
    """``T`` betas from ``beta_start/factor`` to ``beta_end/factor`` (float64)."""
    if int(T) != T or T < 1:
        raise ValueError(f"T (number of noise steps) must be a positive integer, got {T!r}")
    if not (0 <= beta_start <= beta_end < 1):
        raise ValueError(f"need 0 <= beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    return np.linspace(beta_start / factor, beta_end / factor, int(T), dtype=np.float64)


def sdi_sigmas(
    T: int,
    beta_start: float = 1e-4,
    beta_end: float = 1e-2,
    factor: float = 1.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Noise levels in the order self-diffusion uses them (largest first), shape (T,)."""
    alpha_bar = np.cumprod(1.0 - linear_betas(T, beta_start, beta_end, factor))
    sigma = np.sqrt(1.0 - alpha_bar)[::-1].copy()
    return torch.as_tensor(sigma, dtype=dtype, device=device)
