"""The U-Net decoder join ``cat([skip, pad_to(upsample2x(h), skip)], dim=1)`` as a differentiable
custom op (``fastsd::upcat``).

Every decoder level of the paper's U-Net upsamples the deeper map bilinearly ×2
(``align_corners=True``), zero-pads it to the skip's size and concatenates it after the skip; in
the training step that is pure memory traffic, three passes and two temporaries each way. One op
writes the concatenation in one pass (interpolation in float32, float64 for float64 inputs); its
backward (``fastsd::upcat_backward``) gathers ``grad_h`` deterministically and passes the skip's
channels of the incoming gradient through as a view. CUDA tensors run :mod:`fastsd.kernels.upcat`,
everything else the reference :mod:`fastsd.reference.upcat`. Outputs take ``skip``'s memory format
(channels-last stays channels-last).
"""
from __future__ import annotations

import torch

from fastsd._backend import implementation
from fastsd._checks import FLOAT_DTYPES, check_same_device, check_tensor
from fastsd._utils import memory_format

__all__ = ["upsample_concat"]


@torch.library.custom_op("fastsd::upcat", mutates_args=())
def _upcat_op(skip: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return implementation(skip, "upcat").upcat_forward(skip, h)


@_upcat_op.register_fake
def _(skip, h):
    N, Cs, H, W = skip.shape
    return torch.empty((N, Cs + h.shape[1], H, W), dtype=skip.dtype, device=skip.device,
                       memory_format=memory_format(skip))


@torch.library.custom_op("fastsd::upcat_backward", mutates_args=())
def _upcat_backward_op(dout: torch.Tensor, skip_channels: int, height: int, width: int) -> torch.Tensor:
    return implementation(dout, "upcat").upcat_backward(dout, skip_channels, height, width)


@_upcat_backward_op.register_fake
def _(dout, skip_channels, height, width):
    shape = (dout.shape[0], dout.shape[1] - skip_channels, height, width)
    return torch.empty(shape, dtype=dout.dtype, device=dout.device, memory_format=memory_format(dout))


def _setup(ctx, inputs, output):
    skip, h = inputs
    ctx.skip_channels = skip.shape[1]
    ctx.h_size = tuple(h.shape[2:])


def _backward(ctx, dout):
    Cs = ctx.skip_channels
    grad_h = _upcat_backward_op(dout, Cs, *ctx.h_size) if ctx.needs_input_grad[1] else None
    return dout[:, :Cs], grad_h


_upcat_op.register_autograd(_backward, setup_context=_setup)


def upsample_concat(skip: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``torch.cat([skip, pad_to(F.interpolate(h, scale_factor=2, mode="bilinear",
    align_corners=True), skip)], dim=1)`` in one op.

    Args:
        skip: (N, Cs, H, W) float32/float16/bfloat16/float64, any memory format.
        h: (N, Ch, h, w) with 2h ≤ H and 2w ≤ W; the upsampled map is zero-padded to (H, W),
            ``(H − 2h) // 2`` rows above and the rest below (columns alike). Different dtypes are
            promoted as ``torch.cat`` does.

    Returns (N, Cs + Ch, H, W) in ``skip``'s memory format, differentiable in ``skip`` and ``h``.
    """
    check_tensor("skip", skip, ndim=4, dtypes=FLOAT_DTYPES)
    check_tensor("h", h, ndim=4, dtypes=FLOAT_DTYPES)
    check_same_device(skip=skip, h=h)
    if h.shape[0] != skip.shape[0]:
        raise ValueError(f"skip and h must have the same batch size, got {skip.shape[0]} and {h.shape[0]}")
    if min(h.shape[2:]) < 1 or any(2 * n > m for n, m in zip(h.shape[2:], skip.shape[2:])):
        raise ValueError(f"h's spatial size doubled must fit in skip's, got h {tuple(h.shape)} and skip {tuple(skip.shape)}")
    dtype = torch.promote_types(skip.dtype, h.dtype)
    return _upcat_op(skip.to(dtype), h.to(dtype))
