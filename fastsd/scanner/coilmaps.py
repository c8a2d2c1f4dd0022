"""Coil maps of a multi-slice scan, per slice, by one of three methods.

* ``'acs'`` — the windowed ACS lines over their root-sum-of-squares
  (:func:`fastsd.ops.mri.estimate_coil_maps`, on the ACS run found in the mask);
* ``'espirit'`` — ESPIRiT (Uecker et al. 2014) by sigpy's ``EspiritCalib`` on the CPU, calibrated
  on the largest centred square of the ACS lines (at most 24 wide, sigpy's default), with sigpy's
  defaults otherwise (kernel 6, threshold 0.02, eigenvalue crop 0.95: zero outside the object);
* a file — ``.npy`` complex (C, H, W) for every slice or (S, C, H, W), or a BART array (``.cfl`` /
  ``.hdr``, e.g. from ``bart ecalib``).

The ACS lines and the file's shape are checked before any estimate, each problem in one line.
:func:`coil_support` is where the maps see the object: ESPIRiT's crop sets the maps to zero
elsewhere, where the measurements then say nothing about the image and a reconstruction is set
to zero (as SENSE's minimum-norm solution is).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastsd.scanner.scan import acs_lines

__all__ = ["coil_maps", "coil_support", "acs_maps", "espirit_maps", "load_maps", "METHODS"]

METHODS = ("acs", "espirit")
ESPIRIT_CALIB = 24


def acs_maps(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ACS coil maps (S, C, H, W) of k-space (S, C, H, W) sampled with the line mask ``mask``."""
    from fastsd.ops.mri import estimate_coil_maps

    start, stop = acs_lines(mask)
    return torch.stack([estimate_coil_maps(k, stop - start, start) for k in kspace])


def _centred_width(start: int, stop: int, W: int, cap: int) -> int:
    """Widest centred window (sigpy's crop: from W//2 - w//2) inside the ACS run [start, stop)."""
    c = W // 2
    return max(w for w in range(1, min(cap, stop - start) + 1) if c - w // 2 >= start and c - w // 2 + w <= stop)


def espirit_maps(kspace: torch.Tensor, mask: torch.Tensor, calib: int = ESPIRIT_CALIB) -> torch.Tensor:
    """ESPIRiT coil maps (S, C, H, W) by sigpy, per slice, from the ACS lines of ``mask``."""
    try:
        import sigpy.mri
    except ImportError as e:
        raise ImportError("ESPIRiT coil maps need sigpy (pip install 'fastsd[scanner]')") from e
    start, stop = acs_lines(mask)
    width = _centred_width(start, stop, kspace.shape[-1], calib)
    kernel = 6
    if width <= kernel:
        raise ValueError(f"ESPIRiT needs more than {kernel} centred ACS lines, the mask has {stop - start}")
    maps = [sigpy.mri.app.EspiritCalib(k.numpy(), calib_width=width, kernel_width=kernel, show_pbar=False).run()
            for k in kspace.cpu()]
    return torch.from_numpy(np.stack(maps).astype(np.complex64))


def load_maps(path, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Coil maps from a ``.npy`` or BART file, checked against k-space of shape (S, C, H, W) and
    returned as complex64 (S, C, H, W)."""
    from fastsd.data import load_array
    from fastsd.scanner.bart import bart_base, load_bart_maps

    path = Path(path)
    if path.suffix.lower() in (".cfl", ".hdr"):
        maps = load_bart_maps(path)
        path = bart_base(path)
    elif path.suffix.lower() == ".npy":
        a = load_array(path)
        if not np.iscomplexobj(a):
            raise ValueError(f"{path}: coil maps must be complex, got {a.dtype}")
        maps = torch.from_numpy(a.astype(np.complex64))
    else:
        raise ValueError(f"{path}: coil maps must be a .npy or BART .cfl/.hdr file")
    S, C, H, W = shape
    if maps.ndim == 3:
        maps = maps[None]
    if maps.ndim != 4 or tuple(maps.shape[-2:]) != (H, W):
        raise ValueError(f"{path}: coil maps of shape {tuple(maps.shape)} do not match the k-space's {H}x{W} "
                         f"images (expected (C, H, W) or (S, C, H, W))")
    if maps.shape[1] != C:
        raise ValueError(f"{path}: inconsistent coil counts: {maps.shape[1]} coil maps for k-space of {C} coils")
    if maps.shape[0] not in (1, S):
        raise ValueError(f"{path}: {maps.shape[0]} slices of coil maps for {S} slices of k-space")
    if not torch.isfinite(torch.view_as_real(maps)).all():
        raise ValueError(f"{path}: coil maps contain non-finite values")
    return maps.expand(S, -1, -1, -1).contiguous()


def coil_support(maps: torch.Tensor) -> torch.Tensor:
    """Where coil maps (..., C, H, W), normalised to ``Σ_c |S_c|² = 1`` on the object, see it:
    bool (..., 1, H, W), ``Σ_c |S_c|² > 1/2``."""
    return maps.abs().square().sum(-3, keepdim=True) > 0.5


def coil_maps(kspace: torch.Tensor, mask: torch.Tensor, method: str = "acs") -> torch.Tensor | None:
    """Coil maps (S, C, H, W) of undersampled k-space (S, C, H, W) under ``mask`` (H, W) by
    ``method``: 'acs', 'espirit' or the path of a maps file; ``None`` for single-coil k-space."""
    if kspace.shape[1] == 1 and method in METHODS:
        return None
    if method == "acs":
        return acs_maps(kspace, mask)
    if method == "espirit":
        return espirit_maps(kspace, mask)
    return load_maps(method, tuple(kspace.shape))
