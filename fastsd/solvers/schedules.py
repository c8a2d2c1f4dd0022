"""Noise schedules, one module for every solver.

Self-diffusion: betas ramp linearly over the ``T`` noise steps, ``alpha_bar = cumprod(1 - beta)`` and
``sigma_t = sqrt(1 - alpha_bar_t)``; self-diffusion visits them from the largest to the smallest.
With the official code's defaults (``beta_start=1e-4, beta_end=1e-2, T=40``) that is
0.428 -> 0.010. A smaller peak (the paper's MRI text describes a gentler schedule than the code) is
had with ``beta_end`` or with ``factor``, which divides every beta like the official code's
progressive stages do.

DDPM (DPS, ProjDiff, DMPlug): ``alpha_bar`` of linear betas 1e-4..0.02 over ``T = 1000``,
respaced timesteps and the VP -> VE noise level. EDM (Diff-Unfolding): Karras sigmas.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["linear_betas", "alpha_bar", "sdi_sigmas", "ddpm_alpha_bar", "respaced_timesteps", "ve_sigma",
           "karras_sigmas"]


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 1e-2, factor: float = 1.0) -> np.ndarray:
    """``T`` betas from ``beta_start/factor`` to ``beta_end/factor`` (float64)."""
    if int(T) != T or T < 1:
        raise ValueError(f"T (number of noise steps) must be a positive integer, got {T!r}")
    if not (0 <= beta_start <= beta_end < 1):
        raise ValueError(f"need 0 <= beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    return np.linspace(beta_start / factor, beta_end / factor, int(T), dtype=np.float64)


def alpha_bar(T: int, beta_start: float, beta_end: float, factor: float = 1.0) -> np.ndarray:
    """``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` for :func:`linear_betas`, float64 of shape (T,)."""
    return np.cumprod(1.0 - linear_betas(T, beta_start, beta_end, factor))


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
    sigma = np.sqrt(1.0 - alpha_bar(T, beta_start, beta_end, factor))[::-1].copy()
    return torch.as_tensor(sigma, dtype=dtype, device=device)


def ddpm_alpha_bar(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """:func:`alpha_bar` with the DDPM defaults; ``beta_start > 0`` keeps every VE sigma finite."""
    if not beta_start > 0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return alpha_bar(T, beta_start, beta_end)


def respaced_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` timesteps ``k * (T // steps)``, largest first (3 of 1000 -> 666, 333, 0)."""
    if int(steps) != steps or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, {T}], got {steps!r}")
    return [k * (T // steps) for k in range(int(steps))][::-1]


def ve_sigma(alpha_bar: float) -> float:
    """Noise level of ``x_t / sqrt(alpha_bar)`` for a VP state ``x_t``."""
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


def karras_sigmas(n: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> list[float]:
    """EDM noise levels ``(σmax^(1/ρ) + i/(n−1) (σmin^(1/ρ) − σmax^(1/ρ)))^ρ``, largest first."""
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    if n == 1:
        return [float(sigma_max)]
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [float((a + i / (n - 1) * (b - a)) ** rho) for i in range(int(n))]
