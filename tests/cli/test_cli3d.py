"""The 3-D command line (fastsd reconstruct --task mri3d, fastsd demo --3d) through fastsd.cli's
entry point: tiny volumes, both reconstruction modes, k-space inputs, errors."""
import json

import numpy as np
import pytest
import torch

from fastsd.cli import main
from fastsd.ops import birdcage_maps
from fastsd.reference.mri import fftnc

pytest.importorskip("nibabel")
pytest.importorskip("matplotlib")

FAST = ["--T", "1", "--K", "2", "--device", "cpu", "--quiet", "--seed", "1"]


def test_3d_is_visible_in_both_helps(capsys):
    for argv, shown in ((["demo", "--help"], "--3d"), (["reconstruct", "--help"], "mri3d")):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert shown in text and "--mode" in text and "--calib" in text


@pytest.mark.parametrize("argv,match", [
    (["demo", "--mode", "both"], "--mode applies to 3-D MRI only"),
    (["demo", "--3d", "--acs", "4"], "--acs does not apply to --3d"),
    (["reconstruct", "v.npy", "--task", "mri3d", "--method", "dip"], "--method does not apply to --task mri3d"),
    (["reconstruct", "v.npy", "--task=mri3d", "--keep", "0.3"], "--keep does not apply to --task mri3d"),
    (["reconstruct", "v.npy", "--task", "mri3d", "--mask", "random"], "3-D MRI takes poisson or gaussian"),
    (["reconstruct", "v.npy", "--mask", "poisson"], "2-D MRI takes equispaced or random"),
    (["reconstruct", "v.npy", "--task", "mri3d", "--size", "8"], "three (D H W) in 3-D, got 1"),
    (["demo", "--size", "8", "8", "8"], "one number (N) in 2-D"),
])
def test_options_of_the_other_dimension_are_refused(argv, match, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err, err


def _volume(shape=(8, 32, 32)):
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    return ((g**2).sum(0) < 0.7).astype(np.float32) * (1 + 0.3 * g[1])


def test_reconstruct_volume_both_modes(tmp_path, capsys):
    np.save(tmp_path / "v.npy", _volume())
    out = tmp_path / "out"
    rc = main(["reconstruct", str(tmp_path / "v.npy"), "--task", "mri3d", "--coils", "4", "--acceleration", "3",
               "--mode", "both", "--width", "3", "--out", str(out), *[a for a in FAST if a != "--quiet"]])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "3-D SDI: level 1/1" in printed and "2-D SDI (slices): level 1/1" in printed and "PSNR" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["volume"] == [8, 32, 32] and m["coils"] == 4 and abs(m["acceleration"] / 3 - 1) < 0.05
    for name in ("zero_filled", "sdi3d", "sdi2d_slices"):
        assert set(m[name]) == {"psnr", "ssim", "nmse"} and np.isfinite(m[name]["psnr"])
        assert (out / f"{name}.nii.gz").is_file() and np.load(out / f"{name}.npy").shape == (8, 32, 32)
    assert m["runs"]["sdi3d"]["iterations"] == 2 and m["runs"]["sdi2d_slices"]["batch"] == 8
    assert [(m["runs"][n]["width"], m["runs"][n]["depth"]) for n in ("sdi3d", "sdi2d_slices")] == [(3, 2), (3, 4)]
    assert (out / "slices.png").is_file() and (out / "truth.nii.gz").is_file()
    from fastsd.data3d import load_nifti

    zf, _ = load_nifti(out / "zero_filled.nii.gz")
    assert zf.shape == (8, 32, 32)


def test_reconstruct_kspace_inputs(tmp_path, capsys):
    D, H, W = 8, 16, 12
    img = torch.from_numpy(_volume((D, H, W))).to(torch.complex64)
    k = fftnc(birdcage_maps(3, (D, H, W)) * img, 3)
    np.save(tmp_path / "full.npy", k.numpy())
    rc = main(["reconstruct", str(tmp_path / "full.npy"), "--task", "mri3d", "--acceleration", "3", "--calib", "4",
               "--out", str(tmp_path / "a"), *FAST])
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert rc == 0 and m["coils"] == 3 and "sdi3d" in m and abs(m["acceleration"] / 3 - 1) < 0.05
    mask = np.zeros((H, W), bool)
    mask[::2] = True
    np.save(tmp_path / "under.npy", (k * torch.from_numpy(mask)).numpy())
    rc = main(["reconstruct", str(tmp_path / "under.npy"), "--task", "mri3d", "--calib", "1",
               "--out", str(tmp_path / "b"), *FAST])
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert rc == 0 and m["acceleration"] == 2.0 and "sdi3d" not in m and m["runs"]["sdi3d"]["iterations"] == 2
    holes = k.clone()
    holes[:, ::2] = 0  # every other readout position missing
    np.save(tmp_path / "holes.npy", holes.numpy())
    assert main(["reconstruct", str(tmp_path / "holes.npy"), "--task", "mri3d", *FAST]) == 2
    assert "varies along the readout" in capsys.readouterr().err
    assert main(["reconstruct", str(tmp_path / "full.npy"), "--task", "mri3d", "--size", "4", "4", "4", *FAST]) == 2
    assert "not k-space" in capsys.readouterr().err


def test_bad_inputs(tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["reconstruct", str(tmp_path / "x.png"), "--task", "mri3d", *FAST]) == 2
    assert "expected a .nii" in capsys.readouterr().err
    np.save(tmp_path / "flat.npy", np.ones((4, 4), np.float32))
    assert main(["reconstruct", str(tmp_path / "flat.npy"), "--task", "mri3d", *FAST]) == 2
    assert "(D, H, W)" in capsys.readouterr().err
    np.save(tmp_path / "v.npy", _volume((4, 8, 8)))
    assert main(["reconstruct", str(tmp_path / "v.npy"), "--task", "mri3d", "--mode", "slices", *FAST]) == 2
    err = capsys.readouterr().err  # the 2-D network needs larger slices: named before any work, with the file
    assert "v.npy: images of 8x8 are smaller than the U-Net's minimum of 32 a side" in err
    assert main(["reconstruct", str(tmp_path / "v.npy"), "--task", "mri3d", "--T", "0"]) == 2


def test_demo_3d(tmp_path):
    from fastsd.data3d import mni_t1_path

    try:
        mni_t1_path()
    except ImportError:
        pytest.skip("nilearn is not installed (data3d extra)")
    out = tmp_path / "demo"
    assert main(["demo", "--3d", "--size", "8", "16", "16", "--coils", "2", "--acceleration", "3",
                 "--out", str(out), *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"].startswith("MNI ICBM152") and m["volume"] == [8, 16, 16] and m["runs"]["sdi3d"]["T"] == 1
