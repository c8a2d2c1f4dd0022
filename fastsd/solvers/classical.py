"""Classical baselines on the same operators: zero-filled ``A^H y``, CG-SENSE and L1-wavelet
compressed sensing — what an MRI reader compares a learned or self-supervised solver with.

* ``zero-filled``: ``A^H y`` (for MRI the coil-combined zero-filled image).
* ``cg-sense``: ``op.pinv(y)``, for MRI conjugate gradient on the normal equations ``A^H A x = A^H y``
  from ``x = 0`` (Pruessmann et al. 2001), i.e. the minimum-norm least-squares image.
* ``l1-wavelet``: ``argmin_x ½‖A x − y‖² + λ Σ|detail coefficients of W x|`` by monotone FISTA
  (Beck & Teboulle 2009), ``W`` an orthogonal Daubechies wavelet transform (PyWavelets,
  periodized: ``W^T W = I`` for sizes divisible by ``2**levels``). Every real channel
  of the network layout is transformed on its own (complex images: real and imaginary parts). The
  approximation (coarsest low-pass) coefficients are not penalised.

The weight rule uses the measurements only: ``λ = lam_rel · max|detail coefficients of W A^H y|``,
where ``A^H y`` is the gradient of the data term at ``x = 0`` (so ``lam_rel`` is scale-free and
``λ`` follows the data's scale), unless an absolute ``lam`` is given.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from fastsd.solvers.base import Callback, SolveResult, register_solver
from fastsd.solvers.diffusion import SeedSolver, check_count, notify

__all__ = ["ZeroFilled", "CGSense", "L1Wavelet", "Wavelet"]

BASELINES = ("zero-filled", "cg-sense", "l1-wavelet")
"""The classical methods by name (CLI ``--compare``)."""


def _result(pb, x: torch.Tensor, t0: float, method: str, history: dict | None = None, **info) -> SolveResult:
    return SolveResult(x=x, history=history or {}, info=dict(method=method, device=str(pb.device), runtime_s=time.perf_counter() - t0,
                                      **info))


def _finish(pb, x: torch.Tensor, t0: float, method: str, callback, **info) -> SolveResult:
    """The result of a one-shot method, its data misfit ``‖A x − y‖²`` as the loss (and one callback)."""
    history: dict[str, list[float]] = {}
    notify(callback, info.get("iterations", 1) - 1, pb, pb.to_net(x), float(pb.fidelity(pb.to_net(x))[0].mean()),
           history)
    return _result(pb, x, t0, method, history, **info)


@register_solver("zero-filled")
class ZeroFilled(SeedSolver):
    """``A^H y`` (MRI: the coil-combined zero-filled image). ``seed`` is accepted and unused."""

    def solve(self, y: torch.Tensor, op, *, callback: Callback | None = None) -> SolveResult:
        """``callback(0, {"x", "loss"})`` once, with the result."""
        t0 = time.perf_counter()
        pb = self.problem(y, op)
        with torch.no_grad():
            return _finish(pb, pb.op.adjoint(pb.y), t0, self.method, callback)


@register_solver("cg-sense")
class CGSense(SeedSolver):
    """CG-SENSE: ``op.pinv(y, iters=iterations)`` — conjugate gradient on the normal equations for
    multi-coil MRI (and the generic operators), the closed form where the operator has one."""

    def __init__(self, *, iterations: int = 50, **common):
        super().__init__(**common)
        check_count(iterations=iterations)
        self.iterations = int(iterations)

    def solve(self, y: torch.Tensor, op, *, callback: Callback | None = None) -> SolveResult:
        """``callback(iterations - 1, {"x", "loss"})`` once, with the result."""
        t0 = time.perf_counter()
        pb = self.problem(y, op)
        with torch.no_grad():
            x = pb.op.pinv(pb.y, iters=self.iterations)
            return _finish(pb, x, t0, self.method, callback, iterations=self.iterations)


class Wavelet:
    """Orthogonal multi-level Daubechies transform (PyWavelets, ``mode='periodization'``) of real
    tensors ``(B, C, n)`` or ``(B, C, H, W)``, channels transformed independently.

    Periodization keeps the transform orthogonal (``W^T W = I``) when every spatial size is divisible
    by ``2**levels``; ``levels=None`` takes the most such levels, at most 4, that the filter length
    allows. The transform runs in float64 on the host (NumPy); coefficients come back as tensors on
    the input's device."""

    def __init__(self, spatial: tuple[int, ...], wavelet: str = "db4", levels: int | None = None):
        try:
            import pywt
        except ImportError as e:
            raise ImportError("method 'l1-wavelet' needs PyWavelets (pip install 'fastsd[baselines]')") from e
        if len(spatial) not in (1, 2):
            raise ValueError(f"l1-wavelet handles 1-D and 2-D images, got spatial shape {tuple(spatial)}")
        try:
            filt = pywt.Wavelet(wavelet)
        except ValueError:
            raise ValueError(f"unknown wavelet {wavelet!r}; use a PyWavelets name such as 'haar', 'db2', 'db4'") from None
        if not filt.orthogonal:
            raise ValueError(f"wavelet {wavelet!r} is not orthogonal")
        dyadic = min((n & -n).bit_length() - 1 for n in spatial)  # 2**dyadic divides every size
        most = min(dyadic, pywt.dwt_max_level(min(spatial), filt.dec_len))
        if most < 1:
            raise ValueError(f"l1-wavelet needs even spatial sizes of at least {2 * (filt.dec_len - 1)} for "
                             f"wavelet {wavelet!r}, got {tuple(spatial)}")
        levels = min(4, most) if levels is None else int(levels)
        if not 1 <= levels <= most:
            raise ValueError(f"levels must be in 1..{most} for spatial size {tuple(spatial)} and wavelet "
                             f"{wavelet!r}, got {levels}")
        self.spatial, self.levels, self.name = tuple(spatial), levels, wavelet
        self._axes = tuple(range(-len(spatial), 0))

    def forward(self, u: torch.Tensor) -> list:
        """Coefficients ``[approx, details_coarsest, ..., details_finest]`` of every channel, each
        detail entry a tuple of tensors of shape ``(B * C, ...)``."""
        import pywt

        a = u.detach().reshape((-1,) + self.spatial).cpu().double().numpy()
        c = pywt.wavedecn(a, self.name, mode="periodization", level=self.levels, axes=self._axes)
        t = lambda v: torch.from_numpy(v).to(device=u.device, dtype=u.dtype)  # noqa: E731
        return [t(c[0])] + [tuple(t(d[k]) for k in sorted(d)) for d in c[1:]]

    def inverse(self, coeffs: list, like: torch.Tensor) -> torch.Tensor:
        """The image of ``coeffs`` (as :meth:`forward` returns them) in ``like``'s shape."""
        import pywt

        keys = sorted(pywt.wavedecn(np.zeros((2,) * len(self.spatial)), "haar", level=1)[1])
        n = lambda v: v.detach().cpu().double().numpy()  # noqa: E731
        c = [n(coeffs[0])] + [dict(zip(keys, map(n, d))) for d in coeffs[1:]]
        x = pywt.waverecn(c, self.name, mode="periodization", axes=self._axes)
        return torch.from_numpy(x).to(device=like.device, dtype=like.dtype).reshape(like.shape)

    @staticmethod
    def details(coeffs: list, batch: int) -> torch.Tensor:
        """All detail coefficients per problem, flattened, shape (B, N)."""
        return torch.cat([t.reshape(batch, -1) for d in coeffs[1:] for t in d], dim=1)


def soft(t: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
    """Soft threshold ``sign(t) max(|t| − thresh, 0)``; ``thresh`` broadcasts per problem."""
    return torch.sign(t) * (t.abs() - thresh).clamp_min(0)


@register_solver("l1-wavelet")
class L1Wavelet(SeedSolver):
    """L1-wavelet compressed sensing by monotone FISTA.

    Args:
        iterations: FISTA iterations (each one forward + adjoint for the gradient and one forward for
            the monotone objective check).
        lam_rel: λ as a fraction of ``max|detail coefficients of W A^H y|`` (per problem). The default
            1e-3 was chosen on noise-free inpainting/MRI of bundled images (camera, moon, coins); for
            noise-free multi-coil MRI 1e-4 did better there.
        lam: absolute λ (overrides ``lam_rel``); ``0`` gives the minimum-norm least-squares image
            (``cg-sense`` converged).
        wavelet, levels: the orthogonal wavelet (pywt name) and number of levels (None: up to 4).
        seed, device, dtype: see :class:`~fastsd.solvers.diffusion.SeedSolver` (the method is
            deterministic).
    """

    def __init__(self, *, iterations: int = 200, lam_rel: float = 1e-3, lam: float | None = None,
                 wavelet: str = "db4", levels: int | None = None, **common):
        super().__init__(**common)
        check_count(iterations=iterations)
        for name, v in (("lam_rel", lam_rel), ("lam", lam)):
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if levels is not None:
            check_count(levels=levels)
        self.iterations, self.lam_rel, self.lam = int(iterations), float(lam_rel), lam
        self.wavelet, self.levels = wavelet, levels

    def solve(self, y: torch.Tensor, op, *, callback: Callback | None = None) -> SolveResult:
        """Run FISTA from ``x = 0``; ``callback(i, {"x", "loss"})`` after every iteration (``loss``:
        the objective, mean over problems). ``history['loss']``, that objective, is non-increasing."""
        t0 = time.perf_counter()
        pb = self.problem(y, op)
        B = pb.batch
        W = Wavelet(pb.net_shape[2:], self.wavelet, self.levels)
        ndim = len(pb.net_shape)
        with torch.no_grad():
            if self.lam is not None:
                lam = torch.full((B,), float(self.lam), device=pb.device, dtype=pb.dtype)
            else:
                lam = self.lam_rel * W.details(W.forward(pb.adjoint_y()), B).abs().amax(1)
            L = max(pb.lipschitz(), torch.finfo(pb.dtype).tiny)
            thresh = (lam / L).reshape(-1, 1)

            def prox(u):  # soft threshold of the detail coefficients, per problem
                c = W.forward(u)
                shrunk = [tuple(soft(t.reshape(B, -1), thresh).reshape(t.shape) for t in d) for d in c[1:]]
                return W.inverse([c[0]] + shrunk, u)

            def objective(u):
                fid = pb.fidelity(u)[0].to(pb.dtype)
                return 0.5 * fid + lam * W.details(W.forward(u), B).abs().sum(1)

            x = torch.zeros(pb.net_shape, device=pb.device, dtype=pb.dtype)
            v, t, f_x = x, 1.0, objective(x)
            history: dict[str, list[float]] = {}
            done = 0
            for i in range(self.iterations):
                grad = pb.fidelity(v)[1] / 2
                z = prox(v - grad / L)
                f_z = objective(z)
                accept = (f_z <= f_x).reshape((-1,) + (1,) * (ndim - 1))
                x_new = torch.where(accept, z, x)
                f_x = torch.minimum(f_z, f_x)
                t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
                v = x_new + (t / t_new) * (z - x_new) + ((t - 1) / t_new) * (x_new - x)
                x, t = x_new, t_new
                done = i + 1
                if notify(callback, i, pb, x, float(f_x.mean()), history):
                    break
        return _result(pb, pb.from_net(x), t0, self.method, history, iterations=done, lam=lam.tolist(), lam_rel=self.lam_rel,
                       wavelet=self.wavelet, levels=W.levels, lipschitz=L)
