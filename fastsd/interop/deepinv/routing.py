"""The routing mixin of the drop-in classes: each call runs on the direct path (CPU tensors), on a
fused fastsd operator (where fastsd has one for the current configuration) or on the deepinv
parent class's own code, and records which (``fastsd_path``, ``fallback_reason``, a DEBUG line
on the ``fastsd.interop.deepinv`` logger at each change)."""
from __future__ import annotations

import logging

import torch

from fastsd._utils import per_problem
from fastsd.interop.deepinv import direct as _direct
from fastsd.interop.deepinv.autograd import _Linear, _Prox
from fastsd.interop.deepinv.direct import DirectPath
from fastsd.ops.base import LinearOperator

_log = logging.getLogger("fastsd.interop.deepinv")  # the package's logger: the name users configure


def _gamma(gamma, batch: int):
    """A float, or a (B,) tensor for per-problem step sizes (one-element tensors become floats)."""
    if isinstance(gamma, torch.Tensor):
        if gamma.numel() == 1:
            return float(gamma.reshape(()))
        gamma = gamma.detach().reshape(-1)
        if gamma.numel() != batch:
            raise ValueError(f"gamma must be a float or have one value per problem ({batch}), got {gamma.numel()} values")
        return gamma
    gamma = float(gamma)
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    return gamma


def _identity(v):
    """What the fused op is built from, compared by identity and in-place version for tensors."""
    if isinstance(v, torch.Tensor):
        return ("tensor", id(v), v._version, v.device, v.dtype, tuple(v.shape))
    return tuple(v) if isinstance(v, list) else v


class _Fused(DirectPath):
    """Mixin placed before a deepinv physics class: runs its linear algebra on a fused fastsd
    operator where fastsd has one for the current configuration, and on the deepinv parent
    class's own implementation everywhere else.

    Each call routes once: ``physics.fastsd_path`` is then ``'fastsd'`` or ``'deepinv'`` and
    ``physics.fallback_reason`` says why deepinv's code ran (``None`` on the fused path); a debug
    log line records each change of path. The fused operator is derived from deepinv's buffers
    (rebuilt when one is replaced, updated in place or moved), so deepinv's state stays the only
    state: ``state_dict``, ``clone``, ``.to()`` and ``update`` behave exactly as in deepinv.
    A parameter that requires grad (with grad enabled) takes deepinv's differentiable path, so
    gradients reach masks, filters and coil maps.
    """

    _PARAMS: tuple[str, ...] = ()  # deepinv parameters (per-call kwargs) the fused op is built from
    _CONFIG: tuple[str, ...] = ()  # other attributes it depends on
    fastsd_path = "fastsd"
    fallback_reason = None

    # subclass hooks: the fused op for the current parameters (or the reason there is none), and
    # layout conversions between deepinv's tensors and the op's (identity here)
    def _build(self, size) -> tuple[LinearOperator | None, str | None]:
        raise NotImplementedError

    def _size(self, t: torch.Tensor, kind: str):
        return None  # the op depends on the image size only where a subclass says so

    def _check_call(self, op, t: torch.Tensor, kind: str) -> None:
        """Raise ValueError when the op cannot take ``t`` (an image ``'x'`` or measurement ``'y'``):
        its type, dtype, shape or device; the op's own checks where it has them."""
        raise NotImplementedError

    def _x_in(self, x):
        return x

    def _x_out(self, x, dtype):
        return x

    def _y_in(self, y):
        return y

    def _y_out(self, y, dtype):
        return y

    # routing
    def _fused_op(self, size=None):
        """(op, None) for the current parameters, or (None, reason); cached by buffer identity."""
        key = (size,) + tuple(_identity(getattr(self, n, None)) for n in self._PARAMS + self._CONFIG)
        cache = self.__dict__.get("_fastsd_cache")
        if cache is None or cache[0] != key:
            op, reason = self._build(size)
            refs = tuple(getattr(self, n, None) for n in self._PARAMS)  # keeps the ids in the key unique
            cache = (key, refs, op, reason)
            self.__dict__["_fastsd_cache"] = cache
        return cache[2], cache[3]

    def _route(self, *inputs, reason: str | None = None):
        """The fused op for a call on ``inputs`` ((tensor, 'x' | 'y') pairs), or None: deepinv's
        path (always, when the caller already has a ``reason``)."""
        t0, k0 = inputs[0]
        op = None
        if reason is None:
            op, reason = self._fused_op(self._size(t0, k0))
        if reason is None and torch.is_grad_enabled():
            grads = [n for n in self._PARAMS if isinstance(getattr(self, n, None), torch.Tensor)
                     and getattr(self, n).requires_grad]
            if grads:
                reason = f"{', '.join(grads)} requires grad (deepinv's differentiable path)"
        for t, kind in inputs if reason is None else ():
            try:
                self._check_call(op, t, kind)
            except ValueError as e:
                reason = str(e)
                break
        path = "fastsd" if reason is None else "deepinv"
        if path != self.fastsd_path or reason != self.fallback_reason:
            _log.debug("%s: %s path%s", type(self).__name__, path, f" ({reason})" if reason else "")
        self.fastsd_path, self.fallback_reason = path, reason
        return op if reason is None else None

    def _apply_params(self, kwargs: dict) -> dict:
        """Apply per-call parameters as deepinv does (they persist); return the other kwargs."""
        params = {k: kwargs[k] for k in self._PARAMS if kwargs.get(k) is not None}
        if params:
            self.update_parameters(**params)
        return {k: v for k, v in kwargs.items() if k not in params}

    @property
    def fastsd_op(self) -> LinearOperator:
        """The fused fastsd operator for the current parameters (ValueError where there is none)."""
        op, reason = self._fused_op(self._size(None, "x"))
        if op is None:
            raise ValueError(f"no fused fastsd operator for this {type(self).__name__}: {reason}")
        return op

    # plain-tensor implementations used by the Functions
    def _fs_apply(self, op, which: str, t):
        """``op.forward`` / ``op.adjoint`` / ``op.normal`` (``which``) on ``t`` in deepinv's layout
        and dtype, the result in deepinv's layout and ``t``'s dtype."""
        into = self._y_in if which == "adjoint" else self._x_in
        back = self._y_out if which == "forward" else self._x_out
        return back(getattr(op, which)(into(t)), t.dtype)

    _native_batched_gamma = True  # whether op.prox_l2 takes a (B,) gamma

    def _fs_prox(self, op, z, y, gamma):
        zi, yi = self._x_in(z), self._y_in(y)
        if isinstance(gamma, torch.Tensor) and not self._native_batched_gamma:
            # per-problem γ: the generic CG on I + γ A^H A
            out = LinearOperator.prox_l2(op, zi, yi, per_problem(gamma.to(zi.dtype), zi), iters=self.max_iter)
        else:
            out = op.prox_l2(zi, yi, gamma, iters=self.max_iter)
        return self._x_out(out, z.dtype)

    def _parent(self, name: str, *args, **kwargs):
        """deepinv's own method ``name``; calls it makes in turn may run fused, but the path it
        reports stays deepinv's."""
        reason = self.fallback_reason
        out = getattr(super(), name)(*args, **kwargs)
        self.fastsd_path, self.fallback_reason = "deepinv", reason
        return out

    # deepinv API
    def _linear(self, name: str, which: str, t, kwargs: dict):
        """deepinv's method ``name`` on ``t``: the fused map ``which`` (see :class:`_Linear`) or deepinv's code."""
        rest = self._apply_params(kwargs)
        op = self._route((t, "y" if which == "adjoint" else "x"))
        return self._parent(name, t, **rest) if op is None else _Linear.apply(t, self, op, which)

    def A(self, x, **kwargs):
        hit = self._direct("A", x, kwargs)
        return hit[0](self, hit[1], x) if hit else self._linear("A", "forward", x, kwargs)

    def A_adjoint(self, y, **kwargs):
        hit = self._direct("A_adjoint", y, kwargs)
        return hit[0](self, hit[1], y) if hit else self._linear("A_adjoint", "adjoint", y, kwargs)

    def A_adjoint_A(self, x, **kwargs):
        hit = self._direct("A_adjoint_A", x, kwargs)
        return hit[0](self, hit[1], x) if hit else self._linear("A_adjoint_A", "normal", x, kwargs)

    def prox_l2(self, z, y, gamma, **kwargs):
        """argmin_x γ/2 ‖A x − y‖² + ½ ‖x − z‖² (fastsd's closed form, or CG where there is none).

        ``z`` may be None or a number (a constant image), as in deepinv; on the fused path
        deepinv's solver options (``solver``, ``tol``, ...) are ignored and ``max_iter`` sets the
        CG iterations where CG is used.
        """
        g = _direct._scalar_gamma(gamma)
        hit = self._direct("prox_l2", z, kwargs) if g is not None and isinstance(y, torch.Tensor) else None
        if hit:
            return hit[0](self, hit[1], z, y, g)
        rest = self._apply_params(kwargs)
        zt = z if isinstance(z, torch.Tensor) else None
        why = None
        if not isinstance(gamma, (int, float, torch.Tensor)):
            why = f"gamma of type {type(gamma).__name__}"
        elif isinstance(gamma, torch.Tensor) and gamma.ndim > 1 and gamma.numel() != 1 and (
                gamma.shape[0] != y.shape[0] or gamma.numel() != y.shape[0]):
            why = f"gamma of shape {tuple(gamma.shape)} (fused for a number or one value per problem)"
        op = self._route(*(((y, "y"),) if zt is None else ((zt, "x"), (y, "y"))), reason=why)
        if op is None:
            return self._parent("prox_l2", z, y, gamma, **rest)
        if zt is None:
            like = self._fs_apply(op, "adjoint", y).detach()
            zt = torch.full_like(like, 0.0 if z is None else float(z))
        if kwargs.get("max_iter") is not None:  # as deepinv: the setting persists
            self.max_iter = int(kwargs["max_iter"])
        return _Prox.apply(zt, y, _gamma(gamma, zt.shape[0]), self, op)

    def A_dagger(self, y, **kwargs):
        """Minimum-norm least-squares solution A^† y: fastsd's closed form, or CG with
        ``max_iter`` iterations (persisting, as in deepinv) where there is none."""
        hit = self._direct("A_dagger", y, kwargs) if getattr(self, "pinv_threshold", None) is None else None
        if hit:
            return hit[0](self, hit[1], y)
        rest = self._apply_params(kwargs)
        op = self._route((y, "y"))
        if op is None:
            return self._parent("A_dagger", y, **rest)
        if kwargs.get("max_iter") is not None:
            self.max_iter = int(kwargs["max_iter"])
        return self._x_out(op.pinv(self._y_in(y), iters=self.max_iter), y.dtype)
