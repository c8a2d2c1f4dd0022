"""Cartesian MRI forward operator ``A x = M fftnc(S x)``, single- and multi-coil, for 2-D slices
(:class:`MRI`) and 3-D volumes (:class:`MRI3D`).

:class:`MRI`: images are real (B,2,H,W) (channel 0 real, 1 imaginary); k-space is centred
complex64 (B,C,H,W) with C = 1 for single coil. The mask (H,W), or (B,H,W) per problem, and the
coil maps (C,H,W) shared or (B,C,H,W) are buffers, so ``.to(device)`` moves them.

:class:`MRI3D`: images (B,2,D,H,W), k-space (B,C,D,H,W), the centred orthonormal 3-D FFT. D is the
readout (frequency-encoding) dimension, (H, W) the two phase-encoding dimensions: a (H,W) mask
samples whole readout lines (stored as (1,H,W), broadcast over D, never expanded); a (D,H,W) or
(B,D,H,W) mask samples arbitrary 3-D points. Coil maps (C,D,H,W) or (B,C,D,H,W).

Every method runs one of the fused ``fastsd::mri_*`` ops (Triton around cuFFT on GPU, the
PyTorch reference on CPU); the ops are the same for both ranks.

Data-consistency steps in closed form where one exists:

* single coil: ``prox_l2`` is soft k-space DC ``k' = (F z + γ M y) / (1 + γ M)``, ``project`` is
  hard DC (sampled entries replaced by ``y``), ``pinv`` is ``A^H``;
* multi coil: ``prox_l2`` / ``project`` use the generic conjugate-gradient solvers of
  :class:`~fastsd.ops.base.LinearOperator` with the fused normal operator, ``pinv`` is CG on the
  normal equations (minimum-norm least squares), and :meth:`MRI.dc` is the
  coil-wise (VarNet-style) k-space DC, which is exact only for single coil.

Methods check shapes, dtypes and devices on every call (cheap, no host sync); the finiteness of
``y`` is checked by :meth:`MRI.check_measurement`, which solvers call once per solve.
"""
from __future__ import annotations

import math

import numpy as np
import torch

import fastsd.functional.mri  # noqa: F401  (registers the fastsd::mri_* ops)
from fastsd.functional.mri import validate_mri_args
from fastsd.ops.base import LinearOperator, conjugate_gradient
from fastsd.reference.mri import ifftnc

__all__ = ["MRI", "MRI3D", "estimate_coil_maps", "low_resolution_maps", "coil_combined"]

_ops = torch.ops.fastsd


def _tensor(t) -> torch.Tensor:
    return t if isinstance(t, torch.Tensor) else torch.as_tensor(np.asarray(t))


class MRI(LinearOperator):
    """Masked centred-FFT MRI operator with optional coil sensitivity maps (2-D slices).

    Args:
        mask: 0/1 sampling mask (H,W) or (B,H,W) (tensor or array; stored as float32).
        smaps: coil maps complex (C,H,W) or (B,C,H,W) (stored as complex64); ``None`` = single coil.
    """

    spatial_dims = 2

    def __init__(self, mask, smaps=None):
        super().__init__()
        nd = self.spatial_dims
        mask = _tensor(mask)
        if mask.ndim not in (nd, nd + 1):
            want = "(H, W) or (B, H, W)" if nd == 2 else "(H, W), (D, H, W) or (B, D, H, W)"
            raise ValueError(f"mask must have shape {want}, got {tuple(mask.shape)}")
        if mask.is_complex():
            raise ValueError("mask must be real (0/1), got a complex tensor")
        mask = mask.to(torch.float32).contiguous()
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must contain only 0 and 1")
        if smaps is not None:
            smaps = _tensor(smaps)
            if not smaps.is_complex():
                raise ValueError(f"smaps must be complex, got dtype {smaps.dtype}")
            smaps = smaps.to(device=mask.device, dtype=torch.complex64).contiguous()
        validate_mri_args(mask=mask, smaps=smaps, ndim=nd)
        self.register_buffer("mask", mask)
        self.register_buffer("smaps", smaps)

    def select(self, index) -> MRI:
        """The operator of problems ``index`` (a list of batch indices) of a batched operator:
        per-problem masks and coil maps are indexed, shared ones kept."""
        nd = self.spatial_dims
        mask = self.mask[index] if self.mask.ndim == nd + 1 else self.mask
        smaps = self.smaps[index] if self.smaps is not None and self.smaps.ndim == nd + 2 else self.smaps
        return type(self)(mask, smaps)

    # -- properties ------------------------------------------------------------------------------
    @property
    def img_size(self) -> tuple:
        """Spatial image size, (H, W) or (D, H, W); a dimension left open by a broadcast (size-1)
        mask dimension and no coil maps (the readout of a single-coil :class:`MRI3D` with a (H,W)
        mask: any length works) is ``None``."""
        nd = self.spatial_dims
        if self.smaps is not None:
            return tuple(self.smaps.shape[-nd:])
        return tuple(n if n > 1 else None for n in self.mask.shape[-nd:])

    @property
    def n_coils(self) -> int:
        return 1 if self.smaps is None else self.smaps.shape[-self.spatial_dims - 1]

    @property
    def single_coil(self) -> bool:
        return self.smaps is None

    def extra_repr(self) -> str:
        rate = float(self.mask.mean())
        return f"img_size={self.img_size}, n_coils={self.n_coils}, sampled={rate:.3f}"

    # -- validation ------------------------------------------------------------------------------
    def _validate(self, **kw) -> None:
        validate_mri_args(mask=self.mask, smaps=self.smaps, ndim=self.spatial_dims, **kw)

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        self._validate(x=x)
        return x

    def check_measurement(self, y: torch.Tensor) -> torch.Tensor:
        self._validate(y=y, finite=True)
        return y

    def _check_pair(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._validate(x=x, y=y, finite=False)

    # -- operator --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A x: (B,2,*S) -> complex64 (B,C,*S)."""
        self.check_input(x)
        return _ops.mri_forward(x, self.mask, self.smaps)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^H y: complex64 (B,C,*S) -> float32 (B,2,*S)."""
        self._validate(y=y, finite=False)
        return _ops.mri_adjoint(y, self.mask, self.smaps)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^H A x (fused)."""
        self.check_input(x)
        return _ops.mri_normal(x, self.mask, self.smaps)

    def zero_filled(self, y: torch.Tensor) -> torch.Tensor:
        """Zero-filled (coil-combined) reconstruction A^H y."""
        return self.adjoint(y)

    def fidelity(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-problem ``‖M (F S x − y)‖²`` (B,) and its gradient ``2 A^H (A x − y)``, one fused pass."""
        self._check_pair(x, y)
        with torch.no_grad():
            return _ops.mri_fidelity(x, y, self.mask, self.smaps)

    def fidelity_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The fused loss as a differentiable tensor (backward = g · precomputed gradient)."""
        self._check_pair(x, y)
        return _ops.mri_fidelity(x, y, self.mask, self.smaps)[0]

    # -- data consistency ------------------------------------------------------------------------
    def dc(self, x: torch.Tensor, y: torch.Tensor, lam: float = math.inf) -> torch.Tensor:
        """Coil-wise k-space DC ``S^H F^H((1−M) F S x + M (F S x + λ y)/(1+λ))``; λ = inf is hard."""
        self._validate(x=x, y=y, lam=lam, finite=False)
        return _ops.mri_dc(x, y, self.mask, self.smaps, float(lam))

    def prox_l2(self, z: torch.Tensor, y: torch.Tensor, gamma: float, iters: int = 50) -> torch.Tensor:
        """argmin_x γ/2 ‖A x − y‖² + ½ ‖x − z‖²: closed form for single coil, CG otherwise."""
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if self.single_coil:
            return self.dc(z, y, lam=float(gamma))
        self._check_pair(z, y)
        return super().prox_l2(z, y, gamma, iters=iters)

    def project(self, x: torch.Tensor, y: torch.Tensor, iters: int = 50) -> torch.Tensor:
        """Closest point with A x = y: hard DC for single coil, CG otherwise."""
        if self.single_coil:
            return self.dc(x, y)
        self._check_pair(x, y)
        return super().project(x, y, iters=iters)

    def pinv(self, y: torch.Tensor, iters: int = 50) -> torch.Tensor:
        """Minimum-norm solution A^† y (= A^H y for single coil, since A A^H = M)."""
        if self.single_coil:
            return self.adjoint(y)
        # CG on the normal equations A^H A u = A^H y from u = 0 converges to the minimum-norm
        # least-squares solution whether the coils over- or under-determine the image
        return conjugate_gradient(self.normal, self.adjoint(y), iters=iters)


class MRI3D(MRI):
    """Masked centred 3-D FFT MRI operator for volumes (B,2,D,H,W), with optional coil maps.

    Args:
        mask: 0/1 mask over the phase-encoding plane (H,W) (every readout line fully sampled), or
            over the whole volume (D,H,W) or (B,D,H,W); a size-1 readout dimension, e.g.
            (B,1,H,W), broadcasts too.
        smaps: coil maps complex (C,D,H,W) or (B,C,D,H,W); ``None`` = single coil (then a (H,W)
            mask accepts volumes of any readout length).
    """

    spatial_dims = 3

    def __init__(self, mask, smaps=None):
        mask = _tensor(mask)
        super().__init__(mask[None] if mask.ndim == 2 else mask, smaps)

    # -- slice-by-slice view ---------------------------------------------------------------------
    def slices(self, y: torch.Tensor) -> tuple[torch.Tensor, MRI]:
        """The same measurements as B·D independent 2-D problems, one per readout position.

        With a phase-encoding mask (constant along the readout D), a centred 1-D inverse FFT
        along D turns ``y`` (B,C,D,H,W) into 2-D k-space (B·D,C,H,W), and slice ``b·D + d`` is
        measured by the 2-D :class:`MRI` with the same (H,W) mask and the coil maps of that
        slice, exactly (``A₃ = F_D ∘ A₂`` slice-wise). Returns ``(y_slices, op_2d)``; map 2-D
        reconstructions (B·D,2,H,W) back with :meth:`from_slices`.
        """
        self._validate(y=y, finite=False)
        if self.mask.shape[-3] != 1:
            raise ValueError("slice-by-slice reconstruction needs a mask over the phase-encoding plane "
                             f"((H, W) or (B, 1, H, W)); this mask {tuple(self.mask.shape)} varies along the readout")
        B, C, D, H, W = y.shape
        hybrid = torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(y, dim=2), dim=2, norm="ortho"), dim=2)
        y2 = hybrid.transpose(1, 2).reshape(B * D, C, H, W)
        m = self.mask
        m2 = m[0] if m.ndim == 3 or m.shape[0] == 1 else m[:, 0].repeat_interleave(D, 0)
        s2 = None
        if self.smaps is not None:
            s = self.smaps
            s2 = s.transpose(0, 1).repeat(B, 1, 1, 1) if s.ndim == 4 else s.transpose(1, 2).reshape(B * D, C, H, W)
        return y2.contiguous(), MRI(m2, s2)

    @staticmethod
    def from_slices(x: torch.Tensor, batch: int = 1) -> torch.Tensor:
        """2-D slice images (B·D,2,H,W) from :meth:`slices` back to volumes (B,2,D,H,W)."""
        if x.ndim != 4 or x.shape[1] != 2 or x.shape[0] % batch:
            raise ValueError(f"expected slices (B*D, 2, H, W) for batch {batch}, got shape {tuple(x.shape)}")
        return x.reshape(batch, -1, *x.shape[1:]).transpose(1, 2).contiguous()


# -- coil-map estimation (as deepinv keeps ``estimate_coil_maps`` beside its MultiCoilMRI) ---------


def low_resolution_maps(low: torch.Tensor, nd: int) -> torch.Tensor:
    """Coil maps from low-pass (windowed calibration) k-space ``low`` (C,*S) over ``nd`` spatial
    dims: the low-resolution coil images over their root-sum-of-squares, so ``Σ_c |S_c|² = 1``
    wherever the image has signal (pixels below 1e-6 of the peak RSS are left near zero)."""
    img = ifftnc(low, nd)
    rss = img.abs().square().sum(0, keepdim=True).sqrt()
    return img / rss.clamp_min(1e-6 * float(rss.max()))


def estimate_coil_maps(kspace: torch.Tensor, acs: int) -> torch.Tensor:
    """Coil maps (C,H,W) complex from multi-coil centred k-space (C,H,W) whose ``acs`` centre
    columns (the ACS lines of a 1-D Cartesian mask) are fully sampled: those columns under a Hann
    window give smooth low-resolution coil images, divided by their RSS (:func:`low_resolution_maps`).
    The maps equal the true ones up to one phase per pixel (that of the image) where coil
    sensitivities are smooth on the scale of ``W / acs`` pixels."""
    if kspace.ndim != 3 or not kspace.is_complex():
        raise ValueError(f"kspace must be complex (C, H, W), got {kspace.dtype} of shape {tuple(kspace.shape)}")
    W = kspace.shape[-1]
    if not 1 <= acs <= W:
        raise ValueError(f"acs must be between 1 and the {W} k-space columns, got {acs}")
    c0 = (W - acs + 1) // 2
    win = torch.hann_window(acs + 2, periodic=False, dtype=torch.float32, device=kspace.device)[1:-1]
    low = torch.zeros_like(kspace)
    low[..., c0 : c0 + acs] = kspace[..., c0 : c0 + acs] * win
    return low_resolution_maps(low, 2)


def coil_combined(kspace: torch.Tensor, smaps: torch.Tensor | None) -> torch.Tensor:
    """The image (1, 2, *S) of fully sampled centred k-space (C, *S): the coil images combined with
    the maps ``Σ_c conj(S_c) ifftnc(k_c)``, or the one coil's image without maps (``smaps=None``);
    the ground truth of a retrospectively undersampled acquisition."""
    imgs = ifftnc(kspace, kspace.ndim - 1)
    z = imgs[0] if smaps is None else (smaps.conj() * imgs).sum(0)
    return torch.stack([z.real, z.imag])[None]
