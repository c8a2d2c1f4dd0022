"""Scanner data readers and writers (fastsd.scanner): whole fastMRI files, ISMRMRD files written
with the ismrmrd package, BART .cfl/.hdr round trips, NIfTI volumes, coil maps, and the bad files
that must fail in one line before any solve."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsd.data import mri_slice
from fastsd.ops.coils import birdcage_maps
from fastsd.scanner import (
    acs_lines,
    coil_maps,
    load_bart_kspace,
    load_bart_maps,
    load_scan,
    parse_slices,
    read_cfl,
    save_bart_kspace,
    save_bart_volume,
    save_volume_nifti,
    write_cfl,
)
from fastsd.scanner.coilmaps import coil_support, load_maps

h5py = pytest.importorskip("h5py")
from scanfiles import line_mask, mrd_header, scan_kspace, write_fastmri, write_mrd  # noqa: E402

# -- fastMRI -------------------------------------------------------------------------------------


def test_fastmri_whole_file_every_slice_and_a_range(tmp_path):
    k = scan_kspace(S=5)
    write_fastmri(tmp_path / "f.h5", k)
    scan = load_scan(tmp_path / "f.h5")
    assert scan.format == "fastmri" and scan.slices == [0, 1, 2, 3, 4] and scan.mask is None
    assert torch.equal(scan.kspace, k) and scan.rss.shape == (5, 32, 24)
    part = load_scan(tmp_path / "f.h5", parse_slices("1:4"))
    assert part.slices == [1, 2, 3] and torch.equal(part.kspace, k[1:4]) and torch.equal(part.rss, scan.rss[1:4])
    assert load_scan(tmp_path / "f.h5", parse_slices("4")).slices == [4]


def test_fastmri_mask_and_header_voxel_size(tmp_path):
    pytest.importorskip("ismrmrd")
    k = scan_kspace(S=2, W=24)
    cols = line_mask(32, 24, 3, 6)[0].numpy()
    write_fastmri(tmp_path / "f.h5", k * torch.from_numpy(cols), mask=cols.astype(bool), header=mrd_header(2, 4, 32, 24))
    scan = load_scan(tmp_path / "f.h5")
    assert scan.mask.shape == (32, 24) and torch.equal(scan.mask[5], torch.from_numpy(cols))
    assert scan.voxel_size == pytest.approx((220 / 32, 180 / 24, 5.0))


def test_parse_slices():
    assert parse_slices(None) is None and parse_slices("2:7") == slice(2, 7) and parse_slices(":3") == slice(None, 3)
    for bad in ("a:b", "1:2:3", "-1:4"):
        with pytest.raises(ValueError, match="slices must be"):
            parse_slices(bad)


# -- ISMRMRD ---------------------------------------------------------------------------------------


@pytest.fixture
def ismrmrd():
    return pytest.importorskip("ismrmrd")


def test_mrd_sorted_into_slices_coils_kx_ky_with_mask_and_acs(tmp_path, ismrmrd):
    k = scan_kspace(S=3, C=4, H=32, W=24)
    lines = line_mask(32, 24, 4, 8)[0].bool().numpy()
    write_mrd(tmp_path / "raw.h5", k, lines, reverse_odd=True)
    scan = load_scan(tmp_path / "raw.h5")
    assert scan.format == "mrd" and scan.kspace.shape == (3, 4, 32, 24) and scan.slices == [0, 1, 2]
    assert torch.equal(scan.mask, torch.from_numpy(np.broadcast_to(lines, (32, 24)).astype(np.float32)))
    assert torch.allclose(scan.kspace, k * scan.mask)  # reversed lines flipped back, noise scan skipped
    assert acs_lines(scan.mask) == (8, 16) and scan.voxel_size == pytest.approx((220 / 32, 180 / 24, 5.0))
    part = load_scan(tmp_path / "raw.h5", slice(1, 3))
    assert part.slices == [1, 2] and torch.allclose(part.kspace, k[1:] * scan.mask)


def test_mrd_fully_sampled_has_no_mask(tmp_path, ismrmrd):
    k = scan_kspace(S=2, C=2, H=16, W=12)
    write_mrd(tmp_path / "full.h5", k, np.ones(12, bool))
    scan = load_scan(tmp_path / "full.h5")
    assert scan.mask is None and torch.allclose(scan.kspace, k)


@pytest.mark.parametrize("case,match", [
    ("radial", "radial trajectory; only Cartesian"),
    ("spiral", "spiral trajectory"),
    ("truncated", "slice 2 samples .* a truncated scan"),
    ("missing_slice", "slice 2 has no acquisitions"),
    ("coils", r"inconsistent coil counts \(active_channels\) across the acquisitions \(3, 4\)"),
    ("header_coils", "inconsistent coil counts: the header declares 8"),
])
def test_mrd_bad_files_fail_in_one_line(tmp_path, ismrmrd, case, match):
    k = scan_kspace(S=3, C=4, H=16, W=16)
    lines = np.zeros(16, bool)
    lines[::2] = lines[5:11] = True
    per_slice = int(lines.sum())
    kw = {"radial": dict(trajectory="radial"), "spiral": dict(trajectory="spiral"),
          "truncated": dict(stop_after=2 * per_slice + 3), "missing_slice": dict(stop_after=2 * per_slice),
          "coils": dict(coils_of=lambda i: 3 if i == 5 else 4), "header_coils": dict(channels=8)}[case]
    write_mrd(tmp_path / "bad.h5", k, lines, **kw)
    with pytest.raises(ValueError, match=match) as e:
        load_scan(tmp_path / "bad.h5")
    assert "\n" not in str(e.value) and "bad.h5" in str(e.value)


# -- BART -------------------------------------------------------------------------------------------


def test_cfl_round_trip_and_layout(tmp_path):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((5, 3, 1, 2)) + 1j * rng.standard_normal((5, 3, 1, 2))).astype(np.complex64)
    write_cfl(tmp_path / "a", a)
    assert (tmp_path / "a.hdr").read_text().splitlines() == ["# Dimensions", "5 3 1 2 " + " ".join(["1"] * 12)]
    raw = np.fromfile(tmp_path / "a.cfl", np.complex64)
    assert raw[1] == a[1, 0, 0, 0] and raw[5] == a[0, 1, 0, 0]  # column-major: first dimension fastest
    assert np.array_equal(read_cfl(tmp_path / "a.cfl"), a)


def test_bart_kspace_and_maps_round_trip(tmp_path):
    k = scan_kspace(S=3, C=4, H=20, W=14)
    save_bart_kspace(tmp_path / "ksp", k)
    dims = [int(v) for v in (tmp_path / "ksp.hdr").read_text().splitlines()[1].split()]
    assert dims[:4] == [20, 14, 1, 4] and dims[13] == 3 and len(dims) == 16
    scan = load_bart_kspace(tmp_path / "ksp.cfl")
    assert torch.equal(scan.kspace, k) and scan.mask is None and scan.format == "bart"
    mask = line_mask(20, 14, 3, 4)
    save_bart_kspace(tmp_path / "under", k * mask)
    assert torch.equal(load_scan(tmp_path / "under.hdr").mask, mask)
    maps = birdcage_maps(4, (20, 14))
    save_bart_kspace(tmp_path / "maps", maps[None])
    assert torch.equal(load_bart_maps(tmp_path / "maps"), maps[None])
    save_bart_volume(tmp_path / "vol", k[:, 0])
    assert np.array_equal(read_cfl(tmp_path / "vol")[:, :, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], k[1, 0].numpy())


def test_bart_maps_take_the_first_set_and_reject_3d(tmp_path):
    maps = birdcage_maps(3, (10, 12)).numpy()
    two = np.stack([maps, 2 * maps], -1).transpose(1, 2, 0, 3)[:, :, None]  # (H, W, 1, C, MAPS=2)
    write_cfl(tmp_path / "m2", two)
    assert np.array_equal(load_bart_maps(tmp_path / "m2")[0].numpy(), maps)
    write_cfl(tmp_path / "k3", np.ones((10, 12, 4, 3), np.complex64))
    with pytest.raises(ValueError, match=r"4 entries along BART dimension 2 \(PHS2\).*3-D k-space"):
        load_bart_kspace(tmp_path / "k3")


def test_bart_truncated_cfl_fails(tmp_path):
    save_bart_kspace(tmp_path / "k", scan_kspace(S=1, C=2, H=8, W=8))
    data = (tmp_path / "k.cfl").read_bytes()
    (tmp_path / "k.cfl").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="truncated or mismatched"):
        load_scan(tmp_path / "k.cfl")


# -- NIfTI ---------------------------------------------------------------------------------------------


def test_nifti_volume_axes_and_voxel_size(tmp_path):
    nib = pytest.importorskip("nibabel")
    vol = np.random.default_rng(0).random((3, 8, 6)).astype(np.float32)
    save_volume_nifti(tmp_path / "reconstruction.nii.gz", vol, (0.5, 0.7, 3.0))
    img = nib.load(str(tmp_path / "reconstruction.nii.gz"))
    assert img.shape == (8, 6, 3) and np.allclose(img.header.get_zooms(), (0.5, 0.7, 3.0))
    assert np.array_equal(np.asarray(img.dataobj)[:, :, 2], vol[2])


# -- coil maps ------------------------------------------------------------------------------------------


def _relative_fit(maps: torch.Tensor, truth: torch.Tensor, support: torch.Tensor) -> float:
    """How well ``maps`` match ``truth`` up to one phase per pixel: 1 - mean |<m, t>| over the support."""
    inner = (maps.conj() * truth).sum(0).abs()
    norm = maps.abs().square().sum(0).sqrt() * truth.abs().square().sum(0).sqrt()
    return float(1 - (inner / norm.clamp_min(1e-12))[support].mean())


@pytest.mark.parametrize("method", ["acs", "espirit"])
def test_coil_maps_match_the_true_maps_up_to_phase(method):
    if method == "espirit":
        pytest.importorskip("sigpy")
    H, W = 48, 40
    k = scan_kspace(S=2, C=6, H=H, W=W)
    mask = line_mask(H, W, 4, 12)
    maps = coil_maps(k * mask, mask, method)
    assert maps.shape == (2, 6, H, W) and maps.dtype == torch.complex64
    support = mri_slice((H, W))[0].norm(dim=0) > 0.2
    assert _relative_fit(maps[1], birdcage_maps(6, (H, W)), support) < 0.02
    inside = coil_support(maps)[1, 0]
    if method == "espirit":  # ESPIRiT crops the maps to the object; the support is where it is
        assert inside[support].float().mean() > 0.99 and not inside.all()
    else:
        assert inside[support].all()
    # a mask whose centre is missing has no ACS
    bad = mask.clone()
    bad[:, W // 2 - 1:W // 2 + 1] = 0
    with pytest.raises(ValueError, match="has no ACS"):
        coil_maps(k * bad, bad, method)


def test_coil_maps_from_files(tmp_path):
    maps = birdcage_maps(4, (16, 12))
    np.save(tmp_path / "m.npy", maps.numpy())
    out = coil_maps(torch.zeros(3, 4, 16, 12, dtype=torch.complex64), torch.ones(16, 12), str(tmp_path / "m.npy"))
    assert out.shape == (3, 4, 16, 12) and torch.equal(out[2], maps)
    save_bart_kspace(tmp_path / "m", maps[None])
    assert torch.equal(load_maps(tmp_path / "m.cfl", (3, 4, 16, 12))[1], maps)
    with pytest.raises(ValueError, match="inconsistent coil counts: 4 coil maps for k-space of 8 coils"):
        load_maps(tmp_path / "m.npy", (3, 8, 16, 12))
    with pytest.raises(ValueError, match="do not match the k-space's 16x16"):
        load_maps(tmp_path / "m.npy", (3, 4, 16, 16))
    np.save(tmp_path / "real.npy", np.ones((4, 16, 12), np.float32))
    with pytest.raises(ValueError, match="must be complex"):
        load_maps(tmp_path / "real.npy", (3, 4, 16, 12))


# -- bad fastMRI files ----------------------------------------------------------------------------------


def test_bad_fastmri_files_fail_in_one_line(tmp_path):
    k = scan_kspace(S=4, C=2, H=64, W=64)
    write_fastmri(tmp_path / "good.h5", k)
    data = (tmp_path / "good.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with h5py.File(tmp_path / "nokspace.h5", "w") as f:
        f["image"] = np.zeros((2, 8, 8), np.float32)
    with h5py.File(tmp_path / "rss.h5", "w") as f:
        f["kspace"] = k.numpy()
        f["reconstruction_rss"] = np.zeros((3, 64, 64), np.float32)
    cases = {"cut.h5": "(not a readable HDF5|truncated)", "nokspace.h5": "no 'kspace' dataset"}
    for name, match in cases.items():
        with pytest.raises(ValueError, match=match) as e:
            load_scan(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)
    with pytest.warns(UserWarning, match=r"rss.h5: reconstruction_rss \(\(3, 64, 64\)\) does not hold one image per "
                                         r"kspace slice \(4\); ignored"):
        load_scan(tmp_path / "rss.h5")  # the k-space is still usable
    with pytest.raises(ValueError, match="selects none of the file's 4 slices"):
        load_scan(tmp_path / "good.h5", slice(6, 9))
