"""ISMRMRD / MRD raw data (the vendor-neutral format of scanner converters and Gadgetron) as a
:class:`~fastsd.scanner.scan.Scan`.

The file is an HDF5 group (``/dataset``) holding the XML header (``xml``, parsed by the ``ismrmrd``
package) and a table of acquisitions (``data``: one readout line of every active coil each, with
its encoding counters). Cartesian 2-D multi-slice acquisitions of the first encoding are sorted
into (slices, coils, kx, ky) on the header's encoded matrix: readout samples at
``matrix.x // 2 - center_sample``, phase-encoding step ``k`` at ``matrix.y // 2 + k - center`` (the
centre from the encoding limits), reversed lines flipped, repeated lines (averages) averaged.
Noise, navigator, phase-correction and other non-imaging readouts are skipped; parallel-imaging
calibration lines are kept as samples. The mask is the set of sampled lines, shared by the slices.

Anything else gets one line naming what was found: a non-Cartesian trajectory, 3-D encoding,
several contrasts/phases/repetitions/sets, coil or readout counts that differ between lines or
from the header, lines outside the matrix, slices without data or with fewer lines than the
others (a truncated scan).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastsd.scanner.scan import Scan

__all__ = ["load_mrd", "is_mrd"]

_SKIPPED_FLAGS = ("IS_NOISE_MEASUREMENT", "IS_NAVIGATION_DATA", "IS_PHASECORR_DATA", "IS_HPFEEDBACK_DATA",
                  "IS_DUMMYSCAN_DATA", "IS_RTFEEDBACK_DATA", "IS_SURFACECOILCORRECTIONSCAN_DATA",
                  "IS_PHASE_STABILIZATION_REFERENCE", "IS_PHASE_STABILIZATION")
_ONE_ONLY = ("contrast", "phase", "repetition", "set")


def _ismrmrd():
    try:
        import ismrmrd
        import ismrmrd.xsd
    except ImportError as e:
        raise ImportError("ISMRMRD files need the ismrmrd package (pip install 'fastsd[scanner]')") from e
    return ismrmrd


def is_mrd(path) -> bool:
    """Whether an .h5 file has the ISMRMRD layout (a ``dataset`` group with ``xml``), not fastMRI's."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "dataset" in f and isinstance(f["dataset"], h5py.Group) and "xml" in f["dataset"]
    except OSError:
        return False


def _flag(ismrmrd, name: str) -> np.uint64:
    return np.uint64(1) << np.uint64(getattr(ismrmrd, f"ACQ_{name}") - 1)


def _header(ismrmrd, path: Path, group):
    try:
        xml = group["xml"][0]
        return ismrmrd.xsd.CreateFromDocument(xml)
    except Exception as e:  # xsdata raises its own parser errors
        raise ValueError(f"{path}: the ISMRMRD XML header could not be read ({' '.join(str(e).split())[:200]})") \
            from None


def _one(values: np.ndarray, path: Path, what: str) -> int:
    found = np.unique(values)
    if found.size != 1:
        shown = ", ".join(str(int(v)) for v in found[:8])
        raise ValueError(f"{path}: inconsistent {what} across the acquisitions ({shown})")
    return int(found[0])


def load_mrd(path, slices: slice | None = None, dataset: str = "dataset") -> Scan:
    """The Cartesian acquisitions of an ISMRMRD file as a :class:`Scan` (every slice, or the range
    ``slices`` of the header's slices); checked before any work (see the module docstring)."""
    import h5py

    ismrmrd = _ismrmrd()
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        if dataset not in f or "xml" not in f[dataset]:
            raise ValueError(f"{path}: no ISMRMRD header ('{dataset}/xml'; found: {', '.join(f.keys()) or 'nothing'})")
        header = _header(ismrmrd, path, f[dataset])
        enc = header.encoding[0]
        trajectory = getattr(enc.trajectory, "value", enc.trajectory)
        if trajectory != "cartesian":
            raise ValueError(f"{path}: {trajectory} trajectory; only Cartesian acquisitions can be reconstructed")
        space, limits = enc.encodedSpace, enc.encodingLimits
        X, Y, Z = space.matrixSize.x, space.matrixSize.y, space.matrixSize.z
        if Z > 1:
            raise ValueError(f"{path}: 3-D encoding ({Z} partitions along kspace_encoding_step_2); only 2-D "
                             f"multi-slice acquisitions are supported")
        if "data" not in f[dataset]:
            raise ValueError(f"{path}: no acquisitions ('{dataset}/data' is missing)")
        table = f[dataset]["data"]
        try:
            heads = table.fields("head")[:]
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{path}: could not read the acquisitions (truncated or damaged file: {e})") from None
        flags, idx = heads["flags"], heads["idx"]
        skip = np.zeros(len(heads), bool)
        for name in _SKIPPED_FLAGS:
            skip |= (flags & _flag(ismrmrd, name)) != 0
        keep = ~skip & (heads["encoding_space_ref"] == 0)
        for counter in _ONE_ONLY:
            if (idx[counter][keep] > 0).any():
                n = int(idx[counter][keep].max()) + 1
                raise ValueError(f"{path}: {n} {counter}s in one file; reconstruct files with one {counter} each")
        n_slices = (limits.slice.maximum + 1) if limits.slice is not None else int(idx["slice"][keep].max(initial=0)) + 1
        wanted = list(range(n_slices))[slices if slices is not None else slice(None)]
        if not wanted:
            raise ValueError(f"{path}: the slice range selects none of the header's {n_slices} slices")
        keep &= np.isin(idx["slice"], wanted)
        rows = np.flatnonzero(keep)
        if rows.size == 0:
            raise ValueError(f"{path}: no imaging acquisitions in the selected slices")
        coils = _one(heads["active_channels"][rows], path, "coil counts (active_channels)")
        system = header.acquisitionSystemInformation
        declared = getattr(system, "receiverChannels", None) if system is not None else None
        if declared is not None and declared != coils:
            raise ValueError(f"{path}: inconsistent coil counts: the header declares {declared} receiver channels, "
                             f"the acquisitions hold {coils}")
        n = _one(heads["number_of_samples"][rows], path, "readout lengths (number_of_samples)")
        centre = _one(heads["center_sample"][rows], path, "readout centres (center_sample)")
        x0 = X // 2 - centre
        if x0 < 0 or x0 + n > X:
            raise ValueError(f"{path}: readouts of {n} samples centred at {centre} do not fit the encoded matrix "
                             f"of {X}")
        ky_centre = limits.kspace_encoding_step_1.center if limits.kspace_encoding_step_1 is not None else Y // 2
        ky = idx["kspace_encode_step_1"][rows].astype(np.int64) + (Y // 2 - ky_centre)
        if ky.min() < 0 or ky.max() >= Y:
            raise ValueError(f"{path}: phase-encoding steps out of the encoded matrix of {Y} lines "
                             f"(header centre {ky_centre})")
        try:
            data = table.fields("data")[rows[0]:rows[-1] + 1]
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{path}: could not read the acquisitions (truncated or damaged file: {e})") from None
        data = data[rows - rows[0]]
    order = {s: i for i, s in enumerate(wanted)}
    k = np.zeros((len(wanted), coils, X, Y), np.complex64)
    counts = np.zeros((len(wanted), Y), np.int64)
    reverse = (flags[rows] & _flag(ismrmrd, "IS_REVERSE")) != 0
    for line, s, y, rev in zip(data, idx["slice"][rows], ky, reverse):
        if line.size != 2 * coils * n:
            raise ValueError(f"{path}: an acquisition holds {line.size // 2} samples, not {coils} coils x {n}")
        d = line.view(np.complex64).reshape(coils, n)
        k[order[s], :, x0:x0 + n, y] += d[:, ::-1] if rev else d
        counts[order[s], y] += 1
    k /= np.maximum(counts, 1)[:, None, None, :]
    lines = counts > 0
    for i, s in enumerate(wanted):
        if not lines[i].any():
            raise ValueError(f"{path}: slice {s} has no acquisitions (truncated scan? the header gives {n_slices} "
                             f"slices)")
        if not np.array_equal(lines[i], lines[0]):
            raise ValueError(f"{path}: slice {s} samples {int(lines[i].sum())} phase-encoding lines, slice "
                             f"{wanted[0]} {int(lines[0].sum())}: a truncated scan, or sampling that differs "
                             f"between slices")
    mask = np.zeros((X, Y), np.float32)
    mask[x0:x0 + n] = lines[0]
    kspace = torch.from_numpy(k)
    if not torch.isfinite(torch.view_as_real(kspace)).all():
        raise ValueError(f"{path}: k-space contains non-finite values")
    fov = space.fieldOfView_mm
    voxel = (fov.x / X, fov.y / Y, fov.z / Z)
    return Scan(kspace, None if mask.all() else torch.from_numpy(mask), None,
                tuple(float(v) for v in voxel) if min(voxel) > 0 else None, wanted, str(path), "mrd")
