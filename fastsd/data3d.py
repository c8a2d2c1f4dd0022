"""3-D MRI data, offline: a real head volume, NIfTI files and simulated multi-coil acquisitions.

* :func:`mri_volume` — the MNI ICBM152 2009a T1 template that nilearn's wheel ships
  (``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``, 197x233x189 at
  1 mm), cropped to the head and resampled to the paper's 160x160x128 (or any size), as a
  complex volume in the 2-channel layout ``(1, 2, D, H, W)`` with magnitude in [0, 1]. Axes:
  D anterior-posterior (the readout), H superior-inferior, W left-right. nilearn is never
  imported (only its data file is read), so its dependencies are not loaded.
* :func:`simulate_acquisition` — 12-coil birdcage maps and Poisson-disc 8x sampling of the
  (ky, kz) phase-encoding plane with a fully sampled calibration box: an :class:`~fastsd.ops.MRI3D`
  operator and its measurements.
* :func:`load_nifti` / :func:`save_nifti` (nibabel), :func:`load_kspace3d` (.npy / .h5 k-space
  (C, D, H, W)), :func:`calibration_maps` (coil maps from the calibration box).

NIfTI files need nibabel (in the ``data`` extra), the template ``fastsd[data3d]`` (nibabel,
nilearn). Readers raise ``ValueError`` naming the path and the problem.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fastsd.limits import check_float32_range, check_input_size, check_values
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.masks import gaussian_mask_2d, poisson_disc_mask_2d
from fastsd.ops.mri import MRI3D, low_resolution_maps

__all__ = [
    "PAPER_SHAPE", "mni_t1_path", "mri_volume", "fit_volume", "simulate_acquisition", "load_nifti",
    "save_nifti", "load_kspace3d", "calibration_maps", "default_calib", "calib_side", "phase_encoding_mask",
]

PAPER_SHAPE = (160, 160, 128)
_MNI_T1 = ("datasets", "data", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
_EXTRA = "pip install 'fastsd[data3d]'"


def _nibabel():
    try:
        import nibabel
    except ImportError as e:
        raise ImportError("NIfTI volumes need nibabel (pip install 'fastsd[data]')") from e
    return nibabel


def mni_t1_path() -> Path:
    """Path of the MNI ICBM152 T1 template inside the installed nilearn package (not imported)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the bundled 3-D head MRI is nilearn's MNI ICBM152 T1 template ({_EXTRA})")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_MNI_T1)
    if not path.is_file():
        raise ValueError(f"nilearn's MNI ICBM152 T1 template is missing at {path}")
    return path


def load_nifti(path) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D NIfTI volume (scaled by its header) as float32 or complex64, and its 4x4 affine."""
    nib = _nibabel()
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    check_input_size(path)  # from the header, before decoding
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as e:  # nibabel raises several types for damaged files
        raise ValueError(f"{path}: not a readable NIfTI file ({' '.join(str(e).split())})") from None
    data = data.reshape(data.shape[:3]) if data.ndim > 3 and all(s == 1 for s in data.shape[3:]) else data
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: the volume contains non-finite values")
    check_float32_range(data, str(path))
    dtype = np.complex64 if np.iscomplexobj(data) else np.float32
    return data.astype(dtype), np.asarray(img.affine)


def save_nifti(path, volume, affine=None) -> None:
    """Write a 3-D float or complex volume as NIfTI-1 (``.nii`` or ``.nii.gz``)."""
    nib = _nibabel()
    vol = np.asarray(volume)
    vol = vol.astype(np.complex64 if np.iscomplexobj(vol) else np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4) if affine is None else np.asarray(affine)), str(path))


def fit_volume(volume: np.ndarray, shape, threshold: float = 0.05) -> torch.Tensor:
    """Crop a real volume to the bounding box of voxels above ``threshold * max``, pad the box
    symmetrically to the aspect ratio of ``shape`` (keeping the object's proportions), resample it
    to ``shape`` (trilinear) and scale to [0, 1]. Returns float32 (D, H, W)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (D, H, W) with positive sizes, got {shape}")
    v = np.asarray(volume, dtype=np.float64)
    if v.ndim != 3 or not np.isfinite(v).all() or v.max() <= 0:
        raise ValueError(f"expected a finite 3-D volume with positive values, got shape {v.shape}")
    idx = np.nonzero(v > threshold * v.max())
    lo = [int(i.min()) for i in idx]
    hi = [int(i.max()) + 1 for i in idx]
    v = v[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    zoom = max(n / s for n, s in zip(v.shape, shape))  # voxels of the box per output voxel
    want = [int(round(s * zoom)) for s in shape]
    pads = [(max(w - n, 0) // 2, max(w - n, 0) - max(w - n, 0) // 2) for w, n in zip(want, v.shape)]
    v = np.pad(v, pads)
    t = torch.from_numpy(np.ascontiguousarray(v))[None, None]
    t = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)[0, 0].clamp_min(0)
    return (t / t.max()).float()


def _smooth_phase(shape) -> torch.Tensor:
    axes = [torch.linspace(-1, 1, n, dtype=torch.float64) for n in shape]
    d, v, u = torch.meshgrid(*axes, indexing="ij")
    return (torch.pi / 2) * (0.5 * u + 0.3 * v + 0.2 * (u * u - v * v) + 0.2 * d)


def mri_volume(shape=PAPER_SHAPE, phase: str | None = None, device=None) -> torch.Tensor:
    """The MNI ICBM152 T1 head volume, float32 ``(1, 2, D, H, W)`` with magnitude in [0, 1]:
    axes (anterior-posterior, superior-inferior, left-right), cropped to the head and resampled
    to ``shape`` (default the paper's 160x160x128). The imaginary part is zero, or with
    ``phase='smooth'`` a smooth phase is applied (real acquisitions have one)."""
    if phase not in (None, "smooth"):
        raise ValueError(f"phase must be None or 'smooth', got {phase!r}")
    vol, _ = load_nifti(mni_t1_path())  # array axes (x: L->R, y: P->A, z: I->S)
    vol = np.transpose(vol, (1, 2, 0))[::-1, ::-1, :]  # (A->P, S->I, L->R)
    mag = fit_volume(vol, shape).double()
    phi = _smooth_phase(mag.shape) if phase else torch.zeros_like(mag)
    x = torch.stack([mag * torch.cos(phi), mag * torch.sin(phi)])[None]
    return x.to(device=device, dtype=torch.float32)


def simulate_acquisition(x: torch.Tensor, coils: int = 12, acceleration: float = 8.0, calib: int | None = None,
                         mask: str = "poisson", seed: int = 0, per_ring: int | None = None):
    """Simulated 3-D acquisition of a volume ``x`` (1, 2, D, H, W): birdcage coil maps (``coils``
    in rings of ``per_ring``, default two rings; 1 = single coil) and a ``mask`` ('poisson' disc or
    'gaussian' variable density) over the (H, W) phase-encoding plane at ``acceleration`` with a
    fully sampled ``calib`` x ``calib`` box (default 24 at 128 phase encodes, scaled with
    min(H, W)), every readout line along D fully sampled.
    Returns ``(y, op)`` with ``op`` an :class:`~fastsd.ops.MRI3D` on ``x``'s device."""
    if x.ndim != 5 or x.shape[1] != 2:
        raise ValueError(f"x must be a volume (B, 2, D, H, W), got shape {tuple(x.shape)}")
    if mask not in ("poisson", "gaussian"):
        raise ValueError(f"mask must be 'poisson' or 'gaussian', got {mask!r}")
    D, H, W = x.shape[-3:]
    m = phase_encoding_mask(H, W, acceleration, calib_side(H, W, calib), mask, seed)
    maps = None
    if coils > 1:
        maps = birdcage_maps(coils, (D, H, W), per_ring=per_ring or max(1, -(-coils // 2)))
    op = MRI3D(m, maps).to(x.device)
    with torch.no_grad():
        return op(x), op


def default_calib(H: int, W: int) -> int:
    """Side of the calibration box: 24 for a 160x128 phase-encoding plane, scaled with min(H, W)."""
    return max(2, round(min(H, W) * 24 / 128))


def calib_side(H: int, W: int, calib: int | None = None) -> int:
    """Side of the calibration box used: ``calib`` clipped to the (H, W) plane, or :func:`default_calib`."""
    return default_calib(H, W) if calib is None else min(int(calib), H, W)


def phase_encoding_mask(H: int, W: int, acceleration: float, calib: int, mask: str = "poisson",
                        seed: int = 0) -> torch.Tensor:
    """The (H, W) sampling mask of the phase-encoding plane: ``mask`` 'poisson' (disc) or
    'gaussian' (variable density) at ``acceleration`` with a fully sampled ``calib`` x ``calib`` box."""
    make = poisson_disc_mask_2d if mask == "poisson" else gaussian_mask_2d
    return make((H, W), acceleration, seed=seed, calib=(calib, calib))


def load_kspace3d(path) -> torch.Tensor:
    """Multi-coil 3-D k-space (C, D, H, W) complex64, centred, from a ``.npy`` file (complex
    array, (D, H, W) taken as one coil) or an ``.h5`` file with a ``kspace`` dataset."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix.lower() in (".h5", ".hdf5"):
        try:
            import h5py
        except ImportError as e:
            raise ImportError("reading .h5 files needs h5py (pip install 'fastsd[data]')") from e
        with h5py.File(path, "r") as f:
            if "kspace" not in f:
                raise ValueError(f"{path}: no 'kspace' dataset (found: {', '.join(f.keys()) or 'none'})")
            ks = f["kspace"]
            if not isinstance(ks, h5py.Dataset):
                raise ValueError(f"{path}: 'kspace' is an HDF5 {type(ks).__name__.lower()}, not a dataset")
            fastmri = [name for name in ("ismrmrd_header", "reconstruction_rss", "reconstruction_esc") if name in f]
            if fastmri:  # (slices, coils, H, W) would be read as (coils, readout, H, W)
                raise ValueError(f"{path}: a 2-D fastMRI file (it has '{fastmri[0]}'): its kspace {ks.shape} is "
                                 f"(slices, [coils,] H, W), not a 3-D acquisition; use --task mri")
            check_values(path, ks.shape, "kspace")
            k = np.asarray(ks)
    else:
        try:
            check_input_size(path)
            k = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"{path}: not a readable .npy file ({e})") from None
    if not np.iscomplexobj(k):
        raise ValueError(f"{path}: k-space must be complex, got dtype {k.dtype}")
    if k.ndim == 3:
        k = k[None]
    if k.ndim != 4:
        raise ValueError(f"{path}: k-space must have shape (C, D, H, W) or (D, H, W), got {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError(f"{path}: k-space contains non-finite values")
    check_float32_range(k, str(path))
    if not k.any():
        raise ValueError(f"{path}: the k-space is all zeros (nothing was measured)")
    return torch.from_numpy(k.astype(np.complex64))


def calibration_maps(kspace: torch.Tensor, mask: torch.Tensor, calib: int) -> torch.Tensor:
    """Coil maps (C, D, H, W) from the fully sampled ``calib`` x ``calib`` centre of the (H, W)
    plane under a Hann window (:func:`fastsd.ops.mri.low_resolution_maps`)."""
    C, D, H, W = kspace.shape
    cy, cx = min(calib, H), min(calib, W)
    y0, x0 = (H - cy + 1) // 2, (W - cx + 1) // 2
    win = torch.outer(torch.hann_window(cy + 2, periodic=False)[1:-1], torch.hann_window(cx + 2, periodic=False)[1:-1])
    low = torch.zeros_like(kspace)
    box = (..., slice(y0, y0 + cy), slice(x0, x0 + cx))
    low[box] = kspace[box] * (mask.reshape(-1, H, W)[0][y0:y0 + cy, x0:x0 + cx] * win).to(kspace.device)
    return low_resolution_maps(low, 3)
