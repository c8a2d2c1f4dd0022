"""Offline test data and file readers (nothing is downloaded).

* :func:`mri_slice` — the real 256x256 head MRI slice that matplotlib ships
  (``mpl-data/sample_data/s1045.ima.gz``, uint16 big-endian), as a complex image in the
  2-channel layout ``(1, 2, H, W)`` with magnitude in [0, 1].
* :func:`natural_image` — scikit-image's bundled images (camera, astronaut, coffee, chelsea, ...).
* :func:`load_image` (.npy / .png, values mapped to [0, 1]), :func:`load_mri_image` (complex or
  real, largest magnitude 1), :func:`load_fastmri` (one slice of a fastMRI .h5 via h5py),
  :func:`load_fastmri_slices` (every slice or a range, with the file's mask and header).

Readers raise ``ValueError`` with the path and the problem for missing or malformed files.
"""
from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fastsd.limits import check_float32_range, check_input_size, check_values

__all__ = ["mri_slice", "natural_image", "load_image", "load_mri_image", "load_fastmri", "load_fastmri_slices", "resize",
           "NATURAL_IMAGES", "ImageRangeWarning"]

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


class ImageRangeWarning(UserWarning):
    """An input image's values were rescaled to [0, 1] (the warning says how)."""


MIN_IMAGE_SIZE = 8


def _unit_range(a: np.ndarray, what: str) -> np.ndarray:
    """Intensities in [0, 1]: bool as 0/1; integers by their dtype's range (uint8 / 255, uint16 /
    65535, ...); the wide integer types that NumPy gives by default (int32/int64/uint32/uint64) by
    the 8- or 16-bit range their values fit, with a warning; floats in [0, 1] as they are, floats in
    [0, 255] with maximum > 2 as 8-bit intensities (/ 255), any other floats min-max rescaled; every
    rescale of a float or wide integer image is announced by an :class:`ImageRangeWarning`."""

    if a.dtype == bool:
        return a.astype(np.float32)
    lo, hi = a.min(), a.max()
    if np.issubdtype(a.dtype, np.integer):
        if lo < 0:
            raise ValueError(f"{what}: {a.dtype} image with negative values (min {lo}); integer images hold "
                             f"intensities >= 0 (save signed data as float)")
        if a.dtype.itemsize <= 2:
            return (a / np.float32(np.iinfo(a.dtype).max)).astype(np.float32)
        for bits in (8, 16):
            top = 2**bits - 1
            if hi <= top:
                warnings.warn(f"{what}: {a.dtype} values up to {hi} taken as {bits}-bit intensities (divided by {top})",
                              ImageRangeWarning, stacklevel=3)
                return (a / np.float64(top)).astype(np.float32)
        raise ValueError(f"{what}: {a.dtype} values up to {hi} exceed the 16-bit range; save the image as uint8 "
                         f"or uint16, or as float in [0, 1]")
    a = a.astype(np.float32)
    if lo >= 0 and hi <= 1:
        return a
    if lo >= 0 and 2 < hi <= 255:
        warnings.warn(f"{what}: float values in [{lo:.4g}, {hi:.4g}] taken as 8-bit intensities (divided by 255)",
                      ImageRangeWarning, stacklevel=3)
        return a / np.float32(255)
    if hi == lo:
        raise ValueError(f"{what}: constant image (every value {lo:.4g}) outside [0, 1]; nothing to rescale")
    warnings.warn(f"{what}: float values in [{lo:.4g}, {hi:.4g}] rescaled to [0, 1] (min-max)",
                  ImageRangeWarning, stacklevel=3)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def _array_to_image(a: np.ndarray, what: str, gray: bool = False, unit_range: bool = True) -> torch.Tensor:
    """(H, W), (H, W, C) or (C, H, W) with C = 1..4 -> float32 (1, C', H, W), C' = 1 or 3.

    Two channels are grey + alpha and four RGB + alpha: the alpha channel is dropped. With
    ``unit_range`` the values are mapped to [0, 1] (:func:`_unit_range`); without, they are only
    converted to float32 (the caller normalises, e.g. MRI images by their largest magnitude)."""
    if np.iscomplexobj(a):
        raise ValueError(f"{what}: expected a real image, got complex data")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating) or a.dtype == bool):
        raise ValueError(f"{what}: unsupported dtype {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[-1] <= 4 and a.shape[0] > 4:
        a = np.moveaxis(a, -1, 0)
    elif a.ndim != 3 or not 1 <= a.shape[0] <= 4:
        raise ValueError(f"{what}: expected an image of shape (H, W), (H, W, C) or (C, H, W) with 1 to 4 "
                         f"channels, got {a.shape}")
    if min(a.shape[-2:]) < MIN_IMAGE_SIZE:
        raise ValueError(f"{what}: image of {a.shape[-2]}x{a.shape[-1]} pixels; at least "
                         f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} needed")
    if a.shape[0] in (2, 4):  # drop alpha
        a = a[:-1]
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ValueError(f"{what}: contains non-finite values")
    check_float32_range(a, what)
    a = _unit_range(a, what) if unit_range else a.astype(np.float32)
    if gray and a.shape[0] == 3:
        a = (0.2125 * a[0] + 0.7154 * a[1] + 0.0721 * a[2])[None]
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
    check_input_size(path)  # from the header, before decoding
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        import matplotlib.image

        a = matplotlib.image.imread(path)  # PNG -> float32 in [0, 1]
        return np.asarray(a)
    except Exception as e:  # corrupt or truncated file
        raise ValueError(f"{path}: could not be read ({type(e).__name__}: {e})") from None


def load_image(path, size: int | tuple[int, int] | None = None, gray: bool = False) -> torch.Tensor:
    """A real image from .npy or .png as float32 ``(1, C, H, W)`` in [0, 1], C = 1 or 3 (see
    :func:`_unit_range` for how integer and out-of-range float data are mapped)."""
    x = _array_to_image(load_array(path), str(path), gray)
    return resize(x, size) if size is not None else x


def load_mri_image(path, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """An MRI image from .npy (complex or real) or .png as float32 ``(1, 2, H, W)`` (re, im) with
    largest magnitude 1; colour images are turned grey."""
    a = load_array(path)
    if np.iscomplexobj(a):
        if a.ndim != 2 or min(a.shape) < MIN_IMAGE_SIZE:
            raise ValueError(f"{path}: a complex image must be one (H, W) array of at least "
                             f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{path}: contains non-finite values")
        check_float32_range(a, str(path))
        t = torch.from_numpy(a.astype(np.complex64))
        x = torch.stack([t.real, t.imag])[None]
    else:
        img = _array_to_image(a, str(path), gray=True, unit_range=False)
        x = torch.cat([img, torch.zeros_like(img)], dim=1)
    if size is not None:
        x = resize(x, size)
    peak = float(x.norm(dim=1).max())
    if not peak > 0:
        raise ValueError(f"{path}: the image is all zeros")
    return x / peak


def load_fastmri(path, slice_index: int | None = None) -> dict:
    """One slice of a fastMRI .h5 file.

    Returns ``{'kspace': complex64 (C, H, W), 'rss': float32 (h, w) or None, 'slice': int,
    'n_slices': int}``; single-coil files give ``C = 1``. ``slice_index`` defaults to the middle.
    """
    scan = load_fastmri_slices(path, "middle" if slice_index is None else int(slice_index))
    rss = scan["rss"]
    return {"kspace": scan["kspace"][0], "rss": None if rss is None else rss[0], "slice": scan["slices"][0],
            "n_slices": scan["n_slices"]}


def _fastmri_read(path: Path, f, name: str, sel) -> np.ndarray:
    try:
        return np.asarray(f[name][sel])
    except (OSError, RuntimeError) as e:  # a chunk past the end of a truncated file
        raise ValueError(f"{path}: could not read {name!r} (truncated or damaged file: {' '.join(str(e).split())})") \
            from None


def load_fastmri_slices(path, slices: int | slice | str | None = None) -> dict:
    """Slices of a fastMRI .h5 file (every slice by default; an index, a ``slice`` range, or
    ``'middle'``), read and checked before any work.

    Returns ``{'kspace': complex64 (S, C, H, W) tensor, 'rss': float32 (S, h, w) tensor or None,
    'mask': float32 (W,) tensor of the sampled columns or None (a fully sampled file; fastMRI's
    test and challenge files carry a ``mask``), 'header': the ``ismrmrd_header`` XML or None,
    'slices': the file's slice indices, 'n_slices': the file's slice count}``. Single-coil files
    give ``C = 1``.
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
        if not isinstance(ks, h5py.Dataset):
            raise ValueError(f"{path}: 'kspace' is an HDF5 {type(ks).__name__.lower()}, not a dataset")
        if ks.ndim not in (3, 4):
            raise ValueError(f"{path}: kspace must be (slices, H, W) or (slices, coils, H, W), got {ks.shape}")
        n = ks.shape[0]
        if n == 0:
            raise ValueError(f"{path}: kspace holds no slices")
        if slices == "middle":
            slices = n // 2
        if isinstance(slices, (int, np.integer)):
            if not 0 <= slices < n:
                raise ValueError(f"{path}: slice {slices} out of range (file has {n} slices)")
            slices = slice(int(slices), int(slices) + 1)
        idx = list(range(n))[slices if slices is not None else slice(None)]
        if not idx:
            raise ValueError(f"{path}: the slice range {slices.start}:{slices.stop} selects none of the file's "
                             f"{n} slices")
        sel = slice(idx[0], idx[-1] + 1, 1) if len(idx) < 2 else slice(idx[0], idx[-1] + 1, idx[1] - idx[0])
        check_values(path, (len(idx), *ks.shape[1:]), "the kspace slices")
        k = _fastmri_read(path, f, "kspace", sel)
        mask = None
        rss = f.get("reconstruction_rss")
        if rss is not None and not (isinstance(rss, h5py.Dataset) and rss.ndim == 3 and rss.shape[0] == n):
            shape = getattr(rss, "shape", type(rss).__name__)
            warnings.warn(f"{path}: reconstruction_rss ({shape}) does not hold one image per kspace slice ({n}); "
                          f"ignored", stacklevel=2)
            rss = None
        rss = None if rss is None else _fastmri_read(path, f, "reconstruction_rss", sel).astype(np.float32)
        if "mask" in f:
            mask = _fastmri_read(path, f, "mask", slice(None)).astype(np.float32).reshape(-1)
            if mask.size != ks.shape[-1] or not np.isin(mask, (0, 1)).all():
                raise ValueError(f"{path}: mask must hold one 0/1 entry per k-space column ({ks.shape[-1]}), "
                                 f"got {mask.size} values")
        header = f["ismrmrd_header"][()] if "ismrmrd_header" in f else None
    if not np.iscomplexobj(k):
        raise ValueError(f"{path}: kspace must be complex, got {k.dtype}")
    if k.ndim == 3:
        k = k[:, None]
    k = torch.from_numpy(k.astype(np.complex64))
    if not torch.isfinite(torch.view_as_real(k)).all():
        raise ValueError(f"{path}: kspace contains non-finite values")
    empty = [s for s, ks_s in zip(idx, k) if not bool(ks_s.ne(0).any())]
    if empty:
        raise ValueError(f"{path}: kspace slice {empty[0]} is all zeros (nothing was measured)")
    return {"kspace": k, "rss": None if rss is None else torch.from_numpy(rss),
            "mask": None if mask is None else torch.from_numpy(mask),
            "header": header.decode() if isinstance(header, bytes) else header, "slices": idx, "n_slices": n}
