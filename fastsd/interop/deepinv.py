"""fastsd operators as deepinv physics, and fastsd solvers as a deepinv ``Reconstructor``.

::

    from fastsd.interop.deepinv import MRI, SDIReconstructor

    physics = MRI(mask=mask)                               # a deepinv.physics.MRI
    y = physics(x)                                         # deepinv layout (B, 2, H, W)
    x_hat = SDIReconstructor(T=40, K=50)(y, physics)       # self-diffusion via fastsd.solve

:class:`MRI`, :class:`MultiCoilMRI`, :class:`Inpainting`, :class:`BlurFFT` and
:class:`Downsampling` subclass the deepinv physics of the same name, take the same constructor
arguments (restricted to what fastsd's operator supports) and keep deepinv's tensor layouts, but
run ``A``, ``A_adjoint``, ``A_adjoint_A``, ``prox_l2`` and ``A_dagger`` on the matching fastsd
operator (``physics.fastsd_op``: fused Triton kernels on CUDA). ``A``, ``A_adjoint``,
``A_adjoint_A`` and ``prox_l2`` are autograd Functions in ``setup_context`` style, so
``torch.func`` transforms (deepinv computes vector-Jacobian products with ``torch.func.vjp``)
work, and each backward is one application of the adjoint Function (again differentiable).
``A_dagger`` is differentiable through the fastsd ops it is built from.

Layouts (deepinv's): real images (B, C, H, W); complex MRI images (B, 2, H, W) (re, im);
single-coil k-space (B, 2, H, W); multi-coil k-space (B, 2, N, H, W). fastsd's MRI kernels
compute in float32 / complex64: other floating inputs are cast and results cast back.

The deepinv buffers (``mask``, ``coil_maps``, ``filter``, ...) stay in place and are kept in sync
with the fastsd operator when updated through ``update_parameters`` / ``update`` or the
per-call keyword arguments, so deepinv code that reads them (noise models, ``__mul__``) still
works; all of them follow ``.to(device)``.

Needs deepinv (``pip install 'fastsd[deepinv]'``); nothing else in fastsd imports this module.
"""
from __future__ import annotations

import torch

try:
    import deepinv as _dinv
    from deepinv.models import Reconstructor as _Reconstructor
except Exception as _e:  # ImportError, or a torchvision build that does not match torch
    raise ImportError(
        "fastsd.interop.deepinv needs a working deepinv installation (pip install 'fastsd[deepinv]'); "
        f"importing it failed with {type(_e).__name__}: {_e}"
    ) from _e

from fastsd._checks import check_finite
from fastsd.ops.base import LinearOperator
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.image import Blur as _FsBlur
from fastsd.ops.image import Downsample as _FsDownsample
from fastsd.ops.image import Inpainting as _FsInpainting
from fastsd.ops.image import bicubic_kernel
from fastsd.ops.mri import MRI as _FsMRI

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

_MRI_IMAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# -- autograd Functions ---------------------------------------------------------------------
# ``physics`` is a non-tensor argument; each method ``_fs_*`` works on plain tensors in deepinv's
# layout. The backward of A is A^H and vice versa; A^H A and the prox map are self-adjoint.


class _Forward(torch.autograd.Function):
    @staticmethod
    def forward(x, physics):
        return physics._fs_A(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.physics, ctx.dtype = inputs[1], inputs[0].dtype

    @staticmethod
    def backward(ctx, g):
        return _Adjoint.apply(g, ctx.physics).to(ctx.dtype), None


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(y, physics):
        return physics._fs_AH(y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.physics, ctx.dtype = inputs[1], inputs[0].dtype

    @staticmethod
    def backward(ctx, g):
        return _Forward.apply(g, ctx.physics).to(ctx.dtype), None


class _Normal(torch.autograd.Function):
    @staticmethod
    def forward(x, physics):
        return physics._fs_AHA(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.physics, ctx.dtype = inputs[1], inputs[0].dtype

    @staticmethod
    def backward(ctx, g):
        return _Normal.apply(g, ctx.physics).to(ctx.dtype), None


class _Prox(torch.autograd.Function):
    """x = P (z + γ A^H y) with P = (I + γ A^H A)^{-1}: dx/dz = P, dx/dy = γ P A^H (P self-adjoint)."""

    @staticmethod
    def forward(z, y, gamma, physics):
        return physics._fs_prox(z, y, gamma)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, y, gamma, physics = inputs
        ctx.physics, ctx.gamma, ctx.z_dtype = physics, gamma, z.dtype
        ctx.y_meta = (y.shape, y.dtype, y.device)

    @staticmethod
    def backward(ctx, g):
        shape, y_dtype, y_device = ctx.y_meta
        pg = _Prox.apply(g, torch.zeros(shape, dtype=y_dtype, device=y_device), ctx.gamma, ctx.physics)
        gz = pg.to(ctx.z_dtype) if ctx.needs_input_grad[0] else None
        gy = None
        if ctx.needs_input_grad[1]:
            a = _Forward.apply(pg, ctx.physics)
            gy = (_bcast(ctx.gamma, a) * a).to(y_dtype)
        return gz, gy, None, None


def _bcast(gamma, like: torch.Tensor):
    return gamma.reshape((-1,) + (1,) * (like.ndim - 1)) if isinstance(gamma, torch.Tensor) else gamma


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


class _Fused:
    """Mixin placed before a deepinv physics class: routes its linear-algebra methods to
    ``self.fastsd_op``. Subclasses set ``fastsd_op`` and, where layouts differ, the
    ``_x_in`` / ``_x_out`` / ``_y_in`` / ``_y_out`` conversions (identity here)."""

    _PARAMS: tuple[str, ...] = ()  # per-call keyword arguments that update the operator

    def _x_in(self, x):
        return x

    def _x_out(self, x, dtype):
        return x

    def _y_in(self, y):
        return y

    def _y_out(self, y, dtype):
        return y

    def _update_from_call(self, kwargs: dict) -> None:
        params = {k: kwargs[k] for k in self._PARAMS if kwargs.get(k) is not None}
        if params:
            self.update_parameters(**params)

    # plain-tensor implementations used by the Functions
    def _fs_A(self, x):
        return self._y_out(self.fastsd_op.forward(self._x_in(x)), x.dtype)

    def _fs_AH(self, y):
        return self._x_out(self.fastsd_op.adjoint(self._y_in(y)), y.dtype)

    def _fs_AHA(self, x):
        return self._x_out(self.fastsd_op.normal(self._x_in(x)), x.dtype)

    _native_batched_gamma = True  # whether fastsd_op.prox_l2 takes a (B,) gamma

    def _fs_prox(self, z, y, gamma):
        op, zi, yi = self.fastsd_op, self._x_in(z), self._y_in(y)
        if isinstance(gamma, torch.Tensor) and not self._native_batched_gamma:
            # per-problem γ: the generic CG on I + γ A^H A
            out = LinearOperator.prox_l2(op, zi, yi, _bcast(gamma.to(zi.dtype), zi), iters=self.max_iter)
        else:
            out = op.prox_l2(zi, yi, gamma, iters=self.max_iter)
        return self._x_out(out, z.dtype)

    # deepinv API
    def A(self, x, **kwargs):
        self._update_from_call(kwargs)
        return _Forward.apply(x, self)

    def A_adjoint(self, y, **kwargs):
        self._update_from_call(kwargs)
        return _Adjoint.apply(y, self)

    def A_adjoint_A(self, x, **kwargs):
        self._update_from_call(kwargs)
        return _Normal.apply(x, self)

    def prox_l2(self, z, y, gamma, **kwargs):
        """argmin_x γ/2 ‖A x − y‖² + ½ ‖x − z‖² (fastsd's closed form, or CG where there is none).

        ``z`` may be None or a number (a constant image), as in deepinv; deepinv's solver options
        (``solver``, ``tol``, ...) are ignored; ``max_iter`` sets the CG iterations where CG is used.
        """
        self._update_from_call(kwargs)
        if z is None or isinstance(z, (int, float)):
            like = self.A_adjoint(y).detach()
            z = torch.full_like(like, 0.0 if z is None else float(z))
        if kwargs.get("max_iter") is not None:  # as deepinv: the setting persists
            self.max_iter = int(kwargs["max_iter"])
        return _Prox.apply(z, y, _gamma(gamma, z.shape[0]), self)

    def A_dagger(self, y, **kwargs):
        """Minimum-norm least-squares solution A^† y: fastsd's closed form, or CG with
        ``max_iter`` iterations (persisting, as in deepinv) where there is none."""
        self._update_from_call(kwargs)
        if kwargs.get("max_iter") is not None:
            self.max_iter = int(kwargs["max_iter"])
        return self._x_out(self.fastsd_op.pinv(self._y_in(y), iters=self.max_iter), y.dtype)


# -- MRI ------------------------------------------------------------------------------------


def _fs_mask(mask: torch.Tensor) -> torch.Tensor:
    """deepinv MRI mask (B, 2, H, W) -> fastsd (H, W) or (B, H, W) float32."""
    if mask.ndim != 4:
        raise ValueError(f"fastsd's MRI operator is 2D: expected a mask of shape (B, 2, H, W), got {tuple(mask.shape)}")
    if mask.shape[1] == 2 and not torch.equal(mask[:, 0], mask[:, 1]):
        raise ValueError("the mask must be the same for the real and imaginary channels")
    m = mask[:, 0].to(torch.float32)
    return (m[0] if m.shape[0] == 1 else m).contiguous()


def _fs_smaps(coil_maps: torch.Tensor) -> torch.Tensor:
    """deepinv coil maps (B, N, H, W) complex -> fastsd (N, H, W) or (B, N, H, W) complex64."""
    if coil_maps.ndim != 4:
        raise ValueError(f"fastsd's MRI operator is 2D: expected coil maps (B, N, H, W), got {tuple(coil_maps.shape)}")
    c = coil_maps.to(torch.complex64)
    return (c[0] if c.shape[0] == 1 else c).contiguous()


def _check_2d(three_d: bool) -> None:
    if three_d:
        raise ValueError("fastsd's MRI operator is 2D; three_d=True is not supported")


class _MRILayout(_Fused):
    """Image (B, 2, H, W) real <-> fastsd float32; k-space (B, 2, [N,] H, W) real <-> complex64."""

    _PARAMS = ("mask", "coil_maps")
    _multicoil = False
    _native_batched_gamma = False

    def _x_in(self, x):
        return x if x.dtype in _MRI_IMAGE_DTYPES else x.to(torch.float32)

    def _x_out(self, x, dtype):
        return x.to(dtype)

    def _y_in(self, y):
        k = torch.view_as_complex(y.to(torch.float32).movedim(1, -1).contiguous())
        return k if self._multicoil else k[:, None]

    def _y_out(self, k, dtype):
        return torch.view_as_real(k if self._multicoil else k[:, 0]).movedim(-1, 1).to(dtype)

    def _sync(self) -> None:
        smaps = _fs_smaps(self.coil_maps) if self._multicoil else None
        self.fastsd_op = _FsMRI(_fs_mask(self.mask), smaps)

    def update_parameters(self, **kwargs):
        super().update_parameters(**kwargs)
        if "fastsd_op" in self._modules and any(kwargs.get(k) is not None for k in self._PARAMS):
            self._sync()


class MRI(_MRILayout, _dinv.physics.MRI):
    """Single-coil Cartesian MRI ``y = M F x`` (deepinv.physics.MRI) on fastsd's fused MRI ops.

    Args as deepinv's: ``mask`` (H, W), (C, H, W) or (B, C, H, W) of 0/1 (ones of ``img_size``
    when None); ``three_d`` must be False. ``prox_l2`` is the closed-form k-space data
    consistency, ``A_dagger`` is ``A_adjoint`` (A A^H = M). ``A_adjoint(y, mag=True / crop=True)``
    post-processes as deepinv does.
    """

    def __init__(self, mask=None, img_size=(320, 320), three_d: bool = False, device="cpu", **kwargs):
        _check_2d(three_d)
        super().__init__(mask=mask, img_size=img_size, three_d=False, device=device, **kwargs)
        self._sync()

    def A_adjoint(self, y, mask=None, mag: bool = False, crop: bool = False, **kwargs):
        x = super().A_adjoint(y, mask=mask, **kwargs)
        if mag:
            x = self.rss(x, multicoil=False)
        return self.crop(x, crop=crop) if crop else x


class MultiCoilMRI(_MRILayout, _dinv.physics.MultiCoilMRI):
    """Multi-coil Cartesian MRI ``y_n = M F (s_n x)`` (deepinv.physics.MultiCoilMRI) on fastsd's
    fused MRI ops.

    Args as deepinv's: ``mask``, ``coil_maps`` complex (N, H, W) or (B, N, H, W) (an int N
    simulates N birdcage coils with :func:`fastsd.ops.coils.birdcage_maps`, no sigpy needed),
    ``img_size``; ``three_d`` must be False. ``prox_l2`` and ``A_dagger`` run conjugate gradients
    on the fused normal operator. ``A_adjoint(y, rss=True)`` falls back to deepinv's own code.
    """

    _multicoil = True

    def __init__(self, mask=None, coil_maps=None, img_size=(320, 320), three_d: bool = False, device="cpu", **kwargs):
        _check_2d(three_d)
        if isinstance(coil_maps, int):
            shape = tuple(mask.shape[-2:]) if isinstance(mask, torch.Tensor) else tuple(img_size[-2:])
            coil_maps = birdcage_maps(coil_maps, shape)
        super().__init__(mask=mask, coil_maps=coil_maps, img_size=img_size, three_d=False, device=device, **kwargs)
        self._sync()

    def A_adjoint(self, y, mask=None, coil_maps=None, rss: bool = False, crop: bool = False, **kwargs):
        if rss:  # coil images, not a coil combination: deepinv's path
            return _dinv.physics.MultiCoilMRI.A_adjoint(self, y, mask=mask, coil_maps=coil_maps, rss=True, crop=crop)
        x = super().A_adjoint(y, mask=mask, coil_maps=coil_maps, **kwargs)
        return self.crop(x, crop=crop) if crop else x


# -- image operators ------------------------------------------------------------------------


class Inpainting(_Fused, _dinv.physics.Inpainting):
    """Inpainting ``y = m ⊙ x`` (deepinv.physics.Inpainting) on fastsd's operator (fused fidelity).

    Args as deepinv's: ``img_size`` (C, H, W), ``mask`` a 0/1 tensor or a float (the fraction of
    observed pixels, drawn by deepinv's generator); a mask is required.
    """

    _PARAMS = ("mask",)

    def __init__(self, img_size, mask=None, pixelwise: bool = True, device="cpu", rng=None, **kwargs):
        if mask is None:
            raise ValueError("mask is required (a 0/1 tensor or the fraction of observed pixels)")
        super().__init__(img_size=img_size, mask=mask, pixelwise=pixelwise, device=device, rng=rng, **kwargs)
        self._sync()

    def _sync(self) -> None:
        self.fastsd_op = _FsInpainting(self.mask)

    def update_parameters(self, mask=None, **kwargs):
        super().update_parameters(mask=mask, **kwargs)
        if mask is not None and "fastsd_op" in self._modules:
            self._sync()


def _single_kernel(filt: torch.Tensor) -> torch.Tensor:
    """deepinv blur filter (1, c, h, w) (or (h, w)) with one kernel for all channels -> (h, w)."""
    if filt.ndim == 2:
        return filt
    if filt.ndim != 4 or filt.shape[0] != 1:
        raise ValueError(f"expected one blur filter of shape (1, c, h, w), got {tuple(filt.shape)}")
    if not all(torch.equal(filt[0, 0], filt[0, c]) for c in range(1, filt.shape[1])):
        raise ValueError("fastsd's Blur applies one kernel to every channel; got different kernels per channel")
    return filt[0, 0]


class BlurFFT(_Fused, _dinv.physics.BlurFFT):
    """Circular blur ``y = h ⊛ x`` (deepinv.physics.BlurFFT) on fastsd's Blur operator.

    Args as deepinv's: ``img_size`` (C, H, W), ``filter`` (1, c, h, w) (or (h, w)) with the same
    kernel for every channel, centred at (h // 2, w // 2) as in deepinv; float32 or float64.
    ``pinv_threshold``: ``A_dagger`` treats frequencies with |H| < threshold · max |H| as 0.
    """

    _PARAMS = ("filter",)

    def __init__(self, img_size, filter=None, device="cpu", pinv_threshold: float = 1e-3, **kwargs):
        if filter is None:
            raise ValueError("filter is required")
        super().__init__(img_size=img_size, filter=filter, device=device, **kwargs)
        self.pinv_threshold = float(pinv_threshold)
        self._sync()

    def _sync(self) -> None:
        self.fastsd_op = _FsBlur(_single_kernel(self.filter), tuple(self.img_size[-2:]), self.pinv_threshold)

    def update_parameters(self, filter=None, **kwargs):
        super().update_parameters(filter=filter, **kwargs)
        if filter is not None and "fastsd_op" in self._modules:
            self._sync()


def deepinv_downsampling_filter(filter: str, factor: int, dtype=torch.float32) -> torch.Tensor:
    """The (1, 1, L, L) filter for which ``deepinv.physics.Downsampling(filter=..., factor,
    padding='circular')`` is the same operator as fastsd's ``Downsample(factor, filter)``.

    fastsd's low-res sample i reads x[f·i + d] with weight w[d]; deepinv convolves with a filter
    centred at (L // 2) for odd L and then keeps every f-th pixel, so the taps go to L // 2 − d.
    For ``'bicubic'`` with f = 2 this is deepinv's own ``filter='bicubic'`` (zero-padded to 9 taps).
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


class Downsampling(_Fused, _dinv.physics.Downsampling):
    """Super-resolution ``y = (h ⊛ x)[::f, ::f]`` with circular padding (deepinv.physics.Downsampling)
    on fastsd's Downsample operator (closed-form ``prox_l2`` and ``A_dagger``).

    Args: ``img_size`` (C, H, W) with H, W multiples of ``factor`` (2, 4, 8 or 16); ``filter``
    'bicubic' (Keys a = −0.5, antialiased, as PIL) or 'avg' (f × f box); ``padding`` must be
    'circular'; ``dtype`` the precision of the filter buffers; ``pinv_threshold`` as in
    :class:`fastsd.ops.image.Downsample`. deepinv's own ``filter`` buffer holds the equivalent
    tensor (:func:`deepinv_downsampling_filter`).
    """

    def __init__(self, img_size, filter: str = "bicubic", factor: int = 2, device="cpu", padding: str = "circular",
                 pinv_threshold: float = 1e-3, dtype: torch.dtype = torch.float32, **kwargs):
        if padding != "circular":
            raise ValueError(f"fastsd's Downsample is circular; padding={padding!r} is not supported")
        if img_size is None or len(img_size) != 3:
            raise ValueError(f"img_size (C, H, W) is required, got {img_size!r}")
        if not isinstance(filter, str):
            raise ValueError("filter must be 'avg' or 'bicubic' (fastsd's Downsample filters)")
        op = _FsDownsample(factor, filter, img_size=tuple(img_size[-2:]), pinv_threshold=pinv_threshold, dtype=dtype)
        super().__init__(img_size=tuple(img_size), filter=deepinv_downsampling_filter(filter, factor, dtype),
                         factor=factor, device=device, padding="circular", **kwargs)
        self.filter_name = filter
        self.fastsd_op = op.to(device)

    def update_parameters(self, filter=None, factor=None, **kwargs):
        if filter is None and factor is None:
            return super().update_parameters(**kwargs)
        name = self.filter_name if filter is None else filter
        if not isinstance(name, str):
            raise ValueError("fastsd's Downsampling only takes filter 'avg' or 'bicubic', not a tensor")
        factor = self.factor if factor is None else int(factor)
        old = self.fastsd_op
        op = _FsDownsample(factor, name, img_size=old.img_size, pinv_threshold=old.pinv_threshold,
                           dtype=old.transfer.dtype).to(old.transfer.device)
        super().update_parameters(filter=deepinv_downsampling_filter(name, factor, old.transfer.dtype), factor=factor,
                                  **kwargs)
        self.filter_name, self.fastsd_op = name, op


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


def to_fastsd(physics, y: torch.Tensor) -> tuple[LinearOperator, torch.Tensor]:
    """(fastsd operator, measurement in its layout) for a deepinv physics and measurement ``y``.

    The classes of this module give their fused ``fastsd_op``; deepinv's own 2D ``MRI`` /
    ``MultiCoilMRI`` become a fused :class:`fastsd.ops.mri.MRI`; any other linear physics is
    wrapped in :class:`PhysicsOperator`. Images come back in deepinv's layout either way.
    """
    if isinstance(physics, _Fused):
        return physics.fastsd_op, physics._y_in(y)
    P = _dinv.physics
    if type(physics) in (P.MRI, P.MultiCoilMRI) and not physics.three_d:
        multi = isinstance(physics, P.MultiCoilMRI)
        smaps = _fs_smaps(physics.coil_maps) if multi else None
        op = _FsMRI(_fs_mask(physics.mask), smaps)
        k = torch.view_as_complex(y.to(torch.float32).movedim(1, -1).contiguous())
        return op, (k if multi else k[:, None])
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

    def forward(self, y: torch.Tensor, physics, **kwargs) -> torch.Tensor:
        from fastsd.api import solve

        op, y_fs = to_fastsd(physics, y)
        with torch.enable_grad():
            self.result_ = solve(y_fs.detach(), op, self.method, **self.options, **kwargs)
        return self.result_.x

    def extra_repr(self) -> str:
        return f"method={self.method!r}, " + ", ".join(f"{k}={v!r}" for k, v in self.options.items())

