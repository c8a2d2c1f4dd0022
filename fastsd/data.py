"""Offline test data and file readers (nothing is downloaded).

* :func:`mri_slice` — the real 256x256 head MRI slice that matplotlib ships
  (``mpl-data/sample_data/s1045.ima.gz``, uint16 big-endian), as a complex image in the
  2-channel layout ``(1, 2, H, W)`` with magnitude in [0, 1].
* :func:`natural_image` — scikit-image's bundled images (camera, astronaut, coffee, chelsea, ...).
* :func:`load_image` (.npy / .png), :func:`load_fastmri` (fastMRI .h5 via h5py).

Readers raise ``ValueError`` with the path and the problem for missing or malformed files.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["mri_slice", "natural_image", "load_image", "load_fastmri", "resize", "NATURAL_IMAGES"]

NATURAL_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "moon", "page", "text", "coins", "rocket", "horse")


def _matplotlib_sample(name: str) -> Path:
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("the bundled MRI slice comes with matplotlib (pip install matplotlib)") from e
    path = Path(matplotlib.get_data_path()) / "sample_data" / name
    if not path.is_file():
        raise ValueError(f"matplotlib's sample data {name!r} is missing at {path}")
    return path


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize a (B, C, H, W) real image (area averaging when shrinking, bilinear when growing)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    shrink = size[0] <= x.shape[-2] and size[1] <= x.shape[-1]
    if shrink:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


def _to_complex2(mag: torch.Tensor, phase: str | None) -> torch.Tensor:
    """(1, 1, H, W) magnitude -> (1, 2, H, W) (re, im) with zero or a smooth phase."""
    if phase is None:
        return torch.cat([mag, torch.zeros_like(mag)], dim=1)
    if phase != "smooth":
        raise ValueError(f"phase must be None or 'smooth', got {phase!r}")
    h, w = mag.shape[-2:]
    v, u = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64),
                          torch.linspace(-1, 1, w, dtype=torch.float64), indexing="ij")
    phi = (torch.pi / 2) * (0.5 * u + 0.3 * v + 0.2 * (u * u - v * v))
    phi = phi.to(mag.dtype)
    return torch.cat([mag * torch.cos(phi), mag * torch.sin(phi)], dim=1)


def mri_slice(
    size: int | tuple[int, int] | None = None,
    phase: str | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The real 256x256 head MRI slice bundled with matplotlib, float32 ``(1, 2, H, W)``.

    The magnitude is normalised to [0, 1]; the imaginary part is zero, or with
    ``phase='smooth'`` a smooth phase ramp is applied. ``size`` resizes the magnitude first.
    """
    raw = gzip.decompress(_matplotlib_sample("s1045.ima.gz").read_bytes())
    if len(raw) != 256 * 256 * 2:
        raise ValueError(f"unexpected size of the bundled MRI slice: {len(raw)} bytes")
    img = np.frombuffer(raw, dtype=">u2").reshape(256, 256).astype(np.float32)
    mag = torch.from_numpy(img)[None, None]
    if size is not None:
        mag = resize(mag, size)
    mag = mag / mag.max()
    return _to_complex2(mag, phase).to(device=device, dtype=torch.float32)


def natural_image(name: str = "camera", size: int | tuple[int, int] | None = None, gray: bool = False,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """A scikit-image bundled image as float32 ``(1, C, H, W)`` in [0, 1] (C = 1 or 3)."""
    try:
        from skimage import data as skdata
    except ImportError as e:
        raise ImportError("natural images come from scikit-image (pip install scikit-image)") from e
    if name not in NATURAL_IMAGES:
        raise ValueError(f"unknown image {name!r}; bundled images: {', '.join(NATURAL_IMAGES)}")
    x = _array_to_image(getattr(skdata, name)(), name, gray)
    if size is not None:
        x = resize(x, size)
    return x.to(device)


def _array_to_image(a: np.ndarray, what: str, gray: bool = False) -> torch.Tensor:
    """(H, W), (H, W, C) uint or float -> float32 (1, C, H, W); integer images scaled to [0, 1]."""
    if np.iscomplexobj(a):
        raise ValueError(f"{what}: expected a real image, got complex data")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    elif np.issubdtype(a.dtype, np.floating) or a.dtype == bool:
        a = a.astype(np.float32)
    else:
        raise ValueError(f"{what}: unsupported dtype {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[-1] in (1, 3, 4) and a.shape[0] not in (1, 2, 3):
        a = np.moveaxis(a, -1, 0)
    elif a.ndim != 3:
        raise ValueError(f"{what}: expected an image of shape (H, W), (H, W, C) or (C, H, W), got {a.shape}")
    if a.shape[0] == 4:  # drop alpha
        a = a[:3]
    if gray and a.shape[0] == 3:
        a = (0.2125 * a[0] + 0.7154 * a[1] + 0.0721 * a[2])[None]
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: contains non-finite values")
    return torch.from_numpy(np.ascontiguousarray(a))[None]


def _check_file(path, suffixes: tuple[str, ...]) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; expected {', '.join(suffixes)}")
    return path


def load_array(path) -> np.ndarray:
    """Raw contents of a .npy or .png file as a NumPy array (no scaling)."""
    path = _check_file(path, (".npy", ".png"))
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        import matplotlib.image

        a = matplotlib.image.imread(path)  # PNG -> float32 in [0, 1]
        return np.asarray(a)
    except Exception as e:  # corrupt or truncated file
        raise ValueError(f"{path}: could not be read ({type(e).__name__}: {e})") from None


def load_image(path, size: int | tuple[int, int] | None = None, gray: bool = False) -> torch.Tensor:
    """A real image from .npy or .png as float32 ``(1, C, H, W)`` (integer data scaled to [0, 1])."""
    x = _array_to_image(load_array(path), str(path), gray)
    return resize(x, size) if size is not None else x


def load_fastmri(path, slice_index: int | None = None) -> dict:
    """One slice of a fastMRI .h5 file.

    Returns ``{'kspace': complex64 (C, H, W), 'rss': float32 (h, w) or None, 'slice': int,
    'n_slices': int}``; single-coil files give ``C = 1``. ``slice_index`` defaults to the middle.
    """
    path = _check_file(path, (".h5", ".hdf5"))
    try:
        import h5py
    except ImportError:
        raise ValueError("reading fastMRI .h5 files needs h5py (pip install h5py)") from None
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        if "kspace" not in f:
            raise ValueError(f"{path}: no 'kspace' dataset (found: {', '.join(f.keys()) or 'nothing'})")
        ks = f["kspace"]
        if ks.ndim not in (3, 4):
            raise ValueError(f"{path}: kspace must be (slices, H, W) or (slices, coils, H, W), got {ks.shape}")
        n = ks.shape[0]
        idx = n // 2 if slice_index is None else int(slice_index)
        if not 0 <= idx < n:
            raise ValueError(f"{path}: slice {idx} out of range (file has {n} slices)")
        k = np.asarray(ks[idx])
        rss = np.asarray(f["reconstruction_rss"][idx], dtype=np.float32) if "reconstruction_rss" in f else None
    if not np.iscomplexobj(k):
        raise ValueError(f"{path}: kspace must be complex, got {k.dtype}")
    if k.ndim == 2:
        k = k[None]
    k = torch.from_numpy(k.astype(np.complex64))
    if not torch.isfinite(torch.view_as_real(k)).all():
        raise ValueError(f"{path}: kspace contains non-finite values")
    return {"kspace": k, "rss": None if rss is None else torch.from_numpy(rss), "slice": idx, "n_slices": n}
