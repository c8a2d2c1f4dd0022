"""Image quality metrics: PSNR, SSIM and NMSE, following fastMRI's conventions by default.

Inputs are NumPy arrays or tensors (moved to CPU, computed in float64). A 2D array is one image;
a 3D array ``(N, H, W)`` is a stack of slices or channels, over which SSIM is averaged. Use
:func:`magnitude` to turn a complex image in the 2-channel layout ``(B, 2, H, W)`` into ``|x|``.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["psnr", "ssim", "nmse", "magnitude"]


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        a = a.to(torch.complex128 if a.is_complex() else torch.float64).numpy()
    a = np.asarray(a)
    if np.iscomplexobj(a):
        raise ValueError("metrics need real images; take magnitude() first")
    return a.astype(np.float64)


def _pair(x, target) -> tuple[np.ndarray, np.ndarray]:
    x, target = _np(x), _np(target)
    if x.shape != target.shape:
        raise ValueError(f"image shape {x.shape} does not match target shape {target.shape}")
    return x, target


def magnitude(x) -> torch.Tensor:
    """``|x|`` of a complex image: complex (..., H, W), 2-channel real (B, 2, H, W) -> (B, H, W), or
    a 2-channel volume (B, 2, D, H, W) -> (B, D, H, W)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if x.is_complex():
        return x.abs()
    dim = 1 if x.ndim == 5 else -3
    if x.ndim < 3 or x.shape[dim] != 2:
        raise ValueError(f"expected a complex tensor or a 2-channel (re, im) image, got shape {tuple(x.shape)}")
    return torch.linalg.vector_norm(x, dim=dim)


def nmse(x, target) -> float:
    """Normalised MSE ``‖x − target‖² / ‖target‖²``."""
    x, target = _pair(x, target)
    return float(np.sum((x - target) ** 2) / max(np.sum(target**2), np.finfo(np.float64).tiny))


def psnr(x, target, data_range: float | None = None) -> float:
    """PSNR in dB; ``data_range`` defaults to ``target.max()`` (fastMRI)."""
    x, target = _pair(x, target)
    rng = float(target.max()) if data_range is None else float(data_range)
    mse = np.mean((x - target) ** 2)
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(rng**2 / mse))


def _ssim_fastmri(x: np.ndarray, target: np.ndarray, data_range: float, win: int, k1: float, k2: float) -> float:
    """Mean SSIM over the valid positions of a ``win`` x ``win`` uniform window (sample covariance)."""
    xt = torch.from_numpy(x)[:, None]
    tt = torch.from_numpy(target)[:, None]
    w = torch.full((1, 1, win, win), 1.0 / win**2, dtype=torch.float64)
    cov_norm = win**2 / (win**2 - 1)

    def mean(a):
        return torch.nn.functional.conv2d(a, w)

    ux, uy = mean(xt), mean(tt)
    vx = cov_norm * (mean(xt * xt) - ux * ux)
    vy = cov_norm * (mean(tt * tt) - uy * uy)
    vxy = cov_norm * (mean(xt * tt) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s.mean(dim=(1, 2, 3)).mean())


def ssim(
    x,
    target,
    data_range: float | None = None,
    style: str = "fastmri",
    win_size: int | None = None,
    k1: float = 0.01,
    k2: float = 0.03,
    **skimage_kwargs,
) -> float:
    """SSIM of a 2D image or the mean over a (N, H, W) stack.

    ``style='fastmri'``: ``win_size`` (default 7) square uniform window, sample covariance, ``data_range = target.max()``
    (what fastMRI reports). ``style='skimage'``: delegates to
    ``skimage.metrics.structural_similarity`` (extra keyword arguments such as
    ``gaussian_weights=True`` pass through) with ``data_range = target.max() - target.min()``
    unless given.
    """
    x, target = _pair(x, target)
    if x.ndim == 2:
        x, target = x[None], target[None]
    if x.ndim != 3:
        raise ValueError(f"ssim needs a 2D image or a (N, H, W) stack, got shape {x.shape}")
    if style == "fastmri":
        if skimage_kwargs:
            raise ValueError(f"unexpected arguments for style='fastmri': {sorted(skimage_kwargs)}")
        win_size = 7 if win_size is None else win_size
        if min(x.shape[-2:]) < win_size:
            raise ValueError(f"images of shape {x.shape[-2:]} are smaller than the {win_size}x{win_size} window")
        rng = float(target.max()) if data_range is None else float(data_range)
        return _ssim_fastmri(x, target, rng, win_size, k1, k2)
    if style == "skimage":
        try:
            from skimage.metrics import structural_similarity
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("style='skimage' needs scikit-image (pip install scikit-image)") from e
        rng = float(target.max() - target.min()) if data_range is None else float(data_range)
        if win_size is not None:
            skimage_kwargs["win_size"] = win_size
        vals = [structural_similarity(t, a, data_range=rng, K1=k1, K2=k2, **skimage_kwargs)
                for a, t in zip(x, target)]
        return float(np.mean(vals))
    raise ValueError(f"style must be 'fastmri' or 'skimage', got {style!r}")
