"""Diffusion unfolding: a fixed number of gradient steps whose prior term is a denoiser evaluated on
the EDM noise schedule, with trainable step sizes and weights::

    sigma_k: Karras schedule (NFE = 18, rho = 7, sigma 80 -> 0.002)
    x^{k+1} = x^k − γ_k / L_k · (∇g(x^k) + τ_k (x^k − R(x^k, sigma_k)))

``g = ½‖A x − y‖²`` and ``R`` the denoiser, EDM-preconditioned
(``c_skip x + c_out F(c_in x, c_noise)``, ``sigma_data = 0.5``; pass ``raw_network=True`` to wrap a
bare ``F``). Steps are normalised by ``L_k = ‖A‖² + τ_k sigma_k² / (sigma_data² + sigma_k²)``, a
Lipschitz bound of the update for a prior with per-pixel variance ``sigma_data²``, so ``γ_k = 1`` is
a safe start on every operator.

Default prior weights: ``x − R(x, σ) ≈ σ² ∇(−log p_σ(x))``, so ``τ_k = s_k² / σ_k²`` makes step k a
gradient step on ``½‖A x − y‖² + s_k² (−log p_{σ_k}(x))`` — the posterior objective for
measurement noise ``s_k``. ``s_k²`` anneals geometrically from a strong prior
(``prior_start · (σ_data² + σ_max²)``: the prior's curvature is ``prior_start`` times the data
term's at the first step) down to ``noise_level²`` at the last step, the true posterior weight.
One step per level cannot converge in directions the data leave free; starting from a strong prior
fills them in while the noise is large, which is what makes the untrained iteration a fair start.

``γ`` and ``τ`` (stored as logs) are ``nn.Parameter``s; :meth:`DiffUnfolding.train` fits them (and
the denoiser, with ``train_denoiser=True``) with Adam on ``‖x_out − x_true‖²``. Sampling
(:meth:`DiffUnfolding.solve`) runs one fixed step whose σ_k, γ_k, τ_k are read from device
tensors at a step counter, so on CUDA it is captured once as a CUDA graph and replayed.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from fastsd.graphs.step_graph import graph_enabled
from fastsd.solvers.base import Callback, SolveResult, register_solver
from fastsd.solvers.ddgm import check_init, initial_estimate
from fastsd.solvers.diffusion import Problem, SeedSolver, call_denoiser, check_count, check_positive, run_steps
from fastsd.solvers.edm import EDMPrecond
from fastsd.solvers.schedules import karras_sigmas

__all__ = ["DiffUnfolding"]


@register_solver("unfolding")
class DiffUnfolding(SeedSolver, nn.Module):
    """Unfolded diffusion-prior gradient descent (an ``nn.Module``: its parameters are ``γ``, ``τ``
    and, with ``train_denoiser=True``, the denoiser's).

    Args:
        denoiser: ``D(x, sigma)`` (network layout), or a bare network ``F(x_in, c_noise)`` with
            ``raw_network=True``. With CUDA graphs ``sigma`` arrives as a 0-d device tensor
            (EDM-preconditioned networks and the fastsd denoisers accept both).
        steps: unfolded iterations = denoiser evaluations (NFE, default 18).
        sigma_min, sigma_max, rho: Karras schedule; sigma_data: EDM preconditioning constant.
        gamma_init: initial relative step size (scalar or one per step).
        tau_init: initial prior weight (scalar or one per step); ``None`` = the annealed
            ``s_k² / sigma_k²`` schedule (module docstring).
        noise_level: measurement-noise std, the prior weight's end point in the default ``tau_init``.
        prior_start: relative strength of the prior at the first step in the default ``tau_init``.
        init: 'adjoint' (A^H y), 'pinv', 'zeros' or 'noise' (``sigma_max * N(0, I)``).
        lipschitz: ``‖A‖²`` if known (default: power iteration per call).
        train_denoiser: also train the denoiser's parameters in :meth:`train`.
        use_graph: CUDA-graph the sampling step (default: on CUDA); warmup: eager steps before capture.
        seed, device, dtype: see :class:`~fastsd.solvers.diffusion.SeedSolver`.
    """

    def __init__(self, denoiser, *, steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 rho: float = 7.0, sigma_data: float = 0.5, gamma_init=1.0, tau_init=None, noise_level: float = 0.01,
                 prior_start: float = 0.03, init: str = "adjoint", lipschitz: float | None = None,
                 raw_network: bool = False, train_denoiser: bool = False, use_graph: bool | None = None,
                 warmup: int = 3, **common):
        nn.Module.__init__(self)
        SeedSolver.__init__(self, **common)
        if not callable(denoiser):
            raise ValueError("denoiser must be a callable D(x, sigma)")
        check_count(steps=steps, warmup=warmup)
        check_positive(rho=rho, sigma_data=sigma_data, noise_level=noise_level, prior_start=prior_start)
        check_init(init)
        if lipschitz is not None:
            check_positive(lipschitz=lipschitz)
        if raw_network and not isinstance(denoiser, nn.Module):
            raise ValueError("raw_network=True needs an nn.Module F(x_in, c_noise)")
        self.sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho)
        self.sigma_data, self.noise_level, self.init, self.lipschitz = float(sigma_data), float(noise_level), init, lipschitz
        self.prior_start = float(prior_start)
        self.train_denoiser = bool(train_denoiser)
        self.use_graph, self.warmup = use_graph, int(warmup)
        self.denoiser = EDMPrecond(denoiser, sigma_data) if raw_network else denoiser
        sig = torch.tensor(self.sigmas, dtype=torch.float64)
        if tau_init is None:
            s2_start = self.prior_start * (self.sigma_data**2 + self.sigmas[0] ** 2)
            frac = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.ones(1, dtype=torch.float64)
            s2 = s2_start * (self.noise_level**2 / s2_start) ** frac
            tau = s2 / sig**2
        else:
            tau = self._per_step("tau_init", tau_init, steps)
        gamma = self._per_step("gamma_init", gamma_init, steps)
        self.log_gamma = nn.Parameter(gamma.log().float())
        self.log_tau = nn.Parameter(tau.log().float())

    @staticmethod
    def _per_step(name: str, v, steps: int) -> torch.Tensor:
        t = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
        if t.numel() == 1:
            t = t.expand(steps).clone()
        if t.numel() != steps or not bool((t > 0).all()) or not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} must be positive, a scalar or one value per step ({steps})")
        return t

    @property
    def gamma(self) -> torch.Tensor:
        return self.log_gamma.exp()

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp()

    def parameters(self, recurse: bool = True):  # γ, τ and (optionally) the denoiser's
        yield self.log_gamma
        yield self.log_tau
        if self.train_denoiser and isinstance(self.denoiser, nn.Module):
            yield from self.denoiser.parameters()

    # -- the unfolded iteration -------------------------------------------------------------
    def _update(self, pb: Problem, x, sigma, gamma_k, tau_k, L_A: float, differentiable: bool):
        """One step ``x − γ_k / L_k (∇g(x) + τ_k (x − R(x, σ_k)))``; returns it and ``‖A x − y‖²``.

        Sampling uses the fused ``op.fidelity`` gradient. Training needs ``∇g`` as a differentiable
        function of ``x`` (the next step's input), so it takes ``A^H (A x − y)`` through the
        autograd-aware ``forward``/``adjoint`` instead."""
        if differentiable:
            r = pb.op.forward(pb.from_net(x)) - pb.y
            grad_g = pb.to_net(pb.op.adjoint(r))
            fid = (r.abs() ** 2).flatten(1).sum(1)
        else:
            fid, grad = pb.fidelity(x)
            grad_g = 0.5 * grad
        prior = x - call_denoiser(self.denoiser, x, sigma)
        L = L_A + tau_k * sigma**2 / (self.sigma_data**2 + sigma**2)
        return x - gamma_k / L * (grad_g + tau_k * prior), fid

    def unfold(self, pb: Problem) -> torch.Tensor:
        """Run all steps eagerly on a set-up problem, differentiable in γ, τ (and the denoiser)."""
        L_A = self.lipschitz if self.lipschitz is not None else pb.lipschitz()
        x = initial_estimate(pb, self.init, self.sigmas[0])
        gamma, tau = self.gamma.to(pb.dtype), self.tau.to(pb.dtype)
        for k, sigma in enumerate(self.sigmas):
            x, _ = self._update(pb, x, sigma, gamma[k], tau[k], L_A, differentiable=True)
        return x

    @torch.no_grad()
    def solve(self, y: torch.Tensor, op, *, callback: Callback | None = None) -> SolveResult:
        """Sample: the unfolded iteration with the current γ, τ, as one fixed step repeated
        ``steps`` times (a CUDA-graph replay per step on CUDA; a loop with float σ elsewhere)."""
        t0 = time.perf_counter()
        pb = self.problem(y, op)
        graphed = graph_enabled(self.use_graph, pb.device)
        L_A = self.lipschitz if self.lipschitz is not None else pb.lipschitz()
        n = len(self.sigmas)
        x = initial_estimate(pb, self.init, self.sigmas[0]).clone()
        gamma = self.gamma.detach().to(device=pb.device, dtype=pb.dtype)
        tau = self.tau.detach().to(device=pb.device, dtype=pb.dtype)
        sig = torch.tensor(self.sigmas, device=pb.device, dtype=pb.dtype)
        k = torch.zeros(1, dtype=torch.int64, device=pb.device)
        trace = torch.zeros(n, pb.batch, dtype=torch.float64, device=pb.device)

        def step():
            # graphed: σ_k, γ_k, τ_k read at the device counter k (a replay sees the new k);
            # eager: the same update with a Python-float σ, as user denoisers expect
            i = int(k) if not graphed else None
            if graphed:
                s, g, t = sig.index_select(0, k)[0], gamma.index_select(0, k)[0], tau.index_select(0, k)[0]
            else:
                s, g, t = self.sigmas[i], gamma[i], tau[i]
            x_new, fid = self._update(pb, x, s, g, t, L_A, differentiable=False)
            x.copy_(x_new)
            trace.index_copy_(0, k, fid.reshape(1, -1).to(trace.dtype))
            k.add_(1)

        hook = None
        if callback is not None:
            def hook(i):
                return bool(callback(i, {"x": pb.from_net(x.clone()), "loss": float(trace[i].mean())}))
        done = run_steps(step, n, pb.device, use_graph=graphed, warmup=self.warmup, hook=hook)
        history = {"loss": trace[:done].mean(1).tolist()}
        info = dict(method="unfolding", steps=n, sigmas=self.sigmas, gamma=self.gamma.tolist(),
                    tau=self.tau.tolist(), cuda_graph=graphed, seed=self.seed, device=str(pb.device),
                    runtime_s=time.perf_counter() - t0)
        return SolveResult(x=pb.from_net(x), history=history, info=info)

    def train(self, data=True, op=None, *, epochs: int = 1, lr: float = 1e-2, noise_std: float = 0.0,
              seed: int | None = None):
        """Fit γ, τ (and the denoiser if ``train_denoiser``) with Adam on ``mean ‖x_out − x_true‖²``.

        ``data`` is an iterable of ``(x_true, y, op)`` triples, ``(x_true, y)`` pairs (with ``op``),
        or bare ``x_true`` tensors (``y = op(x_true) + noise_std * n`` is simulated, seeded by
        ``seed``). Images in the operator's layout. Returns the per-batch losses. (With a boolean
        argument this is ``nn.Module.train``, which switches the training flag.)
        """
        if isinstance(data, bool):
            return nn.Module.train(self, data)
        check_count(epochs=epochs)
        check_positive(lr=lr)
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        opt = torch.optim.Adam(list(self.parameters()), lr=lr)
        losses = []
        for _ in range(int(epochs)):
            for item in data:
                x_true, y, item_op = self._unpack(item, op, noise_std, gen)
                pb = self.problem(y, item_op)
                with torch.enable_grad():
                    x = pb.from_net(self.unfold(pb))
                    target = x_true.to(device=x.device, dtype=x.dtype)
                    loss = (x - target).abs().pow(2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        return losses

    @staticmethod
    def _unpack(item, op, noise_std: float, gen: torch.Generator):
        if isinstance(item, torch.Tensor):
            if op is None:
                raise ValueError("bare x_true items need op= to simulate measurements")
            with torch.no_grad():
                y = op(item)
                if noise_std > 0:
                    n = torch.randn(y.shape, generator=gen, dtype=y.real.dtype if y.is_complex() else y.dtype)
                    y = y + noise_std * n.to(y.device)
            return item, y, op
        item = tuple(item)
        if len(item) == 3:
            return item
        if len(item) == 2 and op is not None:
            return item[0], item[1], op
        raise ValueError("training items must be x_true, (x_true, y) with op=, or (x_true, y, op)")
