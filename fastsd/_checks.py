"""Input validation shared by operators, functional ops and solvers.

Every check raises ``ValueError`` naming the argument and the problem, so bad input fails at
the API boundary with a readable message instead of deep inside a kernel.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["FLOAT_DTYPES", "MAX_SEED", "check_tensor", "check_finite", "check_same_device", "check_shape",
           "check_problem", "check_device", "check_seed", "check_dtype"]

# The real floating dtypes that operators, fused ops and solvers accept.
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Largest seed: problem b of a batch uses seed + b, and every seed must fit a signed 64-bit integer.
MAX_SEED = 2**62


def check_tensor(
    name: str,
    t,
    *,
    ndim: int | Sequence[int] | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Check that ``t`` is a tensor with the expected rank, dtype and device."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        want = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name} has dtype {str(t.dtype).replace('torch.', '')}; expected one of: {want}")
    if device is not None and t.device != torch.device(device):
        raise ValueError(f"{name} is on {t.device} but the operator lives on {torch.device(device)}")
    return t


def check_shape(name: str, t: torch.Tensor, expected: Sequence[int | None]) -> torch.Tensor:
    """Check ``t.shape`` against ``expected`` (``None`` entries match any size)."""
    if t.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected, t.shape)):
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {want}")
    return t


def check_finite(name: str, t: torch.Tensor) -> torch.Tensor:
    """Reject NaN/Inf values (one device-to-host sync; call at API boundaries, not in hot loops)."""
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or Inf)")
    return t


def check_same_device(**tensors: torch.Tensor | None) -> torch.device:
    """Check that all given tensors share one device and return it."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must be on the same device: {listing}")
    return next(iter(devices.values())) if devices else torch.device("cpu")


def check_device(device) -> torch.device | None:
    """``device`` (a ``torch.device``, a name such as ``'cuda:0'``, or None = ``y``'s device) as a
    device that can hold data and exists on this machine. ``'meta'`` holds no data: refused before
    an operator is moved there (``op.to(device)`` moves its buffers in place)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch.device or a name such as 'cpu' or 'cuda', got {device!r}") from None
    if dev.type == "meta":
        raise ValueError("device='meta' holds no data and cannot run a solve; use 'cpu' or 'cuda'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(dev)!r} but no CUDA device is available (torch.cuda.is_available() is False)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(dev)!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def check_seed(seed) -> int:
    """A seed as an ``int`` in [0, MAX_SEED] (bools, None, fractions and oversize numbers refused)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or isinstance(seed, float) and not seed.is_integer():
        raise ValueError(f"seed must be an integer in [0, 2**62], got {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**62], got {seed!r}")
    return int(seed)


def check_dtype(dtype, allowed: Sequence[torch.dtype] = FLOAT_DTYPES, name: str = "dtype") -> torch.dtype:
    """A ``torch.dtype`` among ``allowed`` (a string such as ``'float32'`` is named as such)."""
    want = ", ".join(f"torch.{str(d).replace('torch.', '')}" for d in allowed)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{name} must be a torch.dtype ({want}), got {dtype!r} of type {type(dtype).__name__}")
    if dtype not in allowed:
        raise ValueError(f"{name} must be one of {want}, got {dtype}")
    return dtype


def _precision(dtype: torch.dtype) -> int:
    """Bits of one real component (complex64 -> 32)."""
    return torch.finfo(dtype.to_real() if dtype.is_complex else dtype).bits


def check_problem(y, op, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The measurement a solver works with, checked before any work.

    ``op`` must be an operator (``forward`` and ``adjoint``); ``y`` a tensor with at least one
    problem along dim 0. ``y`` is data: one that requires grad is detached (no gradient flows
    back to it). A ``dtype`` wider than ``y``'s precision casts ``y`` up (complex ``y`` to the
    matching complex type), so the solve runs and returns in that precision; an operator that
    cannot compute in it is reported here, by name.
    """
    if op is None or not (hasattr(op, "forward") and hasattr(op, "adjoint")):
        raise ValueError(f"op must be a fastsd operator (e.g. fastsd.ops.MRI), got {type(op).__name__}")
    check_tensor("y", y)
    if y.ndim == 0 or y.shape[0] == 0:
        raise ValueError(f"y has shape {tuple(y.shape)}: dim 0 holds the problems and needs at least one")
    if y.device.type == "meta":
        raise ValueError("y is on the 'meta' device (no data)")
    if y.numel() and not bool(y.ne(0).any()):
        raise ValueError("y is all zeros: nothing was observed (a mask with no samples, or all-zero k-space)")
    y = y.detach()
    if dtype is not None and (y.is_floating_point() or y.is_complex()) and _precision(dtype) > _precision(y.dtype):
        wide = dtype.to_complex() if y.is_complex() else dtype
        y = y.to(wide)
        try:
            op.check_measurement(y) if hasattr(op, "check_measurement") else None
        except ValueError as e:
            name = str(dtype).replace("torch.", "")
            raise ValueError(f"dtype={name} is not supported by the {type(op).__name__} operator ({e})") from None
    return y
