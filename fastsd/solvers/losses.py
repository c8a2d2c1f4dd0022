"""The regularisers of the self-diffusion losses, per problem of a batch (shape (B,))."""
from __future__ import annotations

import torch

__all__ = ["total_variation", "fourier_l1"]


def total_variation(z: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV per problem: sum of |forward differences| along every spatial dim, shape (B,)."""
    tv = z.new_zeros(z.shape[0])
    for d in range(2, z.ndim):
        tv = tv + torch.diff(z, dim=d).abs().flatten(1).sum(1)
    return tv


def fourier_l1(x: torch.Tensor) -> torch.Tensor:
    """Σ|FFT(x_b)| over each flattened problem (smoothed: sqrt(|·|² + 1e-10)), shape (B,)."""
    f = torch.fft.fft(x.reshape(x.shape[0], -1), dim=1)
    return torch.sqrt(f.real**2 + f.imag**2 + 1e-10).sum(1)
