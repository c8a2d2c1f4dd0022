"""Limits on input files, checked before their data is decoded.

* Size: an input may hold at most :data:`MAX_VALUES` values (2**27 = 134,217,728: e.g. an 8192 x
  8192 grey image, a 512 x 512 x 512 volume, 16 coils of 2048 x 2048 k-space), counted from the file's
  header: PNG (Pillow reads the header only), ``.npy`` (the array header, memory-mapped), NIfTI
  (nibabel's header) and HDF5 (the dataset's shape). A larger file is refused in one line before
  any decoding, instead of filling the memory (a 1 MB PNG can declare 30000 x 30000 pixels).
* Range: float data is computed in float32; values beyond its range (about 3.4e38) would become
  Inf, so they are refused by name (:func:`check_float32_range`).

Errors are ``ValueError`` naming the file.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["MAX_VALUES", "check_values", "header_shape", "check_input_size", "check_float32_range"]

MAX_VALUES = 2**27


def check_values(path, shape, what: str = "") -> None:
    """Refuse an input of ``shape`` holding more than :data:`MAX_VALUES` values."""
    n = math.prod(int(s) for s in shape)
    if n > MAX_VALUES:
        dims = " x ".join(str(int(s)) for s in shape)
        raise ValueError(f"{path}: {what or 'data'} of {dims} holds {n:,} values, more than the limit of "
                         f"{MAX_VALUES:,} (2**27); crop or downsample it first")


def header_shape(path) -> tuple[int, ...]:
    """The data shape a ``.png``, ``.npy`` or ``.nii``/``.nii.gz`` file declares, read from its header."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".png"):
            from PIL import Image

            bomb_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the limit here is ours
            try:
                with Image.open(path) as im:  # lazy: reads the header, decodes nothing
                    return (im.height, im.width, len(im.getbands()))
            finally:
                Image.MAX_IMAGE_PIXELS = bomb_limit
        if name.endswith(".npy"):
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        if name.endswith((".nii", ".nii.gz")):
            import nibabel

            return tuple(nibabel.load(str(path)).shape)
    except ImportError:
        raise
    except Exception as e:  # a damaged header
        kind = "not a readable NIfTI file" if name.endswith((".nii", ".nii.gz")) else "could not be read"
        raise ValueError(f"{path}: {kind} ({type(e).__name__}: {' '.join(str(e).split())})") from None
    raise ValueError(f"{path}: no header to read for file type {path.suffix!r}")


def check_input_size(path) -> tuple[int, ...]:
    """The declared shape of ``path`` (see :func:`header_shape`), refused above :data:`MAX_VALUES`."""
    shape = header_shape(path)
    check_values(path, shape)
    return shape


def check_float32_range(a: np.ndarray, what: str) -> None:
    """Refuse float data with values beyond float32's range (they would become Inf in float32)."""
    if (np.issubdtype(a.dtype, np.floating) or np.iscomplexobj(a)) and a.size:
        with np.errstate(over="ignore"):
            top = float(np.max(np.abs(a)))
        if top > float(np.finfo(np.float32).max):
            raise ValueError(f"{what}: values up to {top:.4g} exceed float32's range (about 3.4e38); rescale the data")
