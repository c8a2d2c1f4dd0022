"""The native CUDA backend of the 2-D MRI operators: ``torch.ops.fastsd_native.*`` from the
optional extension ``fastsd._C`` (``csrc/``: cuFFT plans whose load/store callbacks do the coil
multiply, packing, centring, mask, residual, loss sums and coil combine, so each operator is one
or two FFT kernels and nothing else).

Same function names and semantics as :mod:`fastsd.kernels.mri` and
:mod:`fastsd.reference.mri`, so :mod:`fastsd._backend` hands this module to the ``fastsd::mri_*``
custom ops for CUDA tensors of 2-D data. The extension is absent unless built
(``FASTSD_BUILD_CUDA=1``, see the README); :func:`error` says why it did not import.

The wrappers bring the arguments to what the extension reads: contiguous tensors, a mask of
shape (H,W) or (B,H,W) (a leading 1 is dropped, size-1 spatial dimensions are expanded), coil
maps (C,H,W) or (B,C,H,W).
"""
from __future__ import annotations

import importlib
import math

import torch

__all__ = ["error", "available", "supports", "mri_forward", "mri_adjoint", "mri_normal", "mri_fidelity", "mri_dc"]

_state: dict = {}


def error() -> str | None:
    """Why ``fastsd._C`` cannot be used (None when it can); imported once, on first call."""
    if "error" not in _state:
        try:
            importlib.import_module("fastsd._C")
            _register_fakes()
            _state["error"] = None
        except (ImportError, OSError) as e:  # not built, or built against another torch/CUDA
            _state["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
    return _state["error"]


def available() -> bool:
    return error() is None


def supports(t: torch.Tensor) -> bool:
    """Whether the native ops handle data like ``t`` (2-D slices; volumes run the Triton path)."""
    return t.ndim == 4


def _register_fakes() -> None:
    """Meta implementations of the native ops, for tracing (torch.compile, opcheck)."""

    def image_like(x):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    def kspace(x, smaps):
        C = 1 if smaps is None else smaps.shape[-3]
        return x.new_empty((x.shape[0], C, *x.shape[2:]), dtype=torch.complex64)

    reg = torch.library.register_fake
    reg("fastsd_native::mri_forward")(lambda x, mask, smaps: kspace(x, smaps))
    reg("fastsd_native::mri_adjoint")(
        lambda y, mask, smaps: y.new_empty((y.shape[0], 2, *y.shape[2:]), dtype=torch.float32))
    reg("fastsd_native::mri_normal")(lambda x, mask, smaps: image_like(x))
    reg("fastsd_native::mri_fidelity")(
        lambda x, y, mask, smaps: (x.new_empty((x.shape[0],), dtype=torch.float32), image_like(x)))
    reg("fastsd_native::mri_dc")(lambda x, y, mask, smaps, lam: image_like(x))


def _mask(mask: torch.Tensor, H: int, W: int) -> torch.Tensor:
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if tuple(mask.shape[-2:]) != (H, W):
        mask = mask.expand(*mask.shape[:-2], H, W)
    return mask.float().contiguous()


def _maps(smaps: torch.Tensor | None) -> torch.Tensor | None:
    if smaps is None:
        return None
    if smaps.ndim == 4 and smaps.shape[0] == 1:
        smaps = smaps[0]
    return smaps.contiguous()


def _args(t, mask, smaps):
    H, W = t.shape[-2:]
    return t.contiguous(), _mask(mask, H, W), _maps(smaps)


def mri_forward(x, mask, smaps=None):
    """A x = M fft2c(S x), centred complex64 (B,C,H,W)."""
    return torch.ops.fastsd_native.mri_forward(*_args(x, mask, smaps))


def mri_adjoint(y, mask, smaps=None):
    """A^H y as float32 (B,2,H,W)."""
    return torch.ops.fastsd_native.mri_adjoint(*_args(y, mask, smaps))


def mri_normal(x, mask, smaps=None):
    """A^H A x in the dtype of x."""
    return torch.ops.fastsd_native.mri_normal(*_args(x, mask, smaps))


def mri_fidelity(x, y, mask, smaps=None):
    """(loss (B,) = ||M (F S x - y)||^2, grad = 2 A^H (A x - y) in the dtype of x)."""
    x, mask, smaps = _args(x, mask, smaps)
    return torch.ops.fastsd_native.mri_fidelity(x, y.contiguous(), mask, smaps)


def mri_dc(x, y, mask, smaps=None, lam=math.inf):
    """Coil-wise data consistency, hard replacement for lam = inf."""
    x, mask, smaps = _args(x, mask, smaps)
    return torch.ops.fastsd_native.mri_dc(x, y.contiguous(), mask, smaps, float(lam))
