"""deepinv's ``Inpainting``, ``BlurFFT`` and ``Downsampling`` on fastsd's image operators.

Images are (B, C, H, W) as they are; the fused operators take one mask or filter shared by all
channels (deepinv's per-channel ones run deepinv's code).
"""
from __future__ import annotations

import deepinv as _dinv
import torch

from fastsd.interop.deepinv import direct as _direct
from fastsd.interop.deepinv.direct import DEEPINV_PINV_CUTOFF
from fastsd.interop.deepinv.routing import _Fused
from fastsd.ops.base import LinearOperator
from fastsd.ops.image import FFT_DTYPES, _as_complex, bicubic_kernel
from fastsd.ops.image import Blur as _FsBlur
from fastsd.ops.image import Downsample as _FsDownsample
from fastsd.ops.image import Inpainting as _FsInpainting


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
