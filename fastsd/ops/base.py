"""The LinearOperator protocol every solver talks to.

An operator is an ``nn.Module`` (so masks, kernels and coil maps are buffers that follow
``.to(device)``) implementing ``forward`` (A x) and ``adjoint`` (A^H y). Everything else has a
generic reference implementation here that subclasses override with fused kernels:

* ``normal(x)``            A^H A x
* ``fidelity(x, y)``       per-problem ``‖A x − y‖²`` of shape (B,) and its gradient 2 A^H (A x − y),
                           in one pass where a fused kernel exists
* ``fidelity_loss(x, y)``  the same value as a differentiable tensor whose backward is the
                           precomputed gradient (no second trip through the operator)
* ``prox_l2(z, y, γ)``     argmin_x γ/2 ‖A x − y‖² + ½ ‖x − z‖²   (soft data consistency)
* ``project(x, y)``        x − A^†(A x − y), the closest point with A x = y (hard data consistency)
* ``pinv(y)``              minimum-norm solution A^† y
* ``norm(x_like)``         ‖A‖₂ by power iteration

:class:`CheckedOperator` validates images and measurements through one hook;
:class:`DiagonalOperator` derives everything from a diagonal in an orthonormal basis.

Batch convention: dimension 0 of ``x`` and ``y`` indexes independent problems.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

from fastsd._checks import check_finite, check_shape
from fastsd._utils import capturing, per_problem

__all__ = ["LinearOperator", "CheckedOperator", "DiagonalOperator", "batch_dot", "conjugate_gradient",
           "check_measurement_finite", "as_gamma"]


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real part of <a, b> per batch element, shape (B,)."""
    prod = a.conj() * b if a.is_complex() else a * b
    return prod.real.reshape(a.shape[0], -1).sum(1)


def conjugate_gradient(apply, b: torch.Tensor, x0: torch.Tensor | None = None, iters: int = 50, tol: float = 1e-7):
    """Solve ``apply(x) = b`` for a Hermitian positive (semi-)definite ``apply``, batched over dim 0."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = batch_dot(r, r)
    stop = tol**2 * batch_dot(b, b).clamp_min(torch.finfo(rs.dtype).tiny)
    for _ in range(iters):
        if bool((rs <= stop).all()):
            break
        ap = apply(p)
        alpha = rs / batch_dot(p, ap).clamp_min(torch.finfo(rs.dtype).tiny)
        x = x + per_problem(alpha, x) * p
        r = r - per_problem(alpha, r) * ap
        rs_new = batch_dot(r, r)
        p = r + per_problem(rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), p) * p
        rs = rs_new
    return x


class _FidelityLoss(torch.autograd.Function):
    """Differentiable ‖A x − y‖² whose backward reuses the gradient computed in the forward pass."""

    @staticmethod
    def forward(x, y, op):
        loss, grad = op.fidelity(x, y)
        return loss, grad

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, g_loss, _g_grad):
        (grad,) = ctx.saved_tensors
        return per_problem(g_loss, grad).to(grad.dtype) * grad, None, None


class LinearOperator(nn.Module):
    """Base class: subclasses implement ``forward`` and ``adjoint`` and may fuse the rest."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # A x
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # A^H y
        raise NotImplementedError

    # -- validation hooks (subclasses tighten these) ------------------------------------------
    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate an image-domain tensor; raise ValueError naming the problem."""
        return x

    def check_measurement(self, y: torch.Tensor) -> torch.Tensor:
        """Validate a measurement tensor (shape, dtype, device, finiteness)."""
        return y

    # -- derived operations --------------------------------------------------------------------
    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^H A x."""
        return self.adjoint(self.forward(x))

    def fidelity(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-problem ``‖A x − y‖²`` (shape (B,)) and its gradient ``2 A^H (A x − y)``; no autograd."""
        with torch.no_grad():
            r = self.forward(x) - y
            loss = batch_dot(r, r)
            return loss, 2 * self.adjoint(r)

    def fidelity_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``‖A x − y‖²`` per problem, differentiable in ``x`` through the fused gradient."""
        return _FidelityLoss.apply(x, y, self)[0]

    def prox_l2(self, z: torch.Tensor, y: torch.Tensor, gamma: float, iters: int = 50) -> torch.Tensor:
        """argmin_x γ/2 ‖A x − y‖² + ½ ‖x − z‖²  (generic: conjugate gradient on I + γ A^H A)."""
        b = z + gamma * self.adjoint(y)
        return conjugate_gradient(lambda v: v + gamma * self.normal(v), b, x0=z, iters=iters)

    def pinv(self, y: torch.Tensor, iters: int = 50) -> torch.Tensor:
        """Minimum-norm solution A^† y = A^H (A A^H)^{-1} y (generic: conjugate gradient)."""
        u = conjugate_gradient(lambda v: self.forward(self.adjoint(v)), y, iters=iters)
        return self.adjoint(u)

    def project(self, x: torch.Tensor, y: torch.Tensor, iters: int = 50) -> torch.Tensor:
        """Hard data consistency: the point closest to ``x`` with A x = y, i.e. x − A^†(A x − y)."""
        return x - self.pinv(self.forward(x) - y, iters=iters)

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`pinv` (deepinv's name)."""
        return self.pinv(y)

    @torch.no_grad()
    def norm(self, x_like: torch.Tensor, iters: int = 100, seed: int = 0) -> torch.Tensor:
        """Operator norm ‖A‖₂ per problem (power iteration on A^H A), shape (B,)."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        v = torch.randn(x_like.shape, generator=gen, dtype=x_like.dtype).to(x_like.device)
        lam = torch.zeros(v.shape[0], dtype=torch.float64, device=v.device)
        for _ in range(iters):
            v = v / per_problem(batch_dot(v, v).sqrt().clamp_min(1e-30), v)
            w = self.normal(v)
            lam = batch_dot(v, w)
            v = w
        return lam.clamp_min(0).sqrt()


# -- validation shared by the concrete operators ---------------------------------------------


def check_measurement_finite(op: nn.Module, name: str, y: torch.Tensor) -> None:
    """``check_finite`` on a measurement, once per tensor and version.

    Solvers pass the same ``y`` at every iteration; re-checking would cost a host sync per step
    and cannot run inside a CUDA graph capture (skipped there: the graph was validated eagerly).
    """
    if capturing(y):
        return
    seen = getattr(op, "_finite_seen", None)
    if seen is not None and seen[0]() is y and seen[1] == y._version:
        return
    check_finite(name, y)
    op._finite_seen = (weakref.ref(y), y._version)


def as_gamma(gamma, like: torch.Tensor):
    """A step size ``γ ≥ 0`` as a float, or a tensor of shape () or (B,) in ``like``'s real
    precision, reshaped to broadcast over ``like``."""
    if isinstance(gamma, torch.Tensor):
        if gamma.ndim == 1:
            check_shape("gamma", gamma, (like.shape[0],))
        elif gamma.ndim != 0:
            raise ValueError(f"gamma must be a float, a scalar or shape (B,) tensor, got shape {tuple(gamma.shape)}")
        gamma = gamma.to(device=like.device, dtype=like.real.dtype if like.is_complex() else like.dtype)
        return per_problem(gamma, like)
    gamma = float(gamma)
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    return gamma


class CheckedOperator(LinearOperator):
    """An operator whose images and measurements pass one hook, ``_check(name, t)`` (name ``"x"``
    or ``"y"``); measurements must also be finite."""

    def _check(self, name: str, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_input(self, x):
        return self._check("x", x)

    def check_measurement(self, y, finite: bool = True):
        self._check("y", y)
        if finite:
            check_measurement_finite(self, "y", y)
        return y

    def check_pair(self, x: torch.Tensor, y: torch.Tensor, xname: str = "x") -> None:
        """Validate an (image, measurement) pair: each on its own, then that they agree in device,
        dtype and shape (``y`` must have the shape ``measurement_shape(x.shape)`` of ``A x``),
        then the finiteness of ``y``."""
        self.check_input(x)
        self.check_measurement(y, finite=False)
        if x.device != y.device:
            raise ValueError(f"{xname} is on {x.device} but y is on {y.device}")
        if x.dtype != y.dtype:
            raise ValueError(f"{xname} has dtype {x.dtype} but y has dtype {y.dtype}; they must match")
        want = self.measurement_shape(x.shape)
        if tuple(y.shape) != want:
            raise ValueError(f"y has shape {tuple(y.shape)}; expected {want} for {xname} of shape {tuple(x.shape)}")
        check_measurement_finite(self, "y", y)


class DiagonalOperator(CheckedOperator):
    """``A = V diag(s) Vᴴ`` for an orthonormal basis ``V`` (deepinv's ``DecomposablePhysics`` with
    ``U = V``): every operation is a scaling in the basis, so ``prox_l2``, ``pinv`` and ``project``
    have closed forms derived here once.

    Subclasses give :meth:`diagonal` (``None`` for ``s = 1``) and, unless the basis is the pixel
    basis, :meth:`to_basis` / :meth:`from_basis`; :meth:`pinv_diagonal` (``s⁺``) defaults to ``s``,
    exact for a 0/1 diagonal (masks). ``iters`` arguments are unused (no iterative solves).
    """

    def diagonal(self, like: torch.Tensor) -> torch.Tensor | None:
        """``s`` in ``like``'s precision, broadcastable against ``to_basis(like)``; ``None``: s = 1."""
        raise NotImplementedError

    def pinv_diagonal(self, like: torch.Tensor) -> torch.Tensor | None:
        """``s⁺``: ``1 / s`` where ``A`` keeps a component, 0 elsewhere."""
        return self.diagonal(like)

    def measurement_shape(self, x_shape) -> tuple[int, ...]:
        """Shape of ``A x`` for an image of shape ``x_shape``: the same."""
        return tuple(x_shape)

    def to_basis(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficients ``Vᴴ x``."""
        return x

    def from_basis(self, c: torch.Tensor) -> torch.Tensor:
        """The image ``V c``."""
        return c

    def _scaled(self, x: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        """``V diag(s) Vᴴ x``."""
        return x if s is None else self.from_basis(self.to_basis(x) * s)

    def forward(self, x):
        self.check_input(x)
        return self._scaled(x, self.diagonal(x))

    def adjoint(self, y):
        self.check_measurement(y, finite=False)
        s = self.diagonal(y)
        return self._scaled(y, None if s is None else s.conj())

    def normal(self, x):
        self.check_input(x)
        s = self.diagonal(x)
        return self._scaled(x, None if s is None else s.abs().square())

    def prox_l2(self, z, y, gamma, iters=None):
        """``V (Vᴴ z + γ s̄ Vᴴ y) / (1 + γ |s|²)``."""
        self.check_pair(z, y, "z")
        s, g = self.diagonal(z), as_gamma(gamma, z)
        if s is None:
            return (z + g * y) / (1 + g)
        num = self.to_basis(z) + g * s.conj() * self.to_basis(y)
        return self.from_basis(num / (1 + g * s.abs().square()))

    def pinv(self, y, iters=None):
        """``A⁺ y = V s⁺ Vᴴ y``."""
        self.check_measurement(y)
        return self._scaled(y, self.pinv_diagonal(y))

    def project(self, x, y, iters=None):
        """``x − A⁺(A x − y)``: the components ``A`` keeps (``s⁺ ≠ 0``) become ``s⁺ Vᴴ y``, exactly;
        the others stay those of ``x``."""
        self.check_pair(x, y)
        sp = self.pinv_diagonal(x)
        if sp is None:
            return y.clone()
        c = torch.where(sp != 0, self.to_basis(y) * sp, self.to_basis(x))
        return self.from_basis(c)
