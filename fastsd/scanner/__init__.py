"""Scanner data in, standard images out: whole multi-slice scans for the 2-D MRI solvers.

Readers give a :class:`Scan` (k-space (S, C, H, W) in fastMRI's layout, the sampling mask, an
optional reference, the voxel size): :func:`load_scan` picks the reader by the file,

* fastMRI ``.h5`` (:func:`~fastsd.scanner.scan.load_fastmri_scan`, every slice or a range);
* ISMRMRD / MRD ``.h5`` (:func:`~fastsd.scanner.mrd.load_mrd`; the ``ismrmrd`` package);
* BART ``.cfl`` / ``.hdr`` k-space (:func:`~fastsd.scanner.bart.load_bart_kspace`).

Coil maps: :func:`~fastsd.scanner.coilmaps.coil_maps` ('acs', 'espirit' via sigpy, or a file).
Outputs: NIfTI volumes (:func:`~fastsd.scanner.scan.save_volume_nifti`, nibabel) and BART arrays
(:func:`~fastsd.scanner.bart.save_bart_kspace`, :func:`~fastsd.scanner.bart.save_bart_volume`).
The optional packages come with ``pip install 'fastsd[scanner]'``. Every reader checks the file
before any work and raises ``ValueError`` naming the file and the problem in one line.
"""
from __future__ import annotations

from pathlib import Path

from fastsd.scanner.bart import (
    load_bart_kspace,
    load_bart_maps,
    read_cfl,
    save_bart_kspace,
    save_bart_volume,
    write_cfl,
)
from fastsd.scanner.coilmaps import coil_maps
from fastsd.scanner.mrd import is_mrd, load_mrd
from fastsd.scanner.scan import Scan, acs_lines, load_fastmri_scan, sampled_mask, save_volume_nifti

__all__ = ["Scan", "load_scan", "load_fastmri_scan", "load_mrd", "load_bart_kspace", "load_bart_maps", "coil_maps",
           "acs_lines", "sampled_mask", "save_volume_nifti", "save_bart_kspace", "save_bart_volume", "read_cfl",
           "write_cfl", "is_scan_file", "parse_slices", "SUFFIXES"]

SUFFIXES = (".h5", ".hdf5", ".cfl", ".hdr")


def is_scan_file(path) -> bool:
    """Whether ``path`` names scanner k-space (fastMRI / ISMRMRD .h5 or BART .cfl/.hdr)."""
    return Path(path).suffix.lower() in SUFFIXES


def parse_slices(text: str | None) -> slice | None:
    """``'10:20'`` -> ``slice(10, 20)``, ``'5'`` -> ``slice(5, 6)``, ``':'``/``None`` -> every slice."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        nums = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(f"slices must be START:STOP or an index (e.g. 10:20 or 5), got {text!r}") from None
    if len(nums) == 1 and nums[0] is not None:
        return slice(nums[0], nums[0] + 1)
    if len(nums) != 2 or any(n is not None and n < 0 for n in nums):
        raise ValueError(f"slices must be START:STOP with indices >= 0 (e.g. 10:20), got {text!r}")
    return slice(*nums)


def load_scan(path, slices: slice | None = None) -> Scan:
    """The scan in ``path`` (every slice, or the range ``slices``) by its format (see the module)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".cfl", ".hdr"):
        return load_bart_kspace(path, slices)
    if suffix not in (".h5", ".hdf5"):
        raise ValueError(f"{path}: unsupported scan file {suffix!r}; expected .h5 (fastMRI or ISMRMRD) or .cfl/.hdr")
    if path.is_file() and is_mrd(path):
        return load_mrd(path, slices)
    return load_fastmri_scan(path, slices)
