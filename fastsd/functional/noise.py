"""Graph-safe noisy network input ``scale * (x + sigma * eps)`` with counter-based Philox noise.

Self-diffusion feeds the network ``x̂ + σ_t ε`` at every inner step. Seed and step counter are int64
device tensors read inside the kernel, so a captured CUDA graph draws fresh noise on each replay
when the caller bumps ``step`` in place (a Python-int seed would be frozen into the graph). The
noise for (seed, step) is a pure function of those two numbers (see :mod:`fastsd.reference.noise`),
identical on the Triton (CUDA) and reference (CPU) paths.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from fastsd._backend import implementation
from fastsd._checks import check_finite, check_same_device, check_tensor
from fastsd._utils import capturing, noise_shape, per_problem

__all__ = ["noisy_input", "gaussian_noise"]

_X_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.complex64)
_SIGMA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@torch.library.custom_op("fastsd::noisy_input", mutates_args=())
def _noisy_input_op(
    x: torch.Tensor,
    sigma: torch.Tensor,
    seed: torch.Tensor,
    step: torch.Tensor,
    scale: Optional[torch.Tensor],
    scale_value: float,
) -> torch.Tensor:
    fn = implementation(x, "noise").noisy_input
    return fn(x, sigma, seed, step, scale, scale_value)


@_noisy_input_op.register_fake
def _(x, sigma, seed, step, scale, scale_value):
    return x.new_empty(noise_shape(x), dtype=torch.float32)


def _setup_noisy(ctx, inputs, output):
    x, _, _, _, scale, scale_value = inputs
    ctx.save_for_backward(scale)
    ctx.scale_value = scale_value
    ctx.x_dtype = x.dtype


def _backward_noisy(ctx, g):
    (scale,) = ctx.saved_tensors
    gx = g * ctx.scale_value
    if scale is not None:
        gx = gx * per_problem(scale.to(g.dtype), g)
    if ctx.x_dtype.is_complex:  # undo the (B,H,W) complex -> (B,2,H,W) packing
        gx = torch.view_as_complex(gx.permute(0, 2, 3, 1).contiguous())
    return gx.to(ctx.x_dtype), None, None, None, None, None


_noisy_input_op.register_autograd(_backward_noisy, setup_context=_setup_noisy)


@torch.library.custom_op("fastsd::gaussian_noise", mutates_args=())
def _gaussian_noise_op(like: torch.Tensor, seed: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    fn = implementation(like, "noise").gaussian_noise
    return fn(like, seed, step)


@_gaussian_noise_op.register_fake
def _(like, seed, step):
    return like.new_empty(noise_shape(like), dtype=torch.float32)


def _check_counter(name: str, t, x: torch.Tensor, per_problem: bool = False) -> torch.Tensor:
    """Check an int64 RNG counter/key tensor on x's device; returns it as 0-d, or (B,) when
    ``per_problem`` allows one value per problem."""
    check_tensor(name, t, dtypes=(torch.int64,))
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}; "
                         "keep it on x's device (it is read inside the kernel)")
    if per_problem and t.ndim == 1 and t.shape[0] == x.shape[0]:
        return t
    if t.numel() != 1 or t.ndim > 1:
        want = f"0-d or shape ({x.shape[0]},) (one per problem)" if per_problem else "0-d"
        raise ValueError(f"{name} must be an int64 tensor of shape {want}, got shape {tuple(t.shape)}")
    return t.reshape(())


def _check_per_problem(name: str, t, x: torch.Tensor, validate: bool) -> None:
    check_tensor(name, t, dtypes=_SIGMA_DTYPES)
    check_same_device(x=x, **{name: t})
    if not (t.ndim == 0 or (t.ndim == 1 and t.shape[0] == x.shape[0])):
        raise ValueError(f"{name} must be 0-d or have shape ({x.shape[0]},) (one per problem), got {tuple(t.shape)}")
    if validate and not capturing(t):
        check_finite(name, t)


def _check_x(x) -> None:
    check_tensor("x", x, dtypes=_X_DTYPES)
    if x.is_complex():
        if x.ndim != 3:
            raise ValueError(f"complex x must have shape (B, H, W), got {tuple(x.shape)}")
    elif x.ndim < 1:
        raise ValueError("x needs a batch dimension, got a 0-d tensor")


def noisy_input(
    x: torch.Tensor,
    sigma: torch.Tensor,
    seed: torch.Tensor,
    step: torch.Tensor,
    scale: float | torch.Tensor = 1.0,
    *,
    validate: bool = True,
) -> torch.Tensor:
    """``scale * (x + sigma * eps)`` in float32 with ``eps ~ N(0, I)`` from Philox(seed, step).

    Args:
        x: real (B, ...) float32/float16/bfloat16, or complex64 (B, H, W), packed to real (B, 2, H, W).
        sigma: noise level, floating tensor of shape () or (B,) on x's device.
        seed: int64 tensor on x's device, 0-d (one stream for the batch) or (B,) (problem b draws
            the noise it would draw alone with ``seed[b]``).
        step: int64 0-d tensor on x's device; bump it in place between graph replays.
        scale: Python float, or floating tensor of shape () or (B,).
        validate: scan ``sigma``/``scale`` for NaN/Inf (one host sync; skipped during graph capture).

    Returns a new float32 tensor (x's shape, or (B, 2, H, W) for complex x), differentiable in
    ``x`` only (d out / d x = scale); sigma and a tensor scale get no gradient.
    """
    _check_x(x)
    _check_per_problem("sigma", sigma, x, validate)
    seed = _check_counter("seed", seed, x, per_problem=True)
    step = _check_counter("step", step, x)
    if isinstance(scale, torch.Tensor):
        _check_per_problem("scale", scale, x, validate)
        scale_t, scale_value = scale, 1.0
    else:
        scale_t, scale_value = None, float(scale)
        if not math.isfinite(scale_value):
            raise ValueError(f"scale must be finite, got {scale}")
    return _noisy_input_op(x.resolve_conj(), sigma, seed, step, scale_t, scale_value)


def gaussian_noise(like: torch.Tensor, seed: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """The noise ``eps`` that :func:`noisy_input` adds to ``like`` for (seed, step): float32,
    shape of ``like`` (complex (B,H,W) -> (B,2,H,W)). Use it to initialise x̂ ~ N(0, I)."""
    _check_x(like)
    seed = _check_counter("seed", seed, like, per_problem=True)
    step = _check_counter("step", step, like)
    return _gaussian_noise_op(like.detach().resolve_conj(), seed, step)
