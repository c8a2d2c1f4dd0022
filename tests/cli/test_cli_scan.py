"""``fastsd reconstruct SCAN`` end to end on tiny scanner files: every slice of a fastMRI file as one
scan, ISMRMRD and BART inputs, coil-map choices, bad files refused before any solve, and a run
stopped mid-scan keeping the slices it finished."""
import json
import re

import numpy as np
import pytest
import torch

from fastsd.cli import main
from fastsd.testing import assert_close

h5py = pytest.importorskip("h5py")
from scanfiles import line_mask, scan_kspace, write_fastmri, write_mrd  # noqa: E402

FAST = ["--T", "2", "--K", "2", "--quiet", "--small"]


def _metrics(path):
    return json.loads(path.read_text())


def _fastmri_file(tmp_path, S=3, H=32, W=48, C=3, **kw):
    k = scan_kspace(S=S, C=C, H=H, W=W)
    write_fastmri(tmp_path / "scan.h5", k, **kw)
    return tmp_path / "scan.h5", k


def test_every_slice_of_a_fastmri_file_is_one_scan(tmp_path):
    nib = pytest.importorskip("nibabel")
    path, k = _fastmri_file(tmp_path)
    out = tmp_path / "out"
    assert main(["reconstruct", str(path), "--acs", "8", "--batch-slices", "2", "--out", str(out)] + FAST) == 0
    m = _metrics(out / "metrics.json")
    assert m["status"] == "complete" and m["slices"] == [0, 1, 2] and m["slices_done"] == [0, 1, 2]
    assert m["solves"] == 2 and m["undersampling"] == "retrospective" and m["acs_lines"] >= 8
    assert len(m["per_slice"]) == 3 and m["sdi_worst_slice"]["psnr"] == min(r["sdi"]["psnr"] for r in m["per_slice"])
    assert m["baseline"]["psnr"] == pytest.approx(np.mean([r["baseline"]["psnr"] for r in m["per_slice"]]))
    for s in range(3):
        per = _metrics(out / f"slice_{s:03d}" / "metrics.json")
        assert per["slice"] == s and per["sdi"]["psnr"] == m["per_slice"][s]["sdi"]["psnr"]
        assert np.load(out / f"slice_{s:03d}" / "reconstruction.npy").shape == (32, 48)
    vol = nib.load(str(out / "reconstruction.nii.gz"))
    assert vol.shape == (32, 48, 3)
    rec1 = np.load(out / "slice_001" / "reconstruction.npy")
    assert_close("NIfTI slice 1", torch.from_numpy(np.asarray(vol.dataobj)[:, :, 1]), torch.from_numpy(np.abs(rec1)))
    assert (out / "montage.png").is_file() and (out / "reconstruction.cfl").is_file()


def test_slice_range_coil_maps_file_and_saved_maps(tmp_path):
    from fastsd.ops.coils import birdcage_maps
    from fastsd.scanner import read_cfl

    path, k = _fastmri_file(tmp_path, S=4, C=3)
    maps = birdcage_maps(3, (32, 48)).numpy()
    maps[:, :5, :7] = 0  # no coil sees the corner: the reconstruction is zero there
    np.save(tmp_path / "maps.npy", maps)
    out = tmp_path / "out"
    args = ["reconstruct", str(path), "--slices", "1:3", "--coil-maps", str(tmp_path / "maps.npy"), "--save-maps",
            "--acs", "8", "--out", str(out)]
    assert main(args + FAST) == 0
    m = _metrics(out / "metrics.json")
    assert m["slices_done"] == [1, 2] and m["coil_maps"].endswith("maps.npy")
    assert sorted(p.name for p in out.glob("slice_*")) == ["slice_001", "slice_002"]
    rec = np.load(out / "slice_002" / "reconstruction.npy")
    assert np.all(rec[:5, :7] == 0) and np.all(rec[5:, 7:] != 0)
    assert read_cfl(out / "coil_maps").shape == (32, 48, 1, 3, *([1] * 9), 2)


def test_ismrmrd_scan_with_espirit_maps_keeps_its_own_mask(tmp_path):
    pytest.importorskip("ismrmrd")
    pytest.importorskip("sigpy")
    k = scan_kspace(S=2, C=4, H=32, W=32)
    lines = line_mask(32, 32, 3, 12)[0].bool().numpy()
    write_mrd(tmp_path / "raw.h5", k, lines)
    out = tmp_path / "out"
    assert main(["reconstruct", str(tmp_path / "raw.h5"), "--coil-maps", "espirit", "--out", str(out)] + FAST) == 0
    m = _metrics(out / "metrics.json")
    assert m["format"] == "mrd" and m["undersampling"] == "measured" and m["coil_maps"] == "espirit"
    assert m["acceleration"] == pytest.approx(32 / lines.sum()) and m["voxel_size_mm"] == [220 / 32, 180 / 32, 5.0]
    assert "sdi" not in m and m["status"] == "complete"  # no fully sampled truth to compare with


def test_bart_kspace_input(tmp_path):
    from fastsd.scanner import save_bart_kspace

    k = scan_kspace(S=2, C=2, H=32, W=32)
    save_bart_kspace(tmp_path / "ksp", k * line_mask(32, 32, 2, 8))
    out = tmp_path / "out"
    assert main(["reconstruct", str(tmp_path / "ksp.cfl"), "--out", str(out)] + FAST) == 0
    assert _metrics(out / "metrics.json")["format"] == "bart"


@pytest.fixture
def no_solve(monkeypatch):
    monkeypatch.setattr("fastsd.api.solve", lambda *a, **k: pytest.fail("a solve started"))


def test_bad_scans_fail_in_one_line_before_any_solve(tmp_path, capsys, no_solve):
    path, k = _fastmri_file(tmp_path, S=2, H=64, W=64)
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["reconstruction_rss"] = np.zeros((2, 8, 8), np.float32)
    no_acs = line_mask(64, 64, 4, 0)[0].numpy()
    write_fastmri(tmp_path / "noacs.h5", k * torch.from_numpy(no_acs), mask=no_acs)
    np.save(tmp_path / "maps.npy", np.ones((5, 64, 64), np.complex64))
    cases = [(["cut.h5"], "(not a readable HDF5|truncated)"), (["empty.h5"], "no 'kspace' dataset"),
             (["noacs.h5"], "has no ACS"),
             (["scan.h5", "--coil-maps", str(tmp_path / "maps.npy")], "inconsistent coil counts: 5 coil maps"),
             (["scan.h5", "--slices", "5:9"], "selects none of the file's 2 slices"),
             (["scan.h5", "--slices", "x"], "--slices: slices must be"),
             (["scan.h5", "--method", "dip"], "sdi only"),
             (["scan.h5", "--task", "denoise"], "needs --task mri"),
             (["img.npy", "--coil-maps", "espirit"], "--coil-maps applies to scanner files")]
    np.save(tmp_path / "img.npy", np.ones((32, 32), np.float32))
    for args, match in cases:
        out = tmp_path / "out"
        assert main(["reconstruct", str(tmp_path / args[0]), *args[1:], "--acs", "8", "--out", str(out)] + FAST) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("fastsd: error:"), err
        assert re.search(match, err), (match, err)
        assert not out.exists()


@pytest.mark.parametrize("stop", ["ctrl-c", "error"])
def test_a_stopped_scan_keeps_the_slices_it_finished(tmp_path, capsys, monkeypatch, stop):
    from fastsd import api

    path, _ = _fastmri_file(tmp_path, S=3)
    real, calls = api.solve, []

    def second_fails(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt if stop == "ctrl-c" else RuntimeError("device lost")
        return real(*a, **kw)

    monkeypatch.setattr("fastsd.api.solve", second_fails)
    out = tmp_path / "out"
    status = main(["reconstruct", str(path), "--acs", "8", "--batch-slices", "1", "--out", str(out)] + FAST)
    err = capsys.readouterr().err.strip()
    assert status == (130 if stop == "ctrl-c" else 2) and len(err.splitlines()) == 1
    assert "after 1 of 3 slices" in err
    m = _metrics(out / "metrics.json")
    assert m["status"] == ("interrupted" if stop == "ctrl-c" else "error") and m["slices_done"] == [0]
    assert (out / "slice_000" / "metrics.json").is_file() and not (out / "slice_001").exists()
    assert (out / "reconstruction.nii.gz").is_file()


def test_directory_run_keeps_a_partial_scan(tmp_path, capsys, monkeypatch):
    from fastsd import api

    src = tmp_path / "scans"
    src.mkdir()
    _fastmri_file(src, S=2)
    real, calls = api.solve, []

    def second_fails(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("device lost")
        return real(*a, **kw)

    monkeypatch.setattr("fastsd.api.solve", second_fails)
    out = tmp_path / "out"
    assert main(["reconstruct", str(src), "--acs", "8", "--batch-slices", "1", "--out", str(out)] + FAST) == 2
    summary = _metrics(out / "summary.json")
    assert summary["files"][0]["status"] == "error" and "after 1 of 2 slices" in summary["files"][0]["error"]
    assert _metrics(out / "scan" / "metrics.json")["slices_done"] == [0]
