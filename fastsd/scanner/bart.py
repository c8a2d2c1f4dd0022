"""BART's ``.cfl`` / ``.hdr`` arrays: k-space, coil maps and images to and from BART.

BART stores an array ``name`` as two files: ``name.hdr``, text (a ``# Dimensions`` line, then the
sizes of all dimensions on one line, BART writes 16), and ``name.cfl``, the complex64 values in
column-major (Fortran) order, first dimension fastest. BART's dimensions used here: 0 READ (kx),
1 PHS1 (ky), 2 PHS2 (kz, must be 1), 3 COIL, 4 MAPS (the first set of ESPIRiT maps is taken),
13 SLICE; any other dimension above 1 is rejected with its name. fastsd's (S, C, H, W) k-space
and maps map to BART's (H, W, 1, C, 1, ..., S) (H readout, W phase encoding) and an image volume
(S, H, W) to (H, W, 1, 1, ..., S).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastsd.scanner.scan import Scan, sampled_mask

__all__ = ["read_cfl", "write_cfl", "load_bart_kspace", "load_bart_maps", "save_bart_kspace", "save_bart_volume",
           "bart_base"]

_DIMS = ("READ", "PHS1", "PHS2", "COIL", "MAPS", "TE", "COEFF", "COEFF2", "ITER", "CSHIFT", "TIME", "TIME2",
         "LEVEL", "SLICE", "AVG", "BATCH")
_READ, _PHS1, _PHS2, _COIL, _MAPS, _SLICE = 0, 1, 2, 3, 4, 13
_N = 16


def bart_base(path) -> Path:
    """The array's name without ``.cfl`` / ``.hdr`` (BART names an array by its base name)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in (".cfl", ".hdr") else path


def read_cfl(path) -> np.ndarray:
    """The complex64 array of ``name.hdr`` + ``name.cfl`` with BART's dimensions (trailing 1s
    dropped, at least one dimension)."""
    base = bart_base(path)
    hdr, cfl = base.with_suffix(".hdr"), base.with_suffix(".cfl")
    for p in (hdr, cfl):
        if not p.is_file():
            raise ValueError(f"{p}: no such file (a BART array is {base.name}.hdr + {base.name}.cfl)")
    lines = [ln for ln in hdr.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("#")]
    try:
        dims = [int(v) for v in lines[0].split()]
    except (IndexError, ValueError):
        raise ValueError(f"{hdr}: not a BART header (expected a '# Dimensions' line and a line of sizes)") from None
    if not dims or min(dims) < 1:
        raise ValueError(f"{hdr}: dimensions must be positive integers, got {dims}")
    count = int(np.prod(dims))
    size = cfl.stat().st_size
    if size != 8 * count:
        raise ValueError(f"{cfl}: holds {size} bytes, but the header's dimensions {dims} need {8 * count} "
                         f"(truncated or mismatched file)")
    a = np.fromfile(cfl, dtype=np.complex64, count=count).reshape(dims, order="F")
    while a.ndim > 1 and a.shape[-1] == 1:
        a = a[..., 0]
    return a


def write_cfl(path, array) -> None:
    """Write ``array`` (its dimensions BART's) as ``name.hdr`` + ``name.cfl`` (complex64, column-major)."""
    base = bart_base(path)
    a = np.asarray(array, dtype=np.complex64)
    dims = list(a.shape) + [1] * (_N - a.ndim)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    a.ravel(order="F").tofile(base.with_suffix(".cfl"))


def _to_bart(x: np.ndarray) -> np.ndarray:
    """(S, C, H, W) -> BART (H, W, 1, C, 1, ..., S)."""
    S, C, H, W = x.shape
    out = np.transpose(x, (2, 3, 1, 0)).reshape(H, W, 1, C, *([1] * (_SLICE - _MAPS)), S)
    return out


def _from_bart(a: np.ndarray, path, what: str, maps: bool = False) -> np.ndarray:
    """BART array -> (S, C, H, W); rejects dimensions fastsd has no place for."""
    dims = list(a.shape) + [1] * (_N - a.ndim)
    for d, n in enumerate(dims):
        if n > 1 and d not in (_READ, _PHS1, _COIL, _SLICE) and not (maps and d == _MAPS):
            extra = " (3-D k-space is not supported)" if d == _PHS2 else ""
            raise ValueError(f"{path}: {what} has {n} entries along BART dimension {d} ({_DIMS[d]}){extra}; "
                             f"expected READ, PHS1, COIL and SLICE only")
    full = a.reshape(dims, order="A")
    x = full[:, :, 0, :, 0, 0, 0, 0, 0, 0, 0, 0, 0, :, 0, 0]  # (H, W, C, S), first set of maps
    return np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)))


def load_bart_kspace(path, slices: slice | None = None) -> Scan:
    """BART k-space (READ, PHS1, 1, COIL, ..., SLICE) as a :class:`Scan`; the mask is the set of
    locations that hold data (``None`` when all do: a fully sampled scan)."""
    k = _from_bart(read_cfl(path), bart_base(path), "k-space")
    n = k.shape[0]
    wanted = list(range(n))[slices if slices is not None else slice(None)]
    if not wanted:
        raise ValueError(f"{path}: the slice range selects none of the array's {n} slices")
    kspace = torch.from_numpy(k[wanted])
    if not torch.isfinite(torch.view_as_real(kspace)).all():
        raise ValueError(f"{path}: k-space contains non-finite values")
    return Scan(kspace, sampled_mask(kspace), None, None, wanted, str(bart_base(path)), "bart")


def load_bart_maps(path) -> torch.Tensor:
    """BART coil maps (READ, PHS1, 1, COIL, MAPS, ..., SLICE), e.g. from ``bart ecalib``, as
    complex64 (S, C, H, W) (the first set of maps where there are several)."""
    return torch.from_numpy(_from_bart(read_cfl(path), bart_base(path), "coil maps", maps=True))


def save_bart_kspace(path, x) -> None:
    """Write k-space or coil maps (S, C, H, W) in BART's layout."""
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected (S, C, H, W), got shape {x.shape}")
    write_cfl(path, _to_bart(x))


def save_bart_volume(path, volume) -> None:
    """Write an image volume (S, H, W) in BART's layout (READ, PHS1, 1, ..., SLICE)."""
    v = volume.numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if v.ndim != 3:
        raise ValueError(f"expected (S, H, W), got shape {v.shape}")
    write_cfl(path, _to_bart(v[:, None]))
