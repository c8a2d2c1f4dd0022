"""What the diffusion-style and seed-optimising solvers share.

* Problem set-up: :class:`Problem` checks ``y`` against the operator, fixes device/dtype and a
  seeded generator, and converts between the operator's image layout and the *network layout*
  (:mod:`fastsd.solvers.layout`, the same conversion SDI uses; one or two spatial dims here).
  Denoisers ``D(x, sigma)`` and networks always see the network layout.
* The DDIM step (``eta = 1`` is the DDPM ancestral step) and denoising a VP state with a
  ``D(x, sigma)`` denoiser (schedules: :mod:`fastsd.solvers.schedules`).
* :class:`SeedSolver` (seed, device, dtype) and the argument checks every solver uses.
* :func:`run_steps`: repeat a fixed step through :class:`fastsd.graphs.step_graph.StepGraph`
  (CUDA-graph replays on CUDA, a plain loop on CPU), with an optional per-step host hook.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fastsd._checks import FLOAT_DTYPES, check_finite, check_problem
from fastsd.graphs.step_graph import StepGraph
from fastsd.solvers.layout import NetLayout
from fastsd.solvers.schedules import ve_sigma

__all__ = [
    "Problem",
    "SeedSolver",
    "denoise_vp",
    "ddim_step",
    "call_denoiser",
    "run_steps",
]



# ---------------------------------------------------------------------------------------------
# problem set-up and layouts


class Problem:
    """One call's measurement, operator, device, dtype, RNG and layout conversions.

    ``x_like`` (``op.adjoint(y)``) fixes the image shape. Images are ``(B, n)``, ``(B, C, n)`` or
    ``(B, C, H, W)``; the network layout adds a channel to ``(B, n)`` and turns each complex channel
    into a (re, im) pair of real channels (the convention of the SDI solver). The conversion is a
    linear isometry, so gradients and projections carry over unchanged.
    """

    def __init__(self, y, op, *, device=None, dtype=None, seed: int = 0):
        y = check_problem(y, op, dtype)
        if not isinstance(op, nn.Module):
            raise ValueError(f"op must be a fastsd LinearOperator, got {type(op).__name__}")
        self.device = torch.device(device) if device is not None else y.device
        op = op.to(self.device)
        y = op.check_measurement(y.to(self.device))
        check_finite("y", y)
        with torch.no_grad():
            x_like = op.adjoint(y)
        if x_like.ndim > 4:
            raise ValueError(f"images must be (B, n), (B, C, n) or (B, C, H, W); op.adjoint(y) has shape {tuple(x_like.shape)}")
        self.layout = NetLayout(x_like)
        real = x_like.real.dtype if x_like.is_complex() else x_like.dtype
        self.dtype = dtype if dtype is not None else (real if real in (torch.float32, torch.float64) else torch.float32)
        if self.dtype not in FLOAT_DTYPES:
            raise ValueError(f"dtype must be a real floating dtype, got {self.dtype}")
        self.op, self.y = op, y
        self.batch = x_like.shape[0]
        self.seed = int(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.net_shape = self.layout.net_shape

    # -- layouts --------------------------------------------------------------------------------
    def to_net(self, x: torch.Tensor) -> torch.Tensor:
        """Image layout -> real network layout in the solver dtype."""
        return self.layout.to_net(x).to(self.dtype)

    def from_net(self, u: torch.Tensor) -> torch.Tensor:
        """Network layout -> the operator's image layout and dtype."""
        return self.layout.from_net(u)

    # -- operator in network layout ---------------------------------------------------------
    def fidelity(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``‖A x − y‖²`` per problem and its gradient ``2 A^H (A x − y)``, both for ``u = to_net(x)``."""
        loss, grad = self.op.fidelity(self.from_net(u), self.y)
        return loss, self.to_net(grad)

    def fidelity_loss(self, u: torch.Tensor) -> torch.Tensor:
        """Differentiable ``‖A x − y‖²`` per problem, shape (B,)."""
        return self.op.fidelity_loss(self.from_net(u), self.y)

    def project(self, u: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.to_net(self.op.project(self.from_net(u), self.y if y is None else y))

    def prox_l2(self, u: torch.Tensor, gamma: float) -> torch.Tensor:
        return self.to_net(self.op.prox_l2(self.from_net(u), self.y, gamma))

    def adjoint_y(self) -> torch.Tensor:
        with torch.no_grad():
            return self.to_net(self.op.adjoint(self.y))

    def pinv_y(self) -> torch.Tensor:
        with torch.no_grad():
            return self.to_net(self.op.pinv(self.y))

    def lipschitz(self, iters: int = 30) -> float:
        """``‖A‖²`` (largest over the batch), the Lipschitz constant of ``∇ ½‖A x − y‖²``."""
        x_like = self.from_net(torch.zeros(self.net_shape, device=self.device, dtype=self.dtype))
        return float(self.op.norm(x_like, iters=iters, seed=self.seed).max()) ** 2

    # -- randomness -------------------------------------------------------------------------
    def randn(self, shape=None) -> torch.Tensor:
        shape = self.net_shape if shape is None else shape
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=self.dtype)

    def rand(self, shape) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.device, dtype=self.dtype)


def call_denoiser(denoiser, u: torch.Tensor, sigma: float) -> torch.Tensor:
    """``denoiser(u, sigma)`` with a shape check that names the problem."""
    out = denoiser(u, sigma)
    if not isinstance(out, torch.Tensor) or out.shape != u.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"denoiser(x, sigma) must return a tensor of the input's shape {tuple(u.shape)}, got {got}")
    return out.to(u.dtype)


# ---------------------------------------------------------------------------------------------
# DDPM / DDIM


def denoise_vp(denoiser, x_t: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """``x0_hat`` from a VP state: ``D(x_t / sqrt(alpha_bar), sigma)``."""
    return call_denoiser(denoiser, x_t / math.sqrt(alpha_bar), ve_sigma(alpha_bar))


def ddim_step(x_t, x0_hat, ab_t: float, ab_prev: float, eta: float = 0.0, noise=None) -> torch.Tensor:
    """One DDIM step from timestep t to the previous one (``ab_prev = 1`` at the end).

    ``eta = 1`` gives the DDPM ancestral step (posterior mean plus noise of variance
    ``beta_t (1 - ab_prev) / (1 - ab_t)``); ``eta = 0`` is deterministic.
    """
    eps = (x_t - math.sqrt(ab_t) * x0_hat) / math.sqrt(1.0 - ab_t)
    var = eta**2 * (1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)
    out = math.sqrt(ab_prev) * x0_hat + math.sqrt(max(1.0 - ab_prev - var, 0.0)) * eps
    if var > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        out = out + math.sqrt(var) * noise
    return out


# ---------------------------------------------------------------------------------------------
# what every solver class shares


class SeedSolver:
    """Options every solver honours: ``seed`` (same seed -> identical result on one device),
    ``device`` (default: the device of ``y``; the operator is moved there) and ``dtype`` of the
    iterate (default: the real dtype of ``op.adjoint(y)``, float32 for half inputs)."""

    def __init__(self, *, seed: int = 0, device=None, dtype: torch.dtype | None = None):
        if int(seed) != seed:
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed, self.device, self.dtype = int(seed), device, dtype

    def problem(self, y, op) -> Problem:
        """The problem on the solver's device; a module denoiser (prior) moves there with it, once,
        so that no host-device copy happens inside a step (or a CUDA graph capture)."""
        pb = Problem(y, op, device=self.device, dtype=self.dtype, seed=self.seed)
        denoiser = getattr(self, "denoiser", None)
        if isinstance(denoiser, nn.Module):
            denoiser.to(pb.device)
        return pb

    def __call__(self, y, op, **kw):
        return self.solve(y, op, **kw)


def notify(callback, it: int, pb: Problem, u: torch.Tensor, loss: float, history: dict) -> bool:
    """Record ``loss`` and call ``callback(it, {"x", "loss"})``; True means stop."""
    history.setdefault("loss", []).append(loss)
    if callback is None:
        return False
    return bool(callback(it, {"x": pb.from_net(u.detach()), "loss": loss}))


def check_positive(**values) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")


def check_count(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


# ---------------------------------------------------------------------------------------------
# repeating a fixed step


def run_steps(step, n: int, device, *, use_graph: bool, warmup: int = 3, hook=None) -> int:
    """Call the zero-argument ``step`` ``n`` times (CUDA-graph replays when ``use_graph``).

    ``step`` keeps its state in tensors updated in place (see :class:`StepGraph`). ``hook(i)``, if
    given, runs on the host after step ``i`` (a sync per step: callbacks, early stopping); returning
    True stops. Returns the number of steps run.
    """
    runner = StepGraph(step, device, use_graph=use_graph, warmup=warmup)
    if hook is None:
        runner.run(n)
        return n
    for i in range(n):
        runner.run(1)
        if hook(i):
            return i + 1
    return n
