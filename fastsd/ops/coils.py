"""Simulated coil sensitivity maps for multi-coil MRI experiments on single-coil images."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["birdcage_maps"]


def birdcage_maps(n_coils: int, shape, r: float = 1.5, per_ring: int = 8) -> torch.Tensor:
    """Birdcage coil maps (sigpy ``birdcage_maps``), normalised so that ``sum_c |S_c|^2 = 1``
    at every pixel.

    2-D ``shape = (H, W)``: ``n_coils`` coils evenly spaced on a circle of radius ``r`` (in units of
    the half field of view), magnitude ``1/distance`` and a phase that turns with the coil angle.
    3-D ``shape = (D, H, W)``: rings of ``per_ring`` coils around the D axis, stacked along D and
    centred on the volume (12 coils and ``per_ring=6``: two rings of six at D/4 and 3D/4), each ring
    turned by one coil step. Returns complex64 (C,*shape).
    """
    if int(n_coils) < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}")
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) or (D, H, W) with positive sizes, got {shape}")
    if not r > 1:
        raise ValueError(f"r must be > 1 (coils outside the field of view), got {r}")
    if int(per_ring) < 1:
        raise ValueError(f"per_ring must be >= 1, got {per_ring}")
    volume = len(shape) == 3
    if not volume:  # one ring of all coils in the plane of the slice
        shape, per_ring = (1,) + shape, n_coils
    nz, ny, nx = shape
    z, y, x = np.ogrid[:nz, :ny, :nx]
    x, y, z = (x - nx / 2.0) / (nx / 2.0), (y - ny / 2.0) / (ny / 2.0), (z - nz / 2.0) / (nz / 2.0)
    ring_centre = 0.5 * (np.ceil(n_coils / per_ring) - 1)
    maps = np.empty((n_coils,) + shape, dtype=np.complex128)
    for c in range(n_coils):  # one coil at a time: open grids keep memory at the output's size
        ring = c // per_ring
        angle = c * (2 * np.pi / per_ring)
        x_co, y_co = x - r * np.cos(angle), y - r * np.sin(angle)
        rr2 = x_co**2 + y_co**2
        if volume:
            rr2 = rr2 + (z - (ring - ring_centre)) ** 2
        phi = np.arctan2(x_co, -y_co) - (c + ring) * (2 * np.pi / per_ring)
        maps[c] = np.exp(1j * phi) / np.sqrt(rr2)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    if not volume:
        maps = maps[:, 0]
    return torch.from_numpy(maps.astype(np.complex64))
