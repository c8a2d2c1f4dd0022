"""One multi-slice Cartesian scan as the solvers take it, and its NIfTI volume.

Layout (fastMRI's, which fastsd's masks and operators follow): k-space centred complex64
``(S, C, H, W)``, slices x coils x readout (kx) x phase encoding (ky); a sampling mask float32
``(H, W)`` shared by the slices, whose phase-encoding lines are columns; ACS lines are the fully
sampled columns around the centre column ``W // 2``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Scan", "MIN_ACS", "sampled_mask", "acs_lines", "voxel_size_from_header", "load_fastmri_scan",
           "save_volume_nifti"]

MIN_ACS = 4
"""Fewest ACS lines that coil maps are estimated from."""


@dataclass
class Scan:
    """A scan's k-space and what the file says about it.

    ``kspace`` complex64 (S, C, H, W), centred; ``mask`` float32 (H, W) of the sampled locations,
    ``None`` for a fully sampled scan (to be undersampled retrospectively); ``rss`` float32
    (S, h, w) reference images (fastMRI's ``reconstruction_rss``) or ``None``; ``voxel_size`` in mm
    (H, W, slice) from the file's header, or ``None``; ``slices`` the file's slice indices;
    ``source`` the file and ``format`` ('fastmri', 'mrd' or 'bart')."""

    kspace: torch.Tensor
    mask: torch.Tensor | None
    rss: torch.Tensor | None
    voxel_size: tuple[float, float, float] | None
    slices: list[int]
    source: str
    format: str

    @property
    def n_coils(self) -> int:
        return self.kspace.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.kspace.shape[-2:])


def sampled_mask(kspace: torch.Tensor) -> torch.Tensor | None:
    """The (H, W) mask of the locations that hold data in any slice and coil of ``kspace``
    (S, C, H, W); ``None`` when every location does (a fully sampled scan)."""
    mask = (kspace != 0).any(dim=1).any(dim=0).to(torch.float32)
    return None if bool(mask.all()) else mask


def acs_lines(mask: torch.Tensor, what: str = "the sampling mask") -> tuple[int, int]:
    """``(start, stop)`` of the ACS lines of a (H, W) line mask: the run of fully sampled
    columns through the centre column ``W // 2``. Raises ``ValueError`` naming ``what`` when the
    mask is not made of whole lines or holds fewer than :data:`MIN_ACS` centre lines."""
    m = mask.to(torch.bool)
    rows, cols = m.any(1), m.any(0)
    if not bool((m == rows[:, None] & cols[None, :]).all()):
        raise ValueError(f"{what} does not sample whole phase-encoding lines (columns); ACS lines cannot be "
                         f"found, pass coil maps from a file")
    W, c = m.shape[1], m.shape[1] // 2
    start = stop = c
    while stop < W and cols[stop]:
        stop += 1
    while start > 0 and cols[start - 1]:
        start -= 1
    if stop - start < MIN_ACS:
        raise ValueError(f"{what} has no ACS: {stop - start} fully sampled centre lines, at least {MIN_ACS} needed "
                         f"to estimate coil maps (pass coil maps from a file)")
    return start, stop


def voxel_size_from_header(xml) -> tuple[float, float, float] | None:
    """Voxel size in mm (readout, phase encoding, slice) of the encoded space of an ISMRMRD XML
    header (fastMRI files carry one as ``ismrmrd_header``): field of view over matrix size; ``None``
    when there is no header, it cannot be parsed, or ``ismrmrd`` is not installed."""
    if xml is None:
        return None
    try:
        import ismrmrd.xsd

        space = ismrmrd.xsd.CreateFromDocument(xml).encoding[0].encodedSpace
        fov, n = space.fieldOfView_mm, space.matrixSize
        size = (fov.x / n.x, fov.y / n.y, fov.z / n.z)
    except Exception:  # no ismrmrd, or a header it does not accept: the volume keeps unit voxels
        return None
    return tuple(float(v) for v in size) if all(v > 0 for v in size) else None


def load_fastmri_scan(path, slices: slice | None = None) -> Scan:
    """Every slice (or the range ``slices``) of a fastMRI .h5 file as a :class:`Scan`: the file's
    mask when it has one (test and challenge files), the ``reconstruction_rss`` reference and the
    voxel size of its ISMRMRD header when present."""
    from fastsd.data import load_fastmri_slices

    f = load_fastmri_slices(path, slices)
    mask = f["mask"]
    if mask is not None:
        mask = None if bool(mask.all()) else mask.expand(f["kspace"].shape[-2], -1).contiguous()
    return Scan(f["kspace"], mask, f["rss"], voxel_size_from_header(f["header"]), f["slices"], str(path), "fastmri")


def save_volume_nifti(path, volume, voxel_size=None) -> None:
    """Write a volume (S, H, W) of slices as NIfTI (``.nii.gz``): array axes (H, W, S), the affine
    scaling them by ``voxel_size`` (mm; unit voxels when ``None``)."""
    from fastsd.data3d import save_nifti

    vol = np.moveaxis(np.asarray(volume), 0, -1)
    affine = np.diag([*(voxel_size or (1.0, 1.0, 1.0)), 1.0])
    save_nifti(Path(path), vol, affine)
