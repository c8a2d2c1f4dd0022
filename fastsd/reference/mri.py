"""Plain-PyTorch reference of the MRI operator family (explicit fftshift / fftn / ifftshift), for
2-D slices and 3-D volumes alike.

Same signatures and semantics as the launchers in ``fastsd.kernels.mri``; the CPU
implementation of the ``fastsd::mri_*`` custom ops and the ground truth the kernels are tested
against.

Layouts, with ``N = x.ndim - 2`` (or ``y.ndim - 2``) spatial dimensions ``S = (H, W)`` or
``(D, H, W)``: image ``x`` real (B,2,*S) (channel 0 real, 1 imaginary; fp32, fp16 or bf16, computed
in fp32); k-space complex64 (B,C,*S), centred; ``mask`` (*S) or (B,*S) of 0/1, where a spatial
dimension of size 1 broadcasts (a (1,H,W) mask samples whole readout lines of a volume); coil maps
``smaps`` complex64 (C,*S) shared or (B,C,*S), ``None`` for single coil (C = 1). The operator is
``A x = M fftnc(S x)`` with the orthonormal centred FFT of fastMRI over all N spatial dimensions.
"""
from __future__ import annotations

import math

import torch

from fastsd._utils import dc_weight

__all__ = [
    "fftnc",
    "ifftnc",
    "fft2c",
    "ifft2c",
    "to_complex",
    "to_channels",
    "apply_mask",
    "mri_forward",
    "mri_adjoint",
    "mri_normal",
    "mri_fidelity",
    "mri_dc",
]


def _dims(nd: int) -> tuple[int, ...]:
    return tuple(range(-nd, 0))


def fftnc(z: torch.Tensor, nd: int = 2) -> torch.Tensor:
    """Centred orthonormal FFT over the last ``nd`` dimensions (fastMRI ``fft2c`` for nd = 2)."""
    d = _dims(nd)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(z, dim=d), dim=d, norm="ortho"), dim=d)


def ifftnc(k: torch.Tensor, nd: int = 2) -> torch.Tensor:
    """Inverse (and adjoint) of :func:`fftnc`."""
    d = _dims(nd)
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(k, dim=d), dim=d, norm="ortho"), dim=d)


def fft2c(z: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two dimensions (fastMRI ``fft2c``)."""
    return fftnc(z, 2)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse (and adjoint) of :func:`fft2c`."""
    return ifftnc(k, 2)


def to_complex(x: torch.Tensor) -> torch.Tensor:
    """(B,2,*S) real -> (B,*S) complex64."""
    return torch.complex(x[:, 0].float(), x[:, 1].float())


def to_channels(z: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B,*S) complex -> (B,2,*S) real of ``dtype``."""
    return torch.stack([z.real, z.imag], 1).to(dtype)


def apply_mask(mask: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``M k`` for k-space ``k`` (B,C,*S): a per-problem (B,*S) mask gets a coil dimension."""
    return (mask[:, None] if mask.ndim == k.ndim - 1 else mask).float() * k


def _coils(x: torch.Tensor, smaps: torch.Tensor | None) -> torch.Tensor:
    z = to_complex(x)[:, None]
    return z if smaps is None else z * smaps


def _combine(zc: torch.Tensor, smaps: torch.Tensor | None) -> torch.Tensor:
    # conj_physical: a lazy conj() view gives wrong results when this runs under AOT tracing
    return zc[:, 0] if smaps is None else (smaps.conj_physical() * zc).sum(1)


def mri_forward(x: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None) -> torch.Tensor:
    """A x = M fftnc(S x): complex64 (B,C,*S)."""
    return apply_mask(mask, fftnc(_coils(x, smaps), x.ndim - 2))


def mri_adjoint(y: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None) -> torch.Tensor:
    """A^H y = sum_c conj(S_c) ifftnc(M y_c): float32 (B,2,*S)."""
    return to_channels(_combine(ifftnc(apply_mask(mask, y), y.ndim - 2), smaps))


def mri_normal(x: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None) -> torch.Tensor:
    """A^H A x in the dtype of ``x``."""
    nd = x.ndim - 2
    k = apply_mask(mask, fftnc(_coils(x, smaps), nd))
    return to_channels(_combine(ifftnc(k, nd), smaps), x.dtype)


def mri_fidelity(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_b = ||M (F S x_b - y_b)||^2`` (float32 (B,)) and ``grad = 2 A^H (A x - y)`` (dtype of x).

    Entries of ``y`` outside the mask are ignored (for measured ``y`` they are zero anyway).
    """
    nd = x.ndim - 2
    r = apply_mask(mask, fftnc(_coils(x, smaps), nd) - y)
    loss = (r.real.square() + r.imag.square()).flatten(1).sum(1)
    return loss, to_channels(2 * _combine(ifftnc(r, nd), smaps), x.dtype)


def mri_dc(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None, lam: float = math.inf
) -> torch.Tensor:
    """Coil-wise data consistency ``S^H F^H((1 - M) F S x + M (F S x + lam y)/(1 + lam))``.

    ``lam = inf`` replaces sampled k-space entries by ``y`` (hard DC); ``lam = 0`` leaves them.
    """
    nd = x.ndim - 2
    k = fftnc(_coils(x, smaps), nd)
    k = k + dc_weight(lam) * apply_mask(mask, y - k)
    return to_channels(_combine(ifftnc(k, nd), smaps), x.dtype)
