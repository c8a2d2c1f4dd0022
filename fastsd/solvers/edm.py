"""EDM preconditioning (Karras et al. 2022): turn a raw network ``F(x_in, c_noise)`` into a
denoiser ``D(x, sigma)``; the Karras noise levels are in :mod:`fastsd.solvers.schedules`."""
from __future__ import annotations

import torch
from torch import nn

from fastsd._utils import per_problem

__all__ = ["EDMPrecond", "edm_coefficients", "sigma_tensor"]


def sigma_tensor(sigma, dtype, device) -> torch.Tensor:
    """``sigma`` (a number or a tensor) as a 1D tensor on ``device``. A number becomes a device
    fill, not a host-to-device copy, so a denoiser call stays legal inside a CUDA graph capture."""
    if isinstance(sigma, torch.Tensor):
        return sigma.to(dtype=dtype, device=device).reshape(-1)
    return torch.full((1,), float(sigma), dtype=dtype, device=device)


def edm_coefficients(sigma, sigma_data: float = 0.5):
    """EDM preconditioning ``(c_skip, c_out, c_in, c_noise)`` for noise level ``sigma``."""
    sigma = torch.as_tensor(sigma)
    s2 = sigma**2 + sigma_data**2
    return sigma_data**2 / s2, sigma * sigma_data / s2.sqrt(), 1 / s2.sqrt(), sigma.log() / 4


class EDMPrecond(nn.Module):
    """``D(x, σ) = c_skip x + c_out F(c_in x, c_noise)`` around a raw network ``F(x_in, c_noise)``
    (``c_noise`` has shape (B,)); ``sigma_data = 0.5`` as in EDM."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net, self.sigma_data = net, float(sigma_data)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = sigma_tensor(sigma, x.dtype, x.device)
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        return per_problem(c_skip, x) * x + per_problem(c_out, x) * self.net(per_problem(c_in, x) * x, c_noise)
