"""Dense matrix operators for 1-D problems: compressed sensing (y = A x, A Gaussian m × n) and
radar direction finding (complex steering matrix, real non-negative angle spectrum).

``x`` is (B, n) and ``y`` is (B, m), batch dim 0 = independent problems. The matrices are small,
so ``prox_l2`` and ``pinv`` use exact factorisations, computed once in double precision and cached
per (γ, device, dtype).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fastsd._checks import check_finite, check_tensor
from fastsd.functional.fidelity import residual_loss
from fastsd.ops.base import CheckedOperator, as_gamma

__all__ = ["MatrixOp", "compressed_sensing_matrix", "radar_steering_matrix"]

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}
_CACHE_SIZE = 32


class MatrixOp(CheckedOperator):
    """A x for a dense real or complex (m, n) ``matrix``.

    With a complex matrix the unknown is complex by default. ``real_input=True`` declares a real
    unknown (e.g. a radar angle spectrum): A is then the real-linear map Rⁿ → Cᵐ, its adjoint is
    Re(Aᴴ y), and prox/pinv/norm are those of the stacked real matrix [Re A; Im A], which is what
    a real network output needs (real gradients, real least-squares solutions).
    Inputs of either precision are accepted; the matrix is cast to the input's precision.
    """

    def __init__(self, matrix: torch.Tensor, real_input: bool = False):
        super().__init__()
        check_tensor("matrix", matrix, ndim=2,
                     dtypes=(torch.float32, torch.float64, torch.complex64, torch.complex128))
        check_finite("matrix", matrix)
        self.register_buffer("matrix", matrix.detach().clone())
        self.real_input = bool(real_input) or not matrix.is_complex()
        self._cache: dict = {}

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    # -- validation ----------------------------------------------------------------------------
    def _expect(self, domain: bool) -> tuple[torch.dtype, ...]:
        """Allowed dtypes of an x (``domain``) or a y."""
        if domain and self.real_input or not domain and not self.matrix.is_complex():
            return (torch.float32, torch.float64)
        return (torch.complex64, torch.complex128)

    def _check(self, name: str, t: torch.Tensor) -> torch.Tensor:
        domain = name != "y"  # an image-domain tensor (x, x0, ...) or the measurement
        check_tensor(name, t, ndim=2, device=self.matrix.device)
        if domain and not self.real_input and not t.is_complex():
            raise ValueError(f"{name} has dtype {t.dtype} but this operator's matrix is complex "
                             "(use real_input=True for a real unknown)")
        check_tensor(name, t, dtypes=self._expect(domain))
        size = self.matrix.shape[1] if domain else self.matrix.shape[0]
        if t.shape[1] != size:
            raise ValueError(f"{name} has shape {tuple(t.shape)}; expected (B, {size}) for a "
                             f"{self.matrix.shape[0]} x {self.matrix.shape[1]} matrix")
        return t

    def _pair(self, x, y, xname="x"):
        self._check(xname, x)
        self.check_measurement(y)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{xname} has batch size {x.shape[0]} but y has {y.shape[0]}")
        xreal = x.real.dtype if x.is_complex() else x.dtype
        yreal = y.real.dtype if y.is_complex() else y.dtype
        if xreal != yreal:
            raise ValueError(f"{xname} ({x.dtype}) and y ({y.dtype}) must have the same precision")

    # -- operator ------------------------------------------------------------------------------
    def _A(self, like: torch.Tensor) -> torch.Tensor:
        real = like.real.dtype if like.is_complex() else like.dtype
        return self.matrix.to(_COMPLEX[real] if self.matrix.is_complex() else real)

    def forward(self, x):
        self.check_input(x)
        A = self._A(x)
        return x.to(A.dtype) @ A.mT

    def adjoint(self, y):
        self.check_measurement(y, finite=False)
        out = y @ self._A(y).conj()
        return out.real if out.is_complex() and self.real_input else out

    def fidelity(self, x, y):
        """Real matrix: the fused residual loss on ``A x`` (loss and ``2 r`` in one pass), the
        gradient chained through ``Aᴴ``; complex measurements: the generic path."""
        self._pair(x, y)
        if y.is_complex():
            return super().fidelity(x, y)
        with torch.no_grad():
            loss, g = residual_loss(self.forward(x), y, validate=False)
            return loss, self.adjoint(g)

    def _real_stack(self, A: torch.Tensor) -> torch.Tensor:
        """The matrix acting on the unknown's own field (stacked [Re A; Im A] for real_input)."""
        return torch.cat([A.real, A.imag], 0) if A.is_complex() and self.real_input else A

    def _cached(self, key, make):
        A = self.matrix
        key = key + (A.device, A.dtype, A.data_ptr(), A._version)
        if key not in self._cache:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = make()
        return self._cache[key]

    def _gram(self) -> torch.Tensor:
        """Aᴴ A (of the real stack for real_input) in double precision."""
        A = self._real_stack(self.matrix.to(torch.complex128 if self.matrix.is_complex() else torch.float64))
        return A.mH @ A

    def prox_l2(self, z, y, gamma, iters=None):
        """(I + γ Aᴴ A)⁻¹ (z + γ Aᴴ y) by a cached Cholesky factor; ``iters`` is unused.
        ``gamma`` may also be a (B,) tensor (solved per problem, not cached)."""
        self._pair(z, y, "z")
        g = as_gamma(gamma, z)
        b = z + g * self.adjoint(y)
        n = self.matrix.shape[1]
        if isinstance(g, torch.Tensor):
            gram = self._gram().to(device=b.device, dtype=b.dtype)
            M = torch.eye(n, dtype=b.dtype, device=b.device) + g.reshape(-1, 1, 1) * gram
            return torch.linalg.solve(M, b.unsqueeze(-1)).squeeze(-1)

        def factor():
            gram = self._gram()
            return torch.linalg.cholesky(torch.eye(n, dtype=gram.dtype, device=gram.device) + g * gram)

        L = self._cached(("chol", g), factor).to(b.dtype)
        return torch.cholesky_solve(b.mT, L).mT

    def _pinv_matrix(self, like):
        def make():
            return torch.linalg.pinv(self._real_stack(
                self.matrix.to(torch.complex128 if self.matrix.is_complex() else torch.float64)))

        P = self._cached(("pinv",), make)
        real = like.real.dtype if like.is_complex() else like.dtype
        return P.to(_COMPLEX[real] if P.is_complex() else real)

    def _apply_pinv(self, r):
        P = self._pinv_matrix(r)
        if self.real_input and r.is_complex():
            r = torch.cat([r.real, r.imag], 1)
        return r @ P.mT

    def pinv(self, y, iters=None):
        """Minimum-norm least-squares solution by a cached ``torch.linalg.pinv``; ``iters`` is unused."""
        self.check_measurement(y)
        return self._apply_pinv(y)

    def project(self, x, y, iters=None):
        """x − A^†(A x − y); ``iters`` is unused."""
        self._pair(x, y)
        return x - self._apply_pinv(self.forward(x) - y)


def compressed_sensing_matrix(m: int = 35, n: int = 128, seed: int = 0) -> torch.Tensor:
    """Gaussian sensing matrix with i.i.d. N(0, 1/m) entries (columns of unit expected norm);
    float32 (m, n), reproducible from ``seed``."""
    if m < 1 or n < 1:
        raise ValueError(f"m and n must be >= 1, got {m}, {n}")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(m, n, generator=gen) / math.sqrt(m)


def radar_steering_matrix(n_antennas: int, angles_deg: Sequence[float] | torch.Tensor,
                          spacing: float = 0.5) -> torch.Tensor:
    """Uniform linear array steering vectors as columns: A[k, j] = exp(−2πi · spacing · k · sin θ_j)
    for antenna k = 0 … n_antennas − 1 and angle θ_j (degrees); ``spacing`` in wavelengths.
    complex64 (n_antennas, len(angles_deg))."""
    if n_antennas < 1:
        raise ValueError(f"n_antennas must be >= 1, got {n_antennas}")
    if not spacing > 0:
        raise ValueError(f"spacing must be > 0 (in wavelengths), got {spacing}")
    theta = torch.deg2rad(torch.as_tensor(angles_deg, dtype=torch.float64).reshape(-1))
    if theta.numel() == 0 or not bool(torch.isfinite(theta).all()):
        raise ValueError("angles_deg must be a non-empty list of finite angles")
    k = torch.arange(n_antennas, dtype=torch.float64)
    phase = -2 * math.pi * spacing * k[:, None] * torch.sin(theta)[None, :]
    return torch.polar(torch.ones_like(phase), phase).to(torch.complex64)
