"""DMPlug (Wang et al., NeurIPS 2024): treat a few-step deterministic DDIM sampler as a generator
``x = G(z)`` and optimise its seed ``z`` for data fidelity::

    z ~ N(0, I)                                   # x at t = 666
    G(z): DDIM (eta = 0) through t = 666, 333, 0 of a 1000-step DDPM schedule, denoiser D(x, sigma)
    repeat: z <- Adam step on ‖A G(z) − y‖²       # back-propagation through the 3 denoiser calls

The step (generate, data loss, back-propagation, Adam) is fixed, so on CUDA it is captured once as
a CUDA graph and replayed (the three noise levels are constants of the graph). Optional ES-WMV
early stopping returns the output at the lowest running variance.
"""
from __future__ import annotations

import time

import torch

from fastsd.graphs.step_graph import graph_enabled, graph_safe_adam
from fastsd.solvers.base import Callback, SolveResult, register_solver
from fastsd.solvers.diffusion import SeedSolver, check_count, check_positive, ddim_step, denoise_vp, run_steps
from fastsd.solvers.dip import _Trace
from fastsd.solvers.early_stopping import ESWMV
from fastsd.solvers.schedules import ddpm_alpha_bar, respaced_timesteps

__all__ = ["DMPlug"]


@register_solver("dmplug")
class DMPlug(SeedSolver):
    """Seed optimisation through a short DDIM sampler.

    Args:
        denoiser: callable ``D(x, sigma)`` (network layout, float ``sigma``), differentiable in ``x``.
        iterations: Adam steps on the seed.
        lr: Adam learning rate.
        ddim_steps: DDIM steps (3 -> timesteps 666, 333, 0 of ``T``).
        early_stop: use ES-WMV (``es_window``, ``es_patience``) and return its best output.
        T, beta_start, beta_end: the DDPM schedule.
        use_graph: CUDA-graph the step (default: on CUDA); warmup: eager steps before capture.
        seed, device, dtype: see :class:`~fastsd.solvers.diffusion.SeedSolver`.
    """

    def __init__(self, denoiser, *, iterations: int = 1000, lr: float = 1e-2, ddim_steps: int = 3,
                 early_stop: bool = False, es_window: int = 100, es_patience: int = 200, T: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02, use_graph: bool | None = None, warmup: int = 3,
                 **common):
        super().__init__(**common)
        if not callable(denoiser):
            raise ValueError("denoiser must be a callable D(x, sigma)")
        check_count(iterations=iterations, ddim_steps=ddim_steps, T=T, warmup=warmup)
        check_positive(lr=lr)
        ESWMV(es_window, es_patience)  # validates the window and patience
        self.denoiser, self.iterations, self.lr = denoiser, int(iterations), float(lr)
        self.early_stop, self.es_window, self.es_patience = bool(early_stop), int(es_window), int(es_patience)
        ab = ddpm_alpha_bar(int(T), beta_start, beta_end)
        ts = respaced_timesteps(int(T), int(ddim_steps))
        self.alphas = [float(ab[t]) for t in ts] + [1.0]  # ab of each step, then of the clean end
        self.timesteps = ts
        self.use_graph, self.warmup = use_graph, int(warmup)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """``G(z)``: deterministic DDIM from ``z`` (differentiable)."""
        x = z
        for ab_t, ab_prev in zip(self.alphas[:-1], self.alphas[1:]):
            x = ddim_step(x, denoise_vp(self.denoiser, x, ab_t), ab_t, ab_prev, eta=0.0)
        return x

    def solve(self, y: torch.Tensor, op, *, callback: Callback | None = None) -> SolveResult:
        """Optimise the seed; ``callback(i, {"x", "loss"})`` after every Adam step."""
        t0 = time.perf_counter()
        pb = self.problem(y, op)
        graphed = graph_enabled(self.use_graph, pb.device)
        z = pb.randn().requires_grad_(True)
        opt = graph_safe_adam([z], self.lr, pb.device)
        trace = _Trace(self.iterations, pb.batch, pb.net_shape, pb.device, pb.dtype)

        def step():
            opt.zero_grad(set_to_none=True)
            x = self.generate(z)
            loss = pb.fidelity_loss(x)
            loss.sum().backward()
            opt.step()
            trace.record(x.detach(), loss.detach())

        es = ESWMV(self.es_window, self.es_patience) if self.early_stop else None
        with torch.enable_grad():
            done = run_steps(step, self.iterations, pb.device, use_graph=graphed, warmup=self.warmup,
                             hook=trace.hook(pb, callback, es))
        with torch.no_grad():
            x = es.best if es is not None and es.best is not None else self.generate(z)
        info = dict(method="dmplug", iterations=done, lr=self.lr, timesteps=self.timesteps,
                    early_stop=self.early_stop, stopped_at=done - 1 if done < self.iterations else None,
                    cuda_graph=graphed, seed=self.seed, device=str(pb.device), runtime_s=time.perf_counter() - t0)
        if es is not None and es.best_iter is not None:
            info["es_best_iter"] = es.best_iter.tolist()
        return SolveResult(x=pb.from_net(x.detach()), history={"loss": trace.losses(done)}, info=info)
