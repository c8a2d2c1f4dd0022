"""Diffusion posterior sampling (DPS; Chung et al., ICLR 2023).

A DDPM sampler (linear betas 1e-4..0.02, T = 1000) whose every step is pulled towards the data::

    x_T ~ N(0, I)
    for t = T-1, ..., 0:
        x0_hat = D(x_t / sqrt(ab_t), sigma_t)               # sigma_t = sqrt((1 - ab_t) / ab_t)
        x_{t-1} = DDPM step(x_t, x0_hat) - zeta * grad_{x_t} ‖y − A x0_hat‖   # un-squared norm

The gradient goes through the user's denoiser by autograd; the data term uses ``op.fidelity_loss``
(fused residual norm). ``steps < T`` respaces the schedule (every ``T // steps``-th timestep).
"""
from __future__ import annotations

import time

import torch

from fastsd.solvers.base import Callback, SolveResult, register_solver
from fastsd.solvers.diffusion import SeedSolver, check_count, check_positive, ddim_step, denoise_vp, notify
from fastsd.solvers.schedules import ddpm_alpha_bar, respaced_timesteps

__all__ = ["DPS"]


@register_solver("dps")
class DPS(SeedSolver):
    """Diffusion posterior sampling with a denoiser ``D(x, sigma)`` (network layout, see
    :class:`fastsd.solvers.diffusion.Problem`).

    Args:
        denoiser: callable ``D(x, sigma) -> x0_hat`` for ``x = x0 + sigma * n`` (float ``sigma``).
        steps: sampling steps (default 1000 = every timestep of ``T``).
        zeta: step size of the measurement gradient (constant, as in the official code).
        T, beta_start, beta_end: the DDPM schedule.
        seed, device, dtype: see :class:`~fastsd.solvers.diffusion.SeedSolver`.
    """

    def __init__(self, denoiser, *, steps: int = 1000, zeta: float = 1.0, T: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02, **common):
        super().__init__(**common)
        if not callable(denoiser):
            raise ValueError("denoiser must be a callable D(x, sigma)")
        check_count(steps=steps, T=T)
        check_positive(zeta=zeta)
        self.denoiser, self.steps, self.zeta, self.T = denoiser, int(steps), float(zeta), int(T)
        self.alpha_bar = ddpm_alpha_bar(self.T, beta_start, beta_end)
        self.timesteps = respaced_timesteps(self.T, self.steps)

    def solve(self, y: torch.Tensor, op, *, callback: Callback | None = None) -> SolveResult:
        """Sample once per problem of the batch; returns the final ``x_0`` in the operator's layout."""
        t0 = time.perf_counter()
        pb = self.problem(y, op)
        ts, ab = self.timesteps, self.alpha_bar
        x = pb.randn()
        history: dict[str, list[float]] = {}
        for i, t in enumerate(ts):
            ab_t = float(ab[t])
            ab_prev = float(ab[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                x0 = denoise_vp(self.denoiser, x, ab_t)
                fid = pb.fidelity_loss(x0)
                norm = fid.clamp_min(torch.finfo(fid.dtype).tiny).sqrt()
                (grad,) = torch.autograd.grad(norm.sum(), x)
            noise = pb.randn() if ab_prev < 1.0 else None
            with torch.no_grad():
                x = ddim_step(x.detach(), x0.detach(), ab_t, ab_prev, eta=1.0, noise=noise) - self.zeta * grad
            if notify(callback, i, pb, x, float(fid.detach().mean()), history):
                break
        info = dict(method="dps", steps=self.steps, zeta=self.zeta, T=self.T, seed=self.seed,
                    device=str(pb.device), runtime_s=time.perf_counter() - t0)
        return SolveResult(x=pb.from_net(x.detach()), history=history, info=info)
