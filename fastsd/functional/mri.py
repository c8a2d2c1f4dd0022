"""MRI custom ops ``fastsd::mri_*``: masked centred FFT with coil maps, its adjoint, normal,
fused fidelity (loss + gradient) and coil-wise data consistency.

CUDA tensors run the Triton kernels of ``fastsd.kernels.mri_dc`` around cuFFT; everything else
runs :mod:`fastsd.reference.mri`. Each op has a fake (meta) implementation and an autograd
formula, so it works under ``torch.compile`` and inside differentiable pipelines.

Layouts: image ``x`` real (B,2,H,W) float32/float16/bfloat16 (half inputs are cast to fp32 on load,
all arithmetic and k-space are fp32/complex64, image-domain outputs come back in ``x.dtype``);
k-space ``y`` complex64 (B,C,H,W) centred; ``mask`` float32 (H,W) or (B,H,W) of 0/1 (leading
dimension 1 broadcasts); ``smaps`` complex64 (C,H,W) shared or (B,C,H,W), ``None`` = single coil.

The public wrappers (:func:`mri_forward`, ...) validate their inputs and raise ``ValueError``
naming the problem; the validation of ``y`` includes a finiteness check (one host sync), so hot
loops should validate once and call ``torch.ops.fastsd.*`` directly (as :class:`fastsd.ops.mri.MRI`
does). Coil maps and masks are treated as constants (no gradient).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from fastsd import _backend
from fastsd._checks import check_finite, check_same_device, check_tensor
from fastsd.reference import mri as _ref

__all__ = ["mri_forward", "mri_adjoint", "mri_normal", "mri_fidelity", "mri_dc", "validate_mri_args"]

IMAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _impl(t: Tensor):
    return _backend.implementation(t, "mri_dc", _ref)


def _w(lam: float) -> float:
    return 1.0 if math.isinf(lam) else lam / (1.0 + lam)


def _masked(mask: Tensor, y: Tensor) -> Tensor:
    return (mask[:, None] if mask.ndim == 3 else mask) * y


# ---------------------------------------------------------------------------------------------
# custom ops


@torch.library.custom_op("fastsd::mri_forward", mutates_args=())
def _mri_forward(x: Tensor, mask: Tensor, smaps: Optional[Tensor]) -> Tensor:
    return _impl(x).mri_forward(x, mask, smaps)


@_mri_forward.register_fake
def _(x, mask, smaps):
    C = 1 if smaps is None else smaps.shape[-3]
    return x.new_empty((x.shape[0], C, x.shape[2], x.shape[3]), dtype=torch.complex64)


@torch.library.custom_op("fastsd::mri_adjoint", mutates_args=())
def _mri_adjoint(y: Tensor, mask: Tensor, smaps: Optional[Tensor]) -> Tensor:
    return _impl(y).mri_adjoint(y, mask, smaps)


@_mri_adjoint.register_fake
def _(y, mask, smaps):
    return y.new_empty((y.shape[0], 2, y.shape[2], y.shape[3]), dtype=torch.float32)


@torch.library.custom_op("fastsd::mri_normal", mutates_args=())
def _mri_normal(x: Tensor, mask: Tensor, smaps: Optional[Tensor]) -> Tensor:
    return _impl(x).mri_normal(x, mask, smaps)


@_mri_normal.register_fake
def _(x, mask, smaps):
    return torch.empty_like(x)


@torch.library.custom_op("fastsd::mri_fidelity", mutates_args=())
def _mri_fidelity(x: Tensor, y: Tensor, mask: Tensor, smaps: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    loss, grad = _impl(x).mri_fidelity(x, y, mask, smaps)
    return loss, grad


@_mri_fidelity.register_fake
def _(x, y, mask, smaps):
    return x.new_empty((x.shape[0],), dtype=torch.float32), torch.empty_like(x)


@torch.library.custom_op("fastsd::mri_dc", mutates_args=())
def _mri_dc(x: Tensor, y: Tensor, mask: Tensor, smaps: Optional[Tensor], lam: float) -> Tensor:
    return _impl(x).mri_dc(x, y, mask, smaps, lam)


@_mri_dc.register_fake
def _(x, y, mask, smaps, lam):
    return torch.empty_like(x)


# ---------------------------------------------------------------------------------------------
# autograd: A and A^H are each other's backward; A^H A and the DC map are self-adjoint.


def _save_maps(ctx, x_or_y, mask, smaps):
    ctx.save_for_backward(mask, smaps)
    ctx.in_dtype = x_or_y.dtype


def _forward_setup(ctx, inputs, output):
    x, mask, smaps = inputs
    _save_maps(ctx, x, mask, smaps)


def _forward_backward(ctx, g):
    mask, smaps = ctx.saved_tensors
    return torch.ops.fastsd.mri_adjoint(g, mask, smaps).to(ctx.in_dtype), None, None


def _adjoint_setup(ctx, inputs, output):
    y, mask, smaps = inputs
    _save_maps(ctx, y, mask, smaps)


def _adjoint_backward(ctx, g):
    mask, smaps = ctx.saved_tensors
    return torch.ops.fastsd.mri_forward(g, mask, smaps), None, None


def _normal_backward(ctx, g):
    mask, smaps = ctx.saved_tensors
    return torch.ops.fastsd.mri_normal(g, mask, smaps).to(ctx.in_dtype), None, None


def _fidelity_setup(ctx, inputs, output):
    x, y, mask, smaps = inputs
    ctx.save_for_backward(x, y, mask, smaps, output[1])
    ctx.mark_non_differentiable(output[1])


def _fidelity_backward(ctx, g_loss, _g_grad):
    x, y, mask, smaps, grad = ctx.saved_tensors
    g = g_loss.reshape(-1, 1, 1, 1)
    gx = (g * grad).to(grad.dtype) if ctx.needs_input_grad[0] else None
    gy = None
    if ctx.needs_input_grad[1]:  # d/dy ||M(FSx - y)||^2 = -2 M (FSx - y)
        gy = -2 * g * (torch.ops.fastsd.mri_forward(x, mask, smaps) - _masked(mask, y))
    return gx, gy, None, None


def _dc_setup(ctx, inputs, output):
    x, y, mask, smaps, lam = inputs
    ctx.save_for_backward(mask, smaps)
    ctx.lam, ctx.in_dtype, ctx.y_shape = lam, x.dtype, y.shape


def _dc_backward(ctx, g):
    mask, smaps = ctx.saved_tensors
    gx = gy = None
    if ctx.needs_input_grad[0]:  # linear part S^H F^H (1 - w M) F S is self-adjoint
        zeros = g.new_zeros(ctx.y_shape, dtype=torch.complex64)
        gx = torch.ops.fastsd.mri_dc(g, zeros, mask, smaps, ctx.lam).to(ctx.in_dtype)
    if ctx.needs_input_grad[1]:
        gy = _w(ctx.lam) * torch.ops.fastsd.mri_forward(g, mask, smaps)
    return gx, gy, None, None, None


_mri_forward.register_autograd(_forward_backward, setup_context=_forward_setup)
_mri_adjoint.register_autograd(_adjoint_backward, setup_context=_adjoint_setup)
_mri_normal.register_autograd(_normal_backward, setup_context=_forward_setup)
_mri_fidelity.register_autograd(_fidelity_backward, setup_context=_fidelity_setup)
_mri_dc.register_autograd(_dc_backward, setup_context=_dc_setup)


# ---------------------------------------------------------------------------------------------
# validation + public wrappers


def validate_mri_args(
    *,
    x: Tensor | None = None,
    y: Tensor | None = None,
    mask: Tensor,
    smaps: Tensor | None = None,
    lam: float | None = None,
    finite: bool = True,
) -> None:
    """Check shapes, dtypes and devices of MRI op arguments; raise ValueError naming the problem.

    ``finite=True`` also rejects NaN/Inf in ``y`` (one host sync).
    """
    check_tensor("mask", mask, ndim=(2, 3), dtypes=(torch.float32,))
    H, W = mask.shape[-2:]
    B = None
    if x is not None:
        check_tensor("x", x, ndim=4, dtypes=IMAGE_DTYPES)
        if x.shape[1] != 2:
            raise ValueError(f"x must have 2 channels (real, imaginary), got shape {tuple(x.shape)}")
        if tuple(x.shape[2:]) != (H, W):
            raise ValueError(f"x has image size {tuple(x.shape[2:])} but the mask is {(H, W)}")
        B = x.shape[0]
    C = 1
    if smaps is not None:
        check_tensor("smaps", smaps, ndim=(3, 4), dtypes=(torch.complex64,))
        if tuple(smaps.shape[-2:]) != (H, W):
            raise ValueError(f"smaps has image size {tuple(smaps.shape[-2:])} but the mask is {(H, W)}")
        C = smaps.shape[-3]
    if y is not None:
        check_tensor("y", y, ndim=4, dtypes=(torch.complex64,))
        if tuple(y.shape[1:]) != (C, H, W) or (B is not None and y.shape[0] != B):
            want = f"({'B' if B is None else B}, {C}, {H}, {W})"
            raise ValueError(f"y has shape {tuple(y.shape)}; expected {want} (batch, coils, H, W)")
        B = y.shape[0]
    for name, t, nd in (("mask", mask, 3), ("smaps", smaps, 4)):  # per-problem batch: 1 or B
        if t is not None and t.ndim == nd and t.shape[0] != 1:
            if B is not None and t.shape[0] != B:
                raise ValueError(f"{name} has batch size {t.shape[0]} but the data has batch size {B}")
            B = t.shape[0]
    check_same_device(x=x, y=y, mask=mask, smaps=smaps)
    if lam is not None and not (lam >= 0):  # also rejects NaN
        raise ValueError(f"lam must be >= 0 (inf for hard data consistency), got {lam}")
    if finite and y is not None:
        check_finite("y", y)


def mri_forward(x: Tensor, mask: Tensor, smaps: Tensor | None = None) -> Tensor:
    """A x = M fft2c(S x): image (B,2,H,W) -> centred k-space complex64 (B,C,H,W)."""
    validate_mri_args(x=x, mask=mask, smaps=smaps)
    return torch.ops.fastsd.mri_forward(x, mask, smaps)


def mri_adjoint(y: Tensor, mask: Tensor, smaps: Tensor | None = None) -> Tensor:
    """A^H y = sum_c conj(S_c) ifft2c(M y_c): k-space (B,C,H,W) -> float32 image (B,2,H,W)."""
    validate_mri_args(y=y, mask=mask, smaps=smaps)
    return torch.ops.fastsd.mri_adjoint(y, mask, smaps)


def mri_normal(x: Tensor, mask: Tensor, smaps: Tensor | None = None) -> Tensor:
    """A^H A x (same dtype as x)."""
    validate_mri_args(x=x, mask=mask, smaps=smaps)
    return torch.ops.fastsd.mri_normal(x, mask, smaps)


def mri_fidelity(x: Tensor, y: Tensor, mask: Tensor, smaps: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-problem ``||M (F S x - y)||^2`` (float32 (B,)) and its gradient ``2 A^H (A x - y)``
    in one pass. Differentiable: the backward of the loss is ``g_loss * grad``."""
    validate_mri_args(x=x, y=y, mask=mask, smaps=smaps)
    return torch.ops.fastsd.mri_fidelity(x, y, mask, smaps)


def mri_dc(x: Tensor, y: Tensor, mask: Tensor, smaps: Tensor | None = None, lam: float = math.inf) -> Tensor:
    """Coil-wise k-space data consistency (VarNet style):
    ``S^H F^H((1 - M) F S x + M (F S x + lam y) / (1 + lam))``; ``lam = inf`` puts ``y`` on the
    sampled locations (hard DC)."""
    validate_mri_args(x=x, y=y, mask=mask, smaps=smaps, lam=lam)
    return torch.ops.fastsd.mri_dc(x, y, mask, smaps, float(lam))
