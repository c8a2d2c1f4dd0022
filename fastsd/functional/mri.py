"""MRI custom ops ``fastsd::mri_*``: masked centred FFT with coil maps, its adjoint, normal,
fused fidelity (loss + gradient) and coil-wise data consistency.

CUDA tensors run the Triton kernels of ``fastsd.kernels.mri`` around cuFFT, or for 2-D data
the cuFFT-callback ops of the optional extension (:mod:`fastsd._native`) where it is built and the
backend allows (:mod:`fastsd._backend`); everything else runs :mod:`fastsd.reference.mri`. Each op
has a fake (meta) implementation and an autograd formula, so it works under ``torch.compile`` and
inside differentiable pipelines.

Layouts, for 2-D slices ``S = (H, W)`` and 3-D volumes ``S = (D, H, W)`` alike (the spatial rank
is ``x.ndim - 2`` or ``y.ndim - 2``): image ``x`` real (B,2,*S) float32/float16/bfloat16 (half
inputs are cast to fp32 on load, all arithmetic and k-space are fp32/complex64, image-domain
outputs come back in ``x.dtype``); k-space ``y`` complex64 (B,C,*S) centred, transformed by the
centred orthonormal FFT over all spatial dimensions; ``mask`` float32 (*S) or (B,*S) of 0/1
(leading dimension 1 broadcasts, and so does any spatial dimension of size 1: a (1,H,W) mask
samples whole readout lines of a volume); ``smaps`` complex64 (C,*S) shared or (B,C,*S),
``None`` = single coil.

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

from fastsd._backend import implementation
from fastsd._checks import check_finite, check_same_device, check_tensor
from fastsd._utils import dc_weight, per_problem
from fastsd.reference import mri as _ref

__all__ = ["mri_forward", "mri_adjoint", "mri_normal", "mri_fidelity", "mri_dc", "validate_mri_args"]

IMAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# custom ops


@torch.library.custom_op("fastsd::mri_forward", mutates_args=())
def _mri_forward(x: Tensor, mask: Tensor, smaps: Optional[Tensor]) -> Tensor:
    return implementation(x, "mri").mri_forward(x, mask, smaps)


@_mri_forward.register_fake
def _(x, mask, smaps):
    C = 1 if smaps is None else smaps.shape[-x.ndim + 1]
    return x.new_empty((x.shape[0], C, *x.shape[2:]), dtype=torch.complex64)


@torch.library.custom_op("fastsd::mri_adjoint", mutates_args=())
def _mri_adjoint(y: Tensor, mask: Tensor, smaps: Optional[Tensor]) -> Tensor:
    return implementation(y, "mri").mri_adjoint(y, mask, smaps)


@_mri_adjoint.register_fake
def _(y, mask, smaps):
    return y.new_empty((y.shape[0], 2, *y.shape[2:]), dtype=torch.float32)


@torch.library.custom_op("fastsd::mri_normal", mutates_args=())
def _mri_normal(x: Tensor, mask: Tensor, smaps: Optional[Tensor]) -> Tensor:
    return implementation(x, "mri").mri_normal(x, mask, smaps)


@_mri_normal.register_fake
def _(x, mask, smaps):
    return torch.empty_like(x)


@torch.library.custom_op("fastsd::mri_fidelity", mutates_args=())
def _mri_fidelity(x: Tensor, y: Tensor, mask: Tensor, smaps: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    loss, grad = implementation(x, "mri").mri_fidelity(x, y, mask, smaps)
    return loss, grad


@_mri_fidelity.register_fake
def _(x, y, mask, smaps):
    return x.new_empty((x.shape[0],), dtype=torch.float32), torch.empty_like(x)


@torch.library.custom_op("fastsd::mri_dc", mutates_args=())
def _mri_dc(x: Tensor, y: Tensor, mask: Tensor, smaps: Optional[Tensor], lam: float) -> Tensor:
    return implementation(x, "mri").mri_dc(x, y, mask, smaps, lam)


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
    g = per_problem(g_loss, x)
    gx = (g * grad).to(grad.dtype) if ctx.needs_input_grad[0] else None
    gy = None
    if ctx.needs_input_grad[1]:  # d/dy ||M(FSx - y)||^2 = -2 M (FSx - y)
        gy = -2 * g * (torch.ops.fastsd.mri_forward(x, mask, smaps) - _ref.apply_mask(mask, y))
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
        gy = dc_weight(ctx.lam) * torch.ops.fastsd.mri_forward(g, mask, smaps)
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
    ndim: int | None = None,
) -> None:
    """Check shapes, dtypes and devices of MRI op arguments; raise ValueError naming the problem.

    ``ndim`` is the number of spatial dimensions (2 or 3); by default ``x.ndim - 2``, else
    ``y.ndim - 2``, else 2. ``finite=True`` also rejects NaN/Inf in ``y`` (one host sync).
    """
    for name, t in (("x", x), ("y", y)):
        if ndim is None and t is not None:
            check_tensor(name, t, ndim=(4, 5))
            ndim = t.ndim - 2
    nd = 2 if ndim is None else ndim
    if nd not in (2, 3):
        raise ValueError(f"MRI data must have 2 or 3 spatial dimensions, got {nd}")
    check_tensor("mask", mask, ndim=(nd, nd + 1), dtypes=(torch.float32,))
    msize = tuple(mask.shape[-nd:])
    known: list = []  # (name, full image size) of the first tensor that fixes it

    def fit(name: str, size: tuple) -> None:
        if known and size != known[0][1]:
            raise ValueError(f"{name} has image size {size} but {known[0][0]} has {known[0][1]}")
        if any(m not in (1, s) for m, s in zip(msize, size)):
            raise ValueError(f"{name} has image size {size} but the mask is {msize}")
        known[:] = [(name, size)]

    B = None
    if x is not None:
        check_tensor("x", x, ndim=nd + 2, dtypes=IMAGE_DTYPES)
        if x.shape[1] != 2:
            raise ValueError(f"x must have 2 channels (real, imaginary), got shape {tuple(x.shape)}")
        fit("x", tuple(x.shape[2:]))
        B = x.shape[0]
    C = 1
    if smaps is not None:
        check_tensor("smaps", smaps, ndim=(nd + 1, nd + 2), dtypes=(torch.complex64,))
        fit("smaps", tuple(smaps.shape[-nd:]))
        C = smaps.shape[-nd - 1]
    if y is not None:
        check_tensor("y", y, ndim=nd + 2, dtypes=(torch.complex64,))
        size = known[0][1] if known else tuple(y.shape[2:])
        if tuple(y.shape[1:]) != (C, *size) or (B is not None and y.shape[0] != B):
            want = ", ".join(map(str, ("B" if B is None else B, C, *size)))
            dims = "H, W" if nd == 2 else "D, H, W"
            raise ValueError(f"y has shape {tuple(y.shape)}; expected ({want}) (batch, coils, {dims})")
        fit("y", size)
        B = y.shape[0]
    for name, t, nb in (("mask", mask, nd + 1), ("smaps", smaps, nd + 2)):  # per-problem batch: 1 or B
        if t is not None and t.ndim == nb and t.shape[0] != 1:
            if B is not None and t.shape[0] != B:
                raise ValueError(f"{name} has batch size {t.shape[0]} but the data has batch size {B}")
            B = t.shape[0]
    check_same_device(x=x, y=y, mask=mask, smaps=smaps)
    if lam is not None and not (lam >= 0):  # also rejects NaN
        raise ValueError(f"lam must be >= 0 (inf for hard data consistency), got {lam}")
    if finite and y is not None:
        check_finite("y", y)


def mri_forward(x: Tensor, mask: Tensor, smaps: Tensor | None = None) -> Tensor:
    """A x = M fftnc(S x): image (B,2,*S) -> centred k-space complex64 (B,C,*S)."""
    validate_mri_args(x=x, mask=mask, smaps=smaps)
    return torch.ops.fastsd.mri_forward(x, mask, smaps)


def mri_adjoint(y: Tensor, mask: Tensor, smaps: Tensor | None = None) -> Tensor:
    """A^H y = sum_c conj(S_c) ifftnc(M y_c): k-space (B,C,*S) -> float32 image (B,2,*S)."""
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
