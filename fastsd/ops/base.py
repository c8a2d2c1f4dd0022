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

Batch convention: dimension 0 of ``x`` and ``y`` indexes independent problems.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearOperator", "batch_dot", "conjugate_gradient"]


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real part of <a, b> per batch element, shape (B,)."""
    prod = a.conj() * b if a.is_complex() else a * b
    return prod.real.reshape(a.shape[0], -1).sum(1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


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
        x = x + _bcast(alpha, x) * p
        r = r - _bcast(alpha, r) * ap
        rs_new = batch_dot(r, r)
        p = r + _bcast(rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), p) * p
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
        return _bcast(g_loss, grad).to(grad.dtype) * grad, None, None


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
            v = v / _bcast(batch_dot(v, v).sqrt().clamp_min(1e-30), v)
            w = self.normal(v)
            lam = batch_dot(v, w)
            v = w
        return lam.clamp_min(0).sqrt()
