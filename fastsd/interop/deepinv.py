"""fastsd operators as deepinv physics, and fastsd solvers as a deepinv ``Reconstructor``.

::

    from fastsd.interop.deepinv import MRI, SDIReconstructor

    physics = MRI(mask=mask)                               # a deepinv.physics.MRI
    y = physics(x)                                         # deepinv layout (B, 2, H, W)
    x_hat = SDIReconstructor(T=40, K=50)(y, physics)       # self-diffusion via fastsd.solve

:class:`MRI`, :class:`MultiCoilMRI`, :class:`Inpainting`, :class:`BlurFFT` and
:class:`Downsampling` subclass the deepinv physics of the same name and are drop-in
replacements: same constructor arguments, layouts, parameters (``update``,
``update_parameters``, per-call keyword arguments) and results. Where fastsd has a fused operator
for the current configuration, ``A``, ``A_adjoint``, ``A_adjoint_A``, ``prox_l2`` and
``A_dagger`` run on it (``physics.fastsd_op``: fused Triton kernels on CUDA); everywhere else
(per-channel MRI masks or filters, non-circular padding, a parameter that requires grad,
float64 MRI data, ...) the deepinv parent class's own code runs. On CPU tensors a third path is
the default, ``'direct'``: deepinv's computation in plain torch without its per-call bookkeeping
(:mod:`fastsd.interop.deepinv_direct`; ``physics.cpu_path = 'fused'`` runs the fused ops there
too). ``physics.fastsd_path`` (``'fastsd'``, ``'deepinv'`` or ``'direct'``) and
``physics.fallback_reason`` tell which path the last call took, and the ``fastsd.interop.deepinv``
logger records each change of routed path at DEBUG level.

On the fused path ``A``, ``A_adjoint``, ``A_adjoint_A`` and ``prox_l2`` are autograd Functions in
``setup_context`` style, so ``torch.func`` transforms (deepinv computes vector-Jacobian products
with ``torch.func.vjp``) work, and each backward is one application of the adjoint Function
(again differentiable). ``A_dagger`` is differentiable through the fastsd ops it is built from.

Layouts (deepinv's): real images (B, C, H, W); complex MRI images (B, 2, *S) (re, im), with
S = (H, W), or (D, H, W) for ``three_d`` MRI; single-coil k-space (B, 2, *S); multi-coil k-space
(B, 2, N, *S). fastsd's MRI kernels compute in float32 / complex64 (float16 / bfloat16 images
are cast and results cast back).

deepinv's buffers (``mask``, ``coil_maps``, ``filter``, ...) are the only state: the fused
operator is derived from them and rebuilt whenever one is replaced, changed in place or moved,
so ``state_dict``, ``clone()`` and ``.to(device)`` behave as in deepinv.

Needs deepinv (``pip install 'fastsd[deepinv]'``); nothing else in fastsd imports this module.
"""
from __future__ import annotations

import logging

import torch

try:
    import deepinv as _dinv
    from deepinv.models import Reconstructor as _Reconstructor
except Exception as _e:  # ImportError, or a torchvision build that does not match torch
    raise ImportError(
        "fastsd.interop.deepinv needs a working deepinv installation (pip install 'fastsd[deepinv]'); "
        f"importing it failed with {type(_e).__name__}: {_e}"
    ) from _e

from fastsd._checks import check_finite, check_tensor
from fastsd._utils import per_problem
from fastsd.functional.mri import IMAGE_DTYPES
from fastsd.interop import deepinv_direct as _direct
from fastsd.interop.deepinv_direct import DEEPINV_PINV_CUTOFF, DirectPath
from fastsd.ops.base import LinearOperator
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.image import FFT_DTYPES, _as_complex, bicubic_kernel
from fastsd.ops.image import Blur as _FsBlur
from fastsd.ops.image import Downsample as _FsDownsample
from fastsd.ops.image import Inpainting as _FsInpainting
from fastsd.ops.mri import MRI as _FsMRI
from fastsd.ops.mri import MRI3D as _FsMRI3D

__all__ = [
    "MRI",
    "MultiCoilMRI",
    "Inpainting",
    "BlurFFT",
    "Downsampling",
    "SDIReconstructor",
    "PhysicsOperator",
    "to_fastsd",
    "deepinv_downsampling_filter",
]

_log = logging.getLogger(__name__)


# -- autograd Functions ---------------------------------------------------------------------
# ``physics`` and the fused fastsd ``op`` are non-tensor arguments; ``physics._fs_*`` work on
# plain tensors in deepinv's layout.

_ADJOINT = {"forward": "adjoint", "adjoint": "forward", "normal": "normal"}  # backward of each map


class _Linear(torch.autograd.Function):
    """One linear map of the fused op: ``'forward'`` (A), ``'adjoint'`` (A^H) or ``'normal'``
    (A^H A). Its backward is the adjoint map (A^H for A and vice versa; A^H A is self-adjoint),
    again a ``_Linear`` and so again differentiable."""

    @staticmethod
    def forward(t, physics, op, which):
        return physics._fs_apply(op, which, t)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.physics, ctx.op, ctx.which, ctx.dtype = inputs[1], inputs[2], inputs[3], inputs[0].dtype

    @staticmethod
    def backward(ctx, g):
        return _Linear.apply(g, ctx.physics, ctx.op, _ADJOINT[ctx.which]).to(ctx.dtype), None, None, None


class _Prox(torch.autograd.Function):
    """x = P (z + γ A^H y) with P = (I + γ A^H A)^{-1}: dx/dz = P, dx/dy = γ P A^H (P self-adjoint)."""

    @staticmethod
    def forward(z, y, gamma, physics, op):
        return physics._fs_prox(op, z, y, gamma)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, y, gamma, physics, op = inputs
        ctx.physics, ctx.op, ctx.gamma, ctx.z_dtype = physics, op, gamma, z.dtype
        ctx.y_meta = (y.shape, y.dtype, y.device)

    @staticmethod
    def backward(ctx, g):
        shape, y_dtype, y_device = ctx.y_meta
        zeros = torch.zeros(shape, dtype=y_dtype, device=y_device)
        pg = _Prox.apply(g, zeros, ctx.gamma, ctx.physics, ctx.op)
        gz = pg.to(ctx.z_dtype) if ctx.needs_input_grad[0] else None
        gy = None
        if ctx.needs_input_grad[1]:
            a = _Linear.apply(pg, ctx.physics, ctx.op, "forward")
            gy = (per_problem(ctx.gamma, a) * a).to(y_dtype)
        return gz, gy, None, None, None


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


# -- shared implementation ------------------------------------------------------------------


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


# -- MRI ------------------------------------------------------------------------------------


def _mri_op(mask, coil_maps=None, three_d: bool = False) -> tuple[_FsMRI | None, str | None]:
    """fastsd's fused MRI operator for deepinv's mask (B, 2, *S) and coil maps (B, N, *S) (None:
    single coil), S = (H, W), or (D, H, W) with ``three_d`` (then an :class:`~fastsd.ops.mri.MRI3D`),
    or (None, the reason fastsd has none)."""
    nd = 3 if three_d else 2
    dims = "D, H, W" if three_d else "H, W"
    if not isinstance(mask, torch.Tensor):
        return None, f"mask of type {type(mask).__name__}"
    if mask.is_complex():
        return None, "complex mask"
    m = mask.detach()
    if coil_maps is None and m.ndim < nd + 2:  # deepinv's single-coil mask broadcasts from the right
        m = m.reshape((1,) * (nd + 2 - m.ndim) + tuple(m.shape))
    if m.ndim != nd + 2 or m.shape[1] not in (1, 2):
        return None, f"mask of shape {tuple(mask.shape)}: fastsd's MRI takes (B, 2, {dims})"
    if not torch.equal(m[:, 0], m[:, -1]):
        return None, "the mask differs between the real and imaginary channels"
    if not bool(((m == 0) | (m == 1)).all()):
        return None, "the mask is not binary (0/1)"
    m = m[:, 0].to(torch.float32)
    smaps = None
    if coil_maps is not None:
        if coil_maps.ndim != nd + 2 or coil_maps.dtype != torch.complex64:
            return None, (f"coil maps {tuple(coil_maps.shape)} {coil_maps.dtype}: "
                          f"fastsd's MRI takes complex64 (B, N, {dims})")
        smaps = coil_maps.detach()
        smaps = smaps[0] if smaps.shape[0] == 1 else smaps
    try:
        return (_FsMRI3D if three_d else _FsMRI)((m[0] if m.shape[0] == 1 else m).contiguous(), smaps), None
    except ValueError as e:
        return None, str(e)


def _complex_kspace(y: torch.Tensor, multicoil: bool) -> torch.Tensor:
    """deepinv's k-space (B, 2, [N,] *S) as fastsd's complex64 (B, N, *S) (N = 1: single coil)."""
    k = torch.view_as_complex(y.to(torch.float32).movedim(1, -1).contiguous())
    return k if multicoil else k[:, None]


class _MRILayout(_Fused):
    """Image (B, 2, *S) real <-> fastsd float32; k-space (B, 2, [N,] *S) real <-> complex64 (B, N, *S)."""

    _PARAMS = ("mask",)
    _CONFIG = ("three_d",)
    _DIRECT = _direct.MRI
    _multicoil = False
    _native_batched_gamma = False

    def _build(self, size):
        return _mri_op(self.mask, self.coil_maps if self._multicoil else None, self.three_d)

    def _check_call(self, op, t, kind):
        if kind == "x":
            op.check_input(t)
            return
        check_tensor("k-space", t, dtypes=IMAGE_DTYPES)
        nd = op.spatial_dims
        want = nd + 2 + self._multicoil
        if t.ndim != want or t.shape[1] != 2:
            raise ValueError(f"k-space of shape {tuple(t.shape)}: expected {want} dimensions with 2 channels")
        if self._multicoil and t.shape[2] != op.n_coils:
            raise ValueError(f"k-space with {t.shape[2]} coils for {op.n_coils} coil maps")
        if any(n not in (None, s) for n, s in zip(op.img_size, t.shape[-nd:])):
            raise ValueError(f"k-space of size {tuple(t.shape[-nd:])} for an operator of size {op.img_size}")
        if op.mask.ndim == nd + 1 and op.mask.shape[0] != t.shape[0]:
            raise ValueError(f"{op.mask.shape[0]} per-problem masks for a batch of {t.shape[0]}")
        if op.smaps is not None and op.smaps.ndim == nd + 2 and op.smaps.shape[0] != t.shape[0]:
            raise ValueError(f"{op.smaps.shape[0]} per-problem coil maps for a batch of {t.shape[0]}")
        if t.device != op.mask.device:
            raise ValueError(f"k-space on {t.device}, operator on {op.mask.device}")

    def _x_in(self, x):
        return x if x.dtype in IMAGE_DTYPES else x.to(torch.float32)

    def _x_out(self, x, dtype):
        return x.to(dtype)

    def _y_in(self, y):
        return _complex_kspace(y, self._multicoil)

    def _y_out(self, k, dtype):
        return torch.view_as_real(k if self._multicoil else k[:, 0]).movedim(-1, 1).to(dtype)


class MRI(_MRILayout, _dinv.physics.MRI):
    """Single-coil Cartesian MRI ``y = M F x`` (deepinv.physics.MRI) on fastsd's fused MRI ops.

    Args as deepinv's: ``mask`` (H, W), (C, H, W), (B, C, H, W) or higher rank, ``img_size``,
    ``three_d``, ``device``. Fused for binary masks equal on both channels and float32 / float16
    / bfloat16 data, in 2D and 3D (``three_d=True``: volumes (B, 2, D, H, W) on
    :class:`fastsd.ops.mri.MRI3D`, masks broadcast as in deepinv); per-channel or non-binary
    masks, float64 data and a mask that requires grad run deepinv's code (``fastsd_path``).
    ``prox_l2`` is the closed-form k-space data consistency, ``A_dagger`` is ``A_adjoint``
    (A A^H = M).
    """

    def A_adjoint(self, y, mask=None, mag: bool = False, crop: bool = False, **kwargs):
        x = super().A_adjoint(y, mask=mask, **kwargs)
        if mag:
            x = self.rss(x, multicoil=False)
        return self.crop(x, crop=crop) if crop else x


class MultiCoilMRI(_MRILayout, _dinv.physics.MultiCoilMRI):
    """Multi-coil Cartesian MRI ``y_n = M F (s_n x)`` (deepinv.physics.MultiCoilMRI) on fastsd's
    fused MRI ops.

    Args as deepinv's: ``mask``, ``coil_maps`` complex (N, *S) or (B, N, *S) (an int N
    simulates N birdcage coils with :func:`fastsd.ops.coils.birdcage_maps`, no sigpy needed;
    in 3D the same maps on every slice), ``img_size``, ``three_d``. Fused as :class:`MRI`, 2D and
    3D, with complex64 coil maps of the full image size;
    ``prox_l2`` and ``A_dagger`` run conjugate gradients on the fused normal operator.
    ``A_adjoint(y, rss=True)`` (coil images, not a coil combination) is deepinv's code.
    """

    _multicoil = True
    _PARAMS = ("mask", "coil_maps")
    _DIRECT = _direct.MultiCoilMRI

    def __init__(self, mask=None, coil_maps=None, img_size=(320, 320), three_d: bool = False, device="cpu", **kwargs):
        if isinstance(coil_maps, int):
            shape = tuple(mask.shape[-2:]) if isinstance(mask, torch.Tensor) else tuple(img_size[-2:])
            if three_d:
                depth = mask.shape[-3] if isinstance(mask, torch.Tensor) else img_size[-3]
                coil_maps = birdcage_maps(coil_maps, shape)[:, None].expand(-1, depth, -1, -1).contiguous()
            else:
                coil_maps = birdcage_maps(coil_maps, shape)
        super().__init__(mask=mask, coil_maps=coil_maps, img_size=img_size, three_d=three_d, device=device, **kwargs)

    def A_adjoint(self, y, mask=None, coil_maps=None, rss: bool = False, crop: bool = False, **kwargs):
        if rss:  # coil images, not a coil combination: deepinv's path
            return self._parent("A_adjoint", y, mask=mask, coil_maps=coil_maps, rss=True, crop=crop)
        x = super().A_adjoint(y, mask=mask, coil_maps=coil_maps, **kwargs)
        return self.crop(x, crop=crop) if crop else x


# -- image operators ------------------------------------------------------------------------


class _ImageOp(_Fused):
    """Images (B, C, H, W) as they are; the op's own checks decide what it takes."""

    def _check_call(self, op, t, kind):
        op._check(kind, t)


class Inpainting(_ImageOp, _dinv.physics.Inpainting):
    """Inpainting ``y = m ⊙ x`` (deepinv.physics.Inpainting) on fastsd's operator (fused fidelity).

    Args as deepinv's: ``img_size`` (C, H, W), ``mask`` a tensor or a float (the fraction of
    observed pixels, drawn by deepinv's generator), ``pixelwise``, ``device``, ``rng``. Fused for
    binary masks; others (and a mask that requires grad) run deepinv's code.
    """

    _PARAMS = ("mask",)
    _DIRECT = _direct.Inpainting

    def _build(self, size):
        if not isinstance(self.mask, torch.Tensor):
            return None, f"mask of type {type(self.mask).__name__}"
        try:  # fastsd's Inpainting rejects complex masks and masks of more than 4 dimensions
            return _FsInpainting(self.mask.detach()), None
        except ValueError as e:
            return None, str(e)


def _one_kernel(filt: torch.Tensor) -> tuple[torch.Tensor | None, str | None]:
    """deepinv filter (1, c, h, w) with one kernel for all channels -> (h, w), or (None, reason)."""
    if not isinstance(filt, torch.Tensor) or filt.ndim != 4 or filt.shape[0] != 1:
        return None, f"filter of shape {tuple(getattr(filt, 'shape', ()))}: fused for one (1, c, h, w) filter"
    if filt.dtype not in FFT_DTYPES:
        return None, f"filter of dtype {filt.dtype}"
    f = filt.detach()
    if not all(torch.equal(f[0, 0], f[0, c]) for c in range(1, f.shape[1])):
        return None, "a different filter per channel"
    return f[0, 0], None


class _CutoffBlur(_FsBlur):
    """fastsd's Blur with deepinv's pseudo-inverse, taken from deepinv's own buffers (its |H| and
    phase, so the same frequencies are kept and the same values divide): conj(phase) / |H| where
    |H| > 1e-5, 0 elsewhere."""

    def __init__(self, kernel: torch.Tensor, img_size, magnitude: torch.Tensor, phase: torch.Tensor):
        super().__init__(kernel, img_size)
        keep = magnitude > DEEPINV_PINV_CUTOFF
        inverse = torch.where(keep, phase.conj() / torch.where(keep, magnitude, 1.0), 0.0)
        self.register_buffer("inverse", torch.view_as_real(inverse))

    def pinv_diagonal(self, like):
        return _as_complex(self.inverse, like)


class BlurFFT(_ImageOp, _dinv.physics.BlurFFT):
    """Circular blur ``y = h ⊛ x`` (deepinv.physics.BlurFFT) on fastsd's Blur operator.

    Args as deepinv's: ``img_size`` (C, H, W), ``filter`` (1, c, h, w) centred at (h // 2, w // 2)
    (None: given later, per call); ``pinv_threshold``: None (default) gives deepinv's ``A_dagger``
    (frequencies with |H| <= 1e-5 treated as 0, the same frequencies as deepinv's); a number gives
    fastsd's relative rule (|H| < threshold · max |H| treated as 0). Fused for one float32/float64
    filter shared by all channels; per-channel or batched filters and a filter that requires grad
    run deepinv's code.
    """

    _PARAMS = ("filter",)
    _CONFIG = ("img_size", "pinv_threshold")
    _DIRECT = _direct.BlurFFT

    def __init__(self, img_size, filter=None, device="cpu", pinv_threshold: float | None = None, **kwargs):
        self.pinv_threshold = None if pinv_threshold is None else float(pinv_threshold)
        super().__init__(img_size=img_size, filter=filter, device=device, **kwargs)

    def _build(self, size):
        kernel, reason = _one_kernel(self.filter)
        if kernel is None:
            return None, reason
        try:
            if self.pinv_threshold is None:
                magnitude, phase = self.mask.detach()[0, 0, ..., 0], self.angle.detach()[0, 0]
                return _CutoffBlur(kernel, tuple(self.img_size[-2:]), magnitude, phase), None
            return _FsBlur(kernel, tuple(self.img_size[-2:]), self.pinv_threshold), None
        except ValueError as e:
            return None, str(e)


def deepinv_downsampling_filter(filter: str, factor: int, dtype=torch.float32) -> torch.Tensor:
    """The (1, 1, L, L) filter for which ``deepinv.physics.Downsampling(filter=..., factor,
    padding='circular')`` is the same operator as fastsd's ``Downsample(factor, filter)``.

    fastsd's low-res sample i reads x[f·i + d] with weight w[d]; deepinv convolves with a filter
    centred at (L // 2) for odd L and then keeps every f-th pixel, so the taps go to L // 2 − d.
    For ``'bicubic'`` with f = 2 this is deepinv's own ``filter='bicubic'`` (zero-padded to 9 taps);
    for larger f deepinv's ``'bicubic'`` is a different (non-antialiased) filter.
    """
    if filter == "avg":
        w, d = torch.full((factor,), 1.0 / factor, dtype=torch.float64), torch.arange(factor)
    elif filter == "bicubic":
        w, d = bicubic_kernel(factor)
    else:
        raise ValueError(f"filter must be 'avg' or 'bicubic', got {filter!r}")
    r = int(d.abs().max())
    taps = torch.zeros(2 * r + 1, dtype=torch.float64)
    taps[r - d] = w
    return torch.outer(taps, taps)[None, None].to(dtype)


class _CircularDownsample(_FsDownsample):
    """fastsd's Downsample for any circular filter, given by its impulse response ``h`` (H, W)
    (the response at pixel (0, 0), wrapped): the same transfer and aliasing buffers as the
    named filters, so the same closed-form prox and pseudo-inverse."""

    def __init__(self, h: torch.Tensor, factor: int, pinv_threshold: float, dtype: torch.dtype):
        LinearOperator.__init__(self)
        H, W = h.shape
        f = self.factor = int(factor)
        self.filter, self.img_size, self.low_size = "tensor", (H, W), (H // f, W // f)
        self.pinv_threshold = float(pinv_threshold)
        self._set_response(h, dtype)


class Downsampling(_ImageOp, _dinv.physics.Downsampling):
    """Super-resolution ``y = (h ⊛ x)[::f, ::f]`` (deepinv.physics.Downsampling) on fastsd's
    Downsample operator (closed-form ``prox_l2`` and ``A_dagger``).

    Args as deepinv's: ``img_size`` (C, H, W) (None: taken from each input), ``filter``
    (``'gaussian'``, ``'bilinear'``, ``'bicubic'``, ``'sinc'``, a tensor or None, with deepinv's
    meaning; fastsd adds ``'avg'``, the f × f box filter), ``factor``, ``padding``, ``device``;
    ``pinv_threshold``: None (default) gives deepinv's ``A_dagger`` (its least-squares solver, run
    on this class's A and A^H); a number gives fastsd's closed form with the threshold of
    :class:`fastsd.ops.image.Downsample`. Fused for circular padding,
    one filter shared by all channels and sizes divisible by the factor (any filter: the fused
    operator takes the impulse response of deepinv's own convolution); other paddings, per-channel
    filters and a filter that requires grad run deepinv's code.
    """

    _PARAMS = ("filter", "factor")
    _CONFIG = ("padding", "imsize", "pinv_threshold")
    _DIRECT = _direct.Downsampling

    def __init__(self, img_size=None, filter="warn", factor: int = 2, device="cpu", padding: str = "circular",
                 pinv_threshold: float | None = None, **kwargs):
        self.pinv_threshold = None if pinv_threshold is None else float(pinv_threshold)
        if isinstance(filter, str) and filter == "avg":
            filter = deepinv_downsampling_filter("avg", int(factor))
        super().__init__(img_size=img_size, filter=filter, factor=factor, device=device, padding=padding, **kwargs)

    def update_parameters(self, filter=None, factor=None, **kwargs):
        if isinstance(filter, str) and filter == "avg":
            filter = deepinv_downsampling_filter("avg", int(self.factor if factor is None else factor))
        return super().update_parameters(filter=filter, factor=factor, **kwargs)

    def _size(self, t, kind):
        if self.imsize is not None:
            return tuple(self.imsize[-2:])
        if t is None:
            return None
        f = int(self.factor)
        return tuple(t.shape[-2:]) if kind == "x" else (t.shape[-2] * f, t.shape[-1] * f)

    def _build(self, size):
        if self.padding != "circular" and self.filter is not None:  # bare decimation needs no padding
            return None, f"padding={self.padding!r} (fused for 'circular')"
        if size is None:
            return None, "no image size (img_size=None and no input)"
        f, (H, W) = int(self.factor), size
        if H % f or W % f:
            return None, f"image size {(H, W)} not divisible by the factor {f}"
        if self.filter is None:  # bare decimation
            kernel = torch.ones(1, 1)
        else:
            kernel, reason = _one_kernel(self.filter)
            if kernel is None:
                return None, reason
        # the impulse response of deepinv's own circular convolution: exact by construction
        delta = torch.zeros(1, 1, H, W, dtype=torch.float64)
        delta[..., 0, 0] = 1
        try:
            h = _dinv.physics.functional.conv2d(delta, kernel.cpu().double()[None, None], padding="circular")[0, 0]
        except (RuntimeError, ValueError) as e:  # e.g. a filter too large for circular padding
            return None, f"deepinv's circular convolution fails: {e}"
        op = _CircularDownsample(h, f, 1e-3 if self.pinv_threshold is None else self.pinv_threshold, kernel.dtype)
        return op.to(kernel.device), None

    def A_dagger(self, y, **kwargs):
        """deepinv's least-squares ``A_dagger`` (``pinv_threshold=None``), or fastsd's closed form."""
        if self.pinv_threshold is not None:
            return super().A_dagger(y, **kwargs)
        x = self._parent("A_dagger", y, **kwargs)  # the parent class's (deepinv.physics may name this class)
        self.fastsd_path, self.fallback_reason = "deepinv", "A_dagger: deepinv's least-squares solver (pinv_threshold=None)"
        return x

# -- fastsd solvers on deepinv problems -----------------------------------------------------


class PhysicsOperator(LinearOperator):
    """Any ``deepinv.physics.LinearPhysics`` as a fastsd :class:`~fastsd.ops.base.LinearOperator`
    (generic, unfused): A, A^H, A^H A, prox and pinv call the physics' methods."""

    def __init__(self, physics):
        super().__init__()
        if not isinstance(physics, _dinv.physics.LinearPhysics):
            raise ValueError(f"expected a deepinv LinearPhysics, got {type(physics).__name__}")
        self.physics = physics

    def forward(self, x):
        return self.physics.A(x)

    def adjoint(self, y):
        return self.physics.A_adjoint(y)

    def normal(self, x):
        return self.physics.A_adjoint_A(x)

    def check_measurement(self, y):
        return check_finite("y", y)

    def prox_l2(self, z, y, gamma, iters: int = 50):
        return self.physics.prox_l2(z, y, gamma)

    def pinv(self, y, iters: int = 50):
        return self.physics.A_dagger(y)


def to_fastsd(physics, y) -> tuple[LinearOperator, torch.Tensor]:
    """(fastsd operator, measurement in its layout) for a deepinv physics and measurement ``y``.

    The classes of this module give their fused operator where their configuration has one;
    deepinv's own ``MRI`` / ``MultiCoilMRI`` become a fused :class:`fastsd.ops.mri.MRI` (``MRI3D``
    for ``three_d``); any other linear physics (and any configuration without a fused operator)
    is wrapped in :class:`PhysicsOperator`; stacked linear physics (``deepinv.physics.stack``,
    ``y`` a ``TensorList``) become one :class:`~fastsd.interop.deepinv_stack.StackedOperator` over
    the fastsd forms of their parts. Images come back in deepinv's layout either way.
    """
    P = _dinv.physics
    if isinstance(physics, P.StackedLinearPhysics):
        from fastsd.interop.deepinv_stack import stacked_to_fastsd

        return stacked_to_fastsd(physics, y, to_fastsd)
    if isinstance(physics, _Fused):
        op, _ = physics._fused_op(physics._size(y, "y"))
        if op is not None:
            return op, physics._y_in(y)
    elif type(physics) in (P.MRI, P.MultiCoilMRI):
        multi = isinstance(physics, P.MultiCoilMRI)
        op, _ = _mri_op(physics.mask, physics.coil_maps if multi else None, physics.three_d)
        if op is not None:
            return op, _complex_kspace(y, multi)
    if isinstance(physics, P.LinearPhysics):
        return PhysicsOperator(physics), y
    raise ValueError(f"fastsd solvers need a linear physics, got {type(physics).__name__}")


class SDIReconstructor(_Reconstructor):
    """Self-diffusion (or another fastsd solver) as a ``deepinv.models.Reconstructor``.

    ``SDIReconstructor(**options)(y, physics)`` runs ``fastsd.solve(y, op, method, **options)``
    on the fastsd form of ``physics`` (:func:`to_fastsd`) and returns the reconstruction in
    deepinv's image layout. Options are those of the solver (for SDI: ``preset``, ``T``, ``K``,
    ``lr``, ``small``, ``seed``, ``device``, ...). The last :class:`~fastsd.solvers.base.SolveResult`
    is kept in ``result_``. Solvers train networks, so gradients are enabled inside even when the
    caller runs under ``torch.no_grad()``.
    """

    def __init__(self, method: str = "sdi", **options):
        super().__init__()
        from fastsd.solvers.base import get_solver

        get_solver(method)  # fail early on an unknown method
        self.method, self.options = method, dict(options)
        self.result_ = None

    def forward(self, y, physics, **kwargs) -> torch.Tensor:
        """The reconstruction from ``y`` (a tensor, or a ``TensorList`` for stacked physics)."""
        from fastsd.api import solve

        op, y_fs = to_fastsd(physics, y)
        with torch.enable_grad():
            self.result_ = solve(y_fs.detach(), op, self.method, **self.options, **kwargs)
        return self.result_.x

    def extra_repr(self) -> str:
        return f"method={self.method!r}, " + ", ".join(f"{k}={v!r}" for k, v in self.options.items())

