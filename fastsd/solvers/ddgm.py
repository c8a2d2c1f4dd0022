"""DDGM: gradient steps on the data term alternated with noisy denoising at a decaying noise level::

    x = init (A^H y by default)
    for n = 0, ..., N-1:                 # sigma_n, eta_n decay exponentially
        repeat K times: x <- x − eta_n A^H (A x − y)      # ∇ ½‖A x − y‖², from op.fidelity
        x <- D(x + sigma_n ε, sigma_n)

``op.fidelity`` returns ``‖A x − y‖²`` and ``2 A^H (A x − y)`` in one fused pass; half the gradient
is the step direction.
"""
from __future__ import annotations

import time

import torch

from fastsd.solvers.base import Callback, SolveResult, register_solver
from fastsd.solvers.diffusion import SeedSolver, call_denoiser, check_count, check_positive, notify

__all__ = ["DDGM"]

INITS = ("adjoint", "pinv", "zeros", "noise")


def initial_estimate(pb, init: str, sigma: float = 1.0):
    """Starting point in network layout: ``A^H y``, ``A^† y``, zeros or ``sigma * N(0, I)``."""
    if init == "adjoint":
        return pb.adjoint_y()
    if init == "pinv":
        return pb.pinv_y()
    if init == "zeros":
        return torch.zeros(pb.net_shape, device=pb.device, dtype=pb.dtype)
    return sigma * pb.randn()


def check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


@register_solver("ddgm")
class DDGM(SeedSolver):
    """Annealed gradient / denoising iterations.

    Args:
        denoiser: callable ``D(x, sigma)`` (network layout, float ``sigma``).
        iterations: number N of noise levels.
        inner_steps: gradient steps K per level.
        sigma_max, sigma_min: first and last noise level (geometric decay in between).
        step_size: initial gradient step; ``None`` = ``1 / ‖A‖²`` (power iteration).
        step_decay: ratio last / first step size (geometric decay; 1 keeps it constant).
        add_noise: add ``sigma_n ε`` before denoising (False: deterministic denoising).
        init: 'adjoint' (A^H y), 'pinv', 'zeros' or 'noise' (``sigma_max * N(0, I)``).
        seed, device, dtype: see :class:`~fastsd.solvers.diffusion.SeedSolver`.
    """

    def __init__(self, denoiser, *, iterations: int = 100, inner_steps: int = 5, sigma_max: float = 1.0,
                 sigma_min: float = 0.01, step_size: float | None = None, step_decay: float = 0.1,
                 add_noise: bool = True, init: str = "adjoint", **common):
        super().__init__(**common)
        if not callable(denoiser):
            raise ValueError("denoiser must be a callable D(x, sigma)")
        check_count(iterations=iterations, inner_steps=inner_steps)
        check_positive(sigma_max=sigma_max, sigma_min=sigma_min, step_decay=step_decay)
        if sigma_min > sigma_max:
            raise ValueError(f"sigma_min ({sigma_min}) must not exceed sigma_max ({sigma_max})")
        if step_size is not None:
            check_positive(step_size=step_size)
        check_init(init)
        self.denoiser, self.iterations, self.inner_steps = denoiser, int(iterations), int(inner_steps)
        self.sigma_max, self.sigma_min, self.step_size = float(sigma_max), float(sigma_min), step_size
        self.step_decay, self.add_noise, self.init = float(step_decay), bool(add_noise), init

    def schedule(self) -> list[tuple[float, float]]:
        """``(sigma_n, step factor_n)`` per level: both geometric from 1 to their end ratio."""
        N = self.iterations
        fr = [n / (N - 1) if N > 1 else 1.0 for n in range(N)]
        return [(self.sigma_max * (self.sigma_min / self.sigma_max) ** f, self.step_decay**f) for f in fr]

    @torch.no_grad()
    def solve(self, y: torch.Tensor, op, *, callback: Callback | None = None) -> SolveResult:
        t0 = time.perf_counter()
        pb = self.problem(y, op)
        eta0 = self.step_size if self.step_size is not None else 1.0 / pb.lipschitz()
        x = initial_estimate(pb, self.init, self.sigma_max)
        history: dict[str, list[float]] = {}
        for n, (sigma, factor) in enumerate(self.schedule()):
            for _ in range(self.inner_steps):
                loss, grad = pb.fidelity(x)
                x = x - (0.5 * eta0 * factor) * grad
            if self.add_noise:
                x = x + sigma * pb.randn()
            x = call_denoiser(self.denoiser, x, sigma)
            if notify(callback, n, pb, x, float(loss.mean()), history):
                break
        info = dict(method="ddgm", iterations=self.iterations, inner_steps=self.inner_steps, step_size=eta0,
                    sigma_max=self.sigma_max, sigma_min=self.sigma_min, step_decay=self.step_decay,
                    seed=self.seed, device=str(pb.device), runtime_s=time.perf_counter() - t0)
        return SolveResult(x=pb.from_net(x), history=history, info=info)
