"""Plain-PyTorch reference of the MRI operator family (explicit fftshift / fft2 / ifftshift).

Same signatures and semantics as the launchers in ``fastsd.kernels.mri_dc``; the CPU
implementation of the ``fastsd::mri_*`` custom ops and the ground truth the kernels are tested
against.

Layouts: image ``x`` real (B,2,H,W) (channel 0 real, 1 imaginary; fp32, fp16 or bf16, computed in
fp32); k-space complex64 (B,C,H,W), centred; ``mask`` (H,W) or (B,H,W) of 0/1; coil maps ``smaps``
complex64 (C,H,W) shared or (B,C,H,W), ``None`` for single coil (C = 1). The operator is
``A x = M fft2c(S x)`` with the orthonormal centred FFT of fastMRI.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "fft2c",
    "ifft2c",
    "to_complex",
    "to_channels",
    "mri_forward",
    "mri_adjoint",
    "mri_normal",
    "mri_fidelity",
    "mri_dc",
]

_DIMS = (-2, -1)


def fft2c(z: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two dimensions (fastMRI ``fft2c``)."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(z, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse (and adjoint) of :func:`fft2c`."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)


def to_complex(x: torch.Tensor) -> torch.Tensor:
    """(B,2,H,W) real -> (B,H,W) complex64."""
    return torch.complex(x[:, 0].float(), x[:, 1].float())


def to_channels(z: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B,H,W) complex -> (B,2,H,W) real of ``dtype``."""
    return torch.stack([z.real, z.imag], 1).to(dtype)


def _mask(mask: torch.Tensor) -> torch.Tensor:
    """Broadcastable against (B,C,H,W)."""
    return (mask[:, None] if mask.ndim == 3 else mask).float()


def _coils(x: torch.Tensor, smaps: torch.Tensor | None) -> torch.Tensor:
    z = to_complex(x)[:, None]
    return z if smaps is None else z * smaps


def _combine(zc: torch.Tensor, smaps: torch.Tensor | None) -> torch.Tensor:
    # conj_physical: a lazy conj() view gives wrong results when this runs under AOT tracing
    return zc[:, 0] if smaps is None else (smaps.conj_physical() * zc).sum(1)


def mri_forward(x: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None) -> torch.Tensor:
    """A x = M fft2c(S x): complex64 (B,C,H,W)."""
    return _mask(mask) * fft2c(_coils(x, smaps))


def mri_adjoint(y: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None) -> torch.Tensor:
    """A^H y = sum_c conj(S_c) ifft2c(M y_c): float32 (B,2,H,W)."""
    return to_channels(_combine(ifft2c(_mask(mask) * y), smaps))


def mri_normal(x: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None) -> torch.Tensor:
    """A^H A x in the dtype of ``x``."""
    k = _mask(mask) * fft2c(_coils(x, smaps))
    return to_channels(_combine(ifft2c(k), smaps), x.dtype)


def mri_fidelity(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_b = ||M (F S x_b - y_b)||^2`` (float32 (B,)) and ``grad = 2 A^H (A x - y)`` (dtype of x).

    Entries of ``y`` outside the mask are ignored (for measured ``y`` they are zero anyway).
    """
    r = _mask(mask) * (fft2c(_coils(x, smaps)) - y)
    loss = (r.real.square() + r.imag.square()).sum((1, 2, 3))
    return loss, to_channels(2 * _combine(ifft2c(r), smaps), x.dtype)


def mri_dc(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None, lam: float = math.inf
) -> torch.Tensor:
    """Coil-wise data consistency ``S^H F^H((1 - M) F S x + M (F S x + lam y)/(1 + lam))``.

    ``lam = inf`` replaces sampled k-space entries by ``y`` (hard DC); ``lam = 0`` leaves them.
    """
    w = 1.0 if math.isinf(lam) else lam / (1.0 + lam)
    k = fft2c(_coils(x, smaps))
    k = k + w * _mask(mask) * (y - k)
    return to_channels(_combine(ifft2c(k), smaps), x.dtype)
