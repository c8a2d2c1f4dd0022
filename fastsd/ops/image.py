"""Image-domain operators: inpainting, denoising, FFT blur and downsampling (super-resolution).

All act on real images ``x`` of shape (B, C, H, W) (batch dim 0 = independent problems, any
channel count) and are exact adjoint pairs, so solvers can use ``adjoint``, ``prox_l2``,
``project`` and ``pinv`` interchangeably with the MRI operators. Convolutions are circular
(periodic boundary), which makes every operator diagonal in Fourier and gives closed forms for
the proximal map and the pseudo-inverse instead of the generic conjugate-gradient solves:
Inpainting, Denoise and Blur are :class:`~fastsd.ops.base.DiagonalOperator` s (pixel and Fourier
basis), Downsample has its own closed forms through the aliased low-resolution system. Image
masks live in :mod:`fastsd.ops.image_masks` (re-exported here).
``fidelity`` runs the fused ``fastsd::masked_fidelity`` op: with the mask (Inpainting), without
(Denoise), or on the residual ``A x − y`` with the gradient chained through ``Aᴴ`` (Blur,
Downsample). Its loss is float32 (float64 for float64 images).

Buffers (masks, transfer functions) follow ``.to(device)``; images of another floating precision
than a buffer are accepted and the buffer is cast to the image's precision.
"""
from __future__ import annotations

import math

import torch

from fastsd._checks import FLOAT_DTYPES, check_finite, check_tensor
from fastsd.functional.fidelity import masked_fidelity, residual_loss
from fastsd.ops.base import CheckedOperator, DiagonalOperator, as_gamma
from fastsd.ops.image_masks import box_mask, random_pixel_mask

__all__ = [
    "Inpainting",
    "Denoise",
    "Blur",
    "Downsample",
    "random_pixel_mask",
    "box_mask",
    "gaussian_kernel",
    "anisotropic_gaussian_kernel",
    "motion_kernel",
    "bicubic_kernel",
]

FFT_DTYPES = (torch.float32, torch.float64)


# -- shared helpers ---------------------------------------------------------------------------


def _img_size(img_size) -> tuple[int, int]:
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    img_size = tuple(int(s) for s in img_size)
    if len(img_size) != 2 or min(img_size) < 1:
        raise ValueError(f"img_size must be an int or (H, W) of positive sizes, got {img_size}")
    return img_size


def _check_image(op, name: str, t: torch.Tensor, size, device, dtypes=FLOAT_DTYPES) -> torch.Tensor:
    check_tensor(name, t, ndim=4, dtypes=dtypes, device=device)
    if tuple(t.shape[-2:]) != tuple(size):
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected (B, C, {size[0]}, {size[1]}) "
                         f"for this {type(op).__name__} operator")
    return t


def _residual_fidelity(op, x: torch.Tensor, y: torch.Tensor):
    """``fidelity`` of a non-mask operator: the fused residual loss on ``A x`` (loss and ``2 r`` in
    one pass), the gradient chained through ``A^H``."""
    op.check_pair(x, y)
    with torch.no_grad():
        loss, g = residual_loss(op.forward(x), y, validate=False)
        return loss, op.adjoint(g)


def _placed(taps: torch.Tensor, offsets: tuple[torch.Tensor, torch.Tensor], size) -> torch.Tensor:
    """Array of ``size`` with ``taps[i, j]`` added at (offsets[0][i], offsets[1][j]) mod size."""
    H, W = size
    rows = (offsets[0] % H)[:, None].expand(taps.shape)
    cols = (offsets[1] % W)[None, :].expand(taps.shape)
    out = torch.zeros(size, dtype=taps.dtype)
    return out.index_put_((rows.reshape(-1), cols.reshape(-1)), taps.reshape(-1), accumulate=True)


def _as_complex(buf: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The complex array stored as a real (..., 2) buffer, in ``like``'s precision."""
    return torch.view_as_complex(buf.to(like.dtype).contiguous())


def _truncated_inverse(d: torch.Tensor, threshold: float) -> torch.Tensor:
    """``1 / d`` where ``|d| > threshold · max |d|``, 0 elsewhere (a truncated-SVD inverse)."""
    mag = d.abs()
    keep = mag > threshold * mag.max()
    return torch.where(keep, 1 / torch.where(keep, d, torch.ones_like(d)), torch.zeros_like(d))


# -- inpainting and denoising -----------------------------------------------------------------


class Inpainting(DiagonalOperator):
    """A x = m ⊙ x with a binary mask ``m`` (1 = observed pixel).

    ``mask`` has shape (H, W), (C, H, W) or (B, C, H, W); leading sizes of 1 broadcast. A is
    diagonal in the pixel basis with m² = m, so m⁺ = m and every derived operation has a closed
    form; the fidelity runs the fused ``masked_fidelity`` op (one pass for loss and gradient).
    """

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        check_tensor("mask", mask, ndim=(2, 3, 4))
        if mask.dtype == torch.bool:
            mask = mask.float()
        if not mask.is_floating_point():
            raise ValueError(f"mask must be a bool or floating tensor, got dtype {mask.dtype}")
        check_finite("mask", mask)
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must contain only 0 and 1")
        self.register_buffer("mask", mask.clone())

    def _check(self, name: str, t: torch.Tensor) -> torch.Tensor:
        m = self.mask
        _check_image(self, name, t, m.shape[-2:], m.device)
        lead = (1,) * (4 - m.ndim) + tuple(m.shape[:-2])
        for dim, (ms, ts) in enumerate(zip(lead, t.shape[:2])):
            if ms not in (1, ts):
                raise ValueError(f"mask of shape {tuple(m.shape)} does not match {name} of shape {tuple(t.shape)} "
                                 f"(dimension {dim})")
        return t

    def diagonal(self, like: torch.Tensor) -> torch.Tensor:
        """The mask in ``like``'s precision, as (B|1, C|1, H, W)."""
        m = self.mask.to(like.dtype)
        return m.reshape((1,) * (4 - m.ndim) + tuple(m.shape))

    def fidelity(self, x, y):
        """Fused ``masked_fidelity`` (one pass; the mask is read with broadcast strides)."""
        self.check_pair(x, y)
        return masked_fidelity(x, y, self.mask, validate=False)


class Denoise(DiagonalOperator):
    """The identity (denoising: y = x + noise). Accepts real tensors of any shape (B, ...)."""

    def _check(self, name, t):
        check_tensor(name, t, dtypes=FLOAT_DTYPES)
        if t.ndim < 1:
            raise ValueError(f"{name} must have a batch dimension, got a scalar")
        return t

    def diagonal(self, like):
        return None  # s = 1

    def fidelity(self, x, y):
        """Fused ``masked_fidelity`` without a mask (one pass)."""
        self.check_pair(x, y)
        return masked_fidelity(x, y, None, validate=False)


# -- blur ------------------------------------------------------------------------------------


def gaussian_kernel(sigma: float, size: int | None = None) -> torch.Tensor:
    """Isotropic Gaussian blur kernel (size × size, default odd 2⌈3σ⌉+1), normalised to sum 1."""
    return anisotropic_gaussian_kernel(sigma, sigma, 0.0, size)


def anisotropic_gaussian_kernel(sigma_x: float, sigma_y: float, angle_deg: float = 0.0,
                                size: int | None = None) -> torch.Tensor:
    """Gaussian with standard deviations ``sigma_x`` / ``sigma_y`` along axes rotated by
    ``angle_deg`` (counter-clockwise, image x to the right, y up); float32 (size, size), sum 1."""
    if not (sigma_x > 0 and sigma_y > 0):
        raise ValueError(f"sigmas must be > 0, got {sigma_x}, {sigma_y}")
    size = _kernel_size(size, 2 * math.ceil(3 * max(sigma_x, sigma_y)) + 1)
    c = (size - 1) / 2
    r = torch.arange(size, dtype=torch.float64) - c
    yy, xx = -r[:, None], r[None, :]  # row index grows downwards, y upwards
    t = math.radians(angle_deg)
    u = math.cos(t) * xx + math.sin(t) * yy
    v = -math.sin(t) * xx + math.cos(t) * yy
    k = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).float()


def motion_kernel(length: float, angle_deg: float = 0.0, size: int | None = None) -> torch.Tensor:
    """Linear motion blur over ``length`` pixels (≥ 1) along a centred segment at ``angle_deg``
    (counter-clockwise from the x axis), rasterised by bilinear splatting; float32, sum 1."""
    if not length >= 1:
        raise ValueError(f"length must be >= 1, got {length}")
    half = (length - 1) / 2  # end points at pixel centres: an integer length covers that many pixels
    size = _kernel_size(size, 2 * math.ceil(half) + 1)
    c = (size - 1) / 2
    t = math.radians(angle_deg)
    s = torch.linspace(-half, half, max(2, int(math.ceil(length * 16))), dtype=torch.float64)
    px, py = c + s * math.cos(t), c - s * math.sin(t)  # column, row
    k = torch.zeros(size, size, dtype=torch.float64)
    x0, y0 = px.floor(), py.floor()
    for dx in (0, 1):
        for dy in (0, 1):
            w = (1 - (px - x0 - dx).abs()) * (1 - (py - y0 - dy).abs())
            cols, rows = (x0 + dx).long(), (y0 + dy).long()
            inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size) & (w > 0)
            k.index_put_((rows[inside], cols[inside]), w[inside], accumulate=True)
    return (k / k.sum()).float()


def _kernel_size(size, default: int) -> int:
    size = default if size is None else int(size)
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    return size


def _centred_taps(kernel: torch.Tensor):
    """Offsets of a convolution kernel whose centre is element (kh // 2, kw // 2)."""
    kh, kw = kernel.shape
    return torch.arange(kh) - kh // 2, torch.arange(kw) - kw // 2


class Blur(DiagonalOperator):
    """Circular convolution y = k ⊛ x, applied per channel in Fourier.

    ``kernel`` (kh, kw) is centred at element (kh // 2, kw // 2); taps reaching beyond the image
    wrap around. A is diagonal in the (half-spectrum, ``rfft2``) Fourier basis with the transfer
    function H, a buffer in the kernel's precision (pass a float64 kernel for float64 accuracy).
    ``pinv`` is the truncated-SVD inverse: frequencies with |H| < ``pinv_threshold`` · max|H| are
    treated as 0, since dividing by them only amplifies noise.
    """

    def __init__(self, kernel: torch.Tensor, img_size, pinv_threshold: float = 1e-3):
        super().__init__()
        check_tensor("kernel", kernel, ndim=2, dtypes=FFT_DTYPES)
        check_finite("kernel", kernel)
        self.img_size = _img_size(img_size)
        self.pinv_threshold = float(pinv_threshold)
        h = _placed(kernel.detach().cpu().double(), _centred_taps(kernel), self.img_size)
        transfer = torch.view_as_real(torch.fft.rfft2(h)).to(kernel.dtype)
        self.register_buffer("kernel", kernel.detach().clone())
        self.register_buffer("transfer", transfer.to(kernel.device))

    def _check(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return _check_image(self, name, t, self.img_size, self.transfer.device, FFT_DTYPES)

    def transfer_function(self, like: torch.Tensor) -> torch.Tensor:
        """H as a complex (H, W // 2 + 1) half spectrum in ``like``'s precision."""
        return _as_complex(self.transfer, like)

    diagonal = transfer_function

    def pinv_diagonal(self, like):
        """1 / H on the frequencies kept by ``pinv_threshold``, 0 elsewhere."""
        return _truncated_inverse(self.transfer_function(like), self.pinv_threshold)

    def to_basis(self, x):
        return torch.fft.rfft2(x)

    def from_basis(self, c):
        return torch.fft.irfft2(c, s=self.img_size)

    def fidelity(self, x, y):
        return _residual_fidelity(self, x, y)


# -- downsampling -----------------------------------------------------------------------------


def _keys_cubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def bicubic_kernel(factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D antialiasing bicubic filter (Keys, a = −0.5, support stretched by ``factor``) used to
    downsample by an even ``factor``: returns (weights, offsets) such that low-res sample i is
    Σ_d w[d] x[factor·i + d], i.e. centred at input coordinate factor·i + (factor − 1)/2 as in
    PIL / ``F.interpolate(..., mode='bicubic', antialias=True)``. float64, sum 1, 4·factor taps."""
    f = int(factor)
    d = torch.arange(-3 * f // 2, 5 * f // 2, dtype=torch.float64)
    w = _keys_cubic((d - (f - 1) / 2) / f)
    return w / w.sum(), d.long()


class Downsample(CheckedOperator):
    """Super-resolution: y = (h ⊛ x)[::f, ::f] with circular filtering.

    ``filter='avg'``: low-res pixel i is the mean of the f × f block starting at f·i (as
    ``F.avg_pool2d``). ``filter='bicubic'``: the antialiasing Keys (a = −0.5) kernel with 4f taps
    per axis, sampling at f·i + (f − 1)/2 (as PIL / torch antialiased bicubic resizing). H and W
    must be multiples of f.

    Closed forms come from the aliasing structure of A Aᴴ: it is a circular convolution on the
    low-res grid with transfer D(k) = f⁻² Σ_j |H(k + j·(H/f, W/f))|² (Zhao et al. 2016, "Fast single
    image super-resolution using a new analytical solution for ℓ2–ℓ2 problems"), so
    ``prox_l2`` = b − γ Aᴴ (I + γ A Aᴴ)⁻¹ A b with b = z + γ Aᴴ y (Woodbury), and
    ``pinv`` = Aᴴ (A Aᴴ)⁻¹ with D < ``pinv_threshold``² · max D treated as 0 (singular values
    below ``pinv_threshold`` × the largest). ``dtype`` is the precision of the filter buffers.
    """

    FACTORS = (2, 4, 8, 16)
    FILTERS = ("avg", "bicubic")

    def __init__(self, factor: int, filter: str = "bicubic", img_size=None, pinv_threshold: float = 1e-3,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if factor not in self.FACTORS:
            raise ValueError(f"factor must be one of {self.FACTORS}, got {factor}")
        if filter not in self.FILTERS:
            raise ValueError(f"filter must be one of {self.FILTERS}, got {filter!r}")
        if img_size is None:
            raise ValueError("img_size (H, W) is required")
        if dtype not in FFT_DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.factor, self.filter = int(factor), filter
        self.img_size = _img_size(img_size)
        self.pinv_threshold = float(pinv_threshold)
        H, W = self.img_size
        f = self.factor
        if H % f or W % f:
            raise ValueError(f"img_size {self.img_size} must be divisible by the factor {f}")
        self.low_size = (H // f, W // f)
        if filter == "avg":
            w1, d1 = torch.full((f,), 1.0 / f, dtype=torch.float64), torch.arange(f)
        else:
            w1, d1 = bicubic_kernel(f)
        # correlation taps g[d] (low-res i reads x[f i + d]) = convolution taps h[-d]
        self._set_response(_placed(w1[:, None] * w1[None, :], (-d1, -d1), self.img_size), dtype)

    def _set_response(self, h: torch.Tensor, dtype: torch.dtype) -> None:
        """The ``transfer`` and ``alias`` buffers (in ``dtype``) of the circular filter whose impulse
        response (the response at pixel (0, 0), wrapped) is ``h`` (H, W), computed in float64."""
        f, (H, W) = self.factor, h.shape
        full = torch.fft.fft2(h.double())
        alias = full.abs().square().reshape(f, H // f, f, W // f).sum((0, 2)) / f**2
        self.register_buffer("transfer", torch.view_as_real(full[:, : W // 2 + 1]).to(dtype))
        self.register_buffer("alias", alias[:, : W // f // 2 + 1].to(dtype))

    def _check(self, name: str, t: torch.Tensor) -> torch.Tensor:
        size = self.low_size if name == "y" else self.img_size
        return _check_image(self, name, t, size, self.transfer.device, FFT_DTYPES)

    def _down(self, x):
        t = _as_complex(self.transfer, x)
        f = self.factor
        return torch.fft.irfft2(torch.fft.rfft2(x) * t, s=self.img_size)[..., ::f, ::f]

    def _up(self, y):
        # the spectrum of the zero-upsampled y is the low-res spectrum tiled f × f times
        t = _as_complex(self.transfer, y)
        f, W = self.factor, self.img_size[1]
        spec = torch.fft.fft2(y).repeat(1, 1, f, f)[..., : W // 2 + 1]
        return torch.fft.irfft2(spec * t.conj(), s=self.img_size)

    def _low_filter(self, v, t):
        return torch.fft.irfft2(torch.fft.rfft2(v) * t, s=self.low_size)

    def forward(self, x):
        self.check_input(x)
        return self._down(x)

    def adjoint(self, y):
        self.check_measurement(y, finite=False)
        return self._up(y)

    def measurement_shape(self, x_shape) -> tuple[int, ...]:
        """Shape of ``A x`` for an image of shape ``x_shape``."""
        return tuple(x_shape[:-2]) + self.low_size

    def fidelity(self, x, y):
        return _residual_fidelity(self, x, y)

    def prox_l2(self, z, y, gamma, iters=None):
        """Closed form via the aliased low-res system (see the class docstring); ``iters`` is unused."""
        self.check_pair(z, y, "z")
        g = as_gamma(gamma, z)
        b = z + g * self._up(y)
        w = self._low_filter(self._down(b), 1 / (1 + g * self.alias.to(z.dtype)))
        return b - g * self._up(w)

    def _inverse_alias(self, like):
        return _truncated_inverse(self.alias.to(like.dtype), self.pinv_threshold**2)  # D ≥ 0

    def pinv(self, y, iters=None):
        """Aᴴ (A Aᴴ)⁻¹ y in closed form; ``iters`` is unused."""
        self.check_measurement(y)
        return self._up(self._low_filter(y, self._inverse_alias(y)))

    def project(self, x, y, iters=None):
        """x − A^†(A x − y): exact A x = y (up to the ``pinv`` threshold)."""
        self.check_pair(x, y)
        r = self._down(x) - y
        return x - self._up(self._low_filter(r, self._inverse_alias(x)))
