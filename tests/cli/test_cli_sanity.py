"""The command line's refusals before compute (meaningless or oversize options, inputs that observe
nothing or are too small for the network), results that are non-finite or diverged reported as
failed inputs (exit status 1, a failed entry in a directory summary), errors that name the file or
option, and the noise levels the command line hands to the solvers."""
import math

import numpy as np
import pytest
import torch
from test_cli_robust import INPAINT, _gray, _one_error_line, _run, _strict_json

from fastsd.cli import recon2d, solving
from fastsd.cli.options import parse


@pytest.fixture
def no_solve(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("the solve started before the error was found")

    monkeypatch.setattr("fastsd.api.solve", forbidden)


def _kspace_h5(path, zeros=False, group=False, width=64):
    import h5py

    rng = np.random.default_rng(0)
    k = (rng.standard_normal((3, 2, 32, width)) + 1j * rng.standard_normal((3, 2, 32, width))).astype(np.complex64)
    with h5py.File(path, "w") as f:
        if group:
            f.create_group("kspace").create_dataset("data", data=k)
        else:
            f.create_dataset("kspace", data=0 * k if zeros else k)
    return path


BEFORE_COMPUTE = [  # (input, options, the one line's expected content)
    ("g.npy", ["--task", "inpaint", "--keep", "1e-9"], "--keep 1e-09 observes no pixel of the 32x32 image"),
    ("g.npy", ["--task", "deblur", "--blur-sigma", "1e9"], "--blur-sigma 1e+09 needs a 6000000001x6000000001 kernel"),
    ("g.npy", ["--task", "deblur", "--kernel", "motion", "--motion-length", "99"], "--motion-length 99 needs a 99x99"),
    ("g.npy", ["--task", "denoise", "--dc"], "--dc does not apply to --task denoise"),
    ("g.npy", ["--task", "inpaint", "--device", "meta"], "--device meta: device='meta' holds no data"),
    ("g.npy", ["--task", "inpaint", "--seed", str(2**70)], "--seed must be an integer in [0, 2**62]"),
    ("g.npy", ["--task", "inpaint", "--T", str(10**8)], "--T must be a positive integer of at most 1e+07"),
    ("g.npy", ["--task", "inpaint", "--T", "5000", "--K", "5000"], "--T 5000 x --K 5000 = 25000000 steps exceeds"),
    ("g16.npy", ["--task", "inpaint"], "g16.npy: the 16x16 image is smaller than the CPU-sized (--small) U-Net's "
                                       "minimum of 32x32: pass --size 32"),
    ("big.npy", ["--task", "inpaint"], "big.npy: values up to 1e+300 exceed float32's range"),
    ("k.h5", ["--task", "mri", "--coils", "4"], "--coils 4 applies to simulated k-space; {d}/k.h5 holds measured"),
    ("k.h5", ["--task", "mri", "--noise", "0.1"], "--noise 0.1 applies to simulated k-space"),
    ("zero.h5", ["--task", "mri"], "zero.h5: kspace slice 0 is all zeros"),  # every slice of a scan is read
    ("group.h5", ["--task", "mri"], "group.h5: 'kspace' is an HDF5 group, not a dataset"),
    ("vol.npy", ["--task", "mri3d", "--size", "100000", "100000", "100000"], "--size must be positive with at most"),
    ("zero3d.npy", ["--task", "mri3d"], "zero3d.npy: the k-space is all zeros"),
]


@pytest.mark.parametrize("name, options, match", BEFORE_COMPUTE, ids=[" ".join(c[1][2:]) or c[0] for c in BEFORE_COMPUTE])
def test_refused_in_one_line_before_compute(tmp_path, capsys, no_solve, name, options, match):
    _gray(tmp_path / "g.npy")
    _gray(tmp_path / "g16.npy", size=16)
    np.save(tmp_path / "big.npy", np.full((32, 32), 1e300))
    np.save(tmp_path / "vol.npy", np.ones((16, 16, 16), np.float32))
    np.save(tmp_path / "zero3d.npy", np.zeros((2, 8, 16, 16), np.complex64))
    _kspace_h5(tmp_path / "k.h5")
    _kspace_h5(tmp_path / "zero.h5", zeros=True)
    _kspace_h5(tmp_path / "group.h5", group=True)
    out = tmp_path / "out"
    code, _, err = _run(["reconstruct", str(tmp_path / name), "--out", str(out), "--quiet"] + options, capsys)
    assert code == 2 and match.format(d=tmp_path) in _one_error_line(err)
    assert not out.exists()


@pytest.mark.parametrize("lr, reason", [("1e4", "diverged: data residual"), ("1e9", "non-finite value")])
def test_a_diverged_result_is_a_failed_input_not_a_result(tmp_path, capsys, lr, reason):
    """Rule (fastsd.sanity): non-finite, or ‖A x − y‖ > 10 ‖y‖ (ten times the all-zero image's residual)."""
    src = _gray(tmp_path / "g.npy")
    out = tmp_path / "out"
    code, _, err = _run(["reconstruct", str(src), "--out", str(out), "--lr", lr] + INPAINT, capsys)
    line = _one_error_line(err)
    assert code == 1 and str(src) in line and reason in line
    assert not out.exists()
    ok = _run(["reconstruct", str(src), "--out", str(out)] + INPAINT, capsys)
    assert ok[0] == 0
    metrics = _strict_json(out / "metrics.json")
    assert metrics["config"]["data_residual"] > 0  # the checked residual is recorded


def test_a_diverged_file_is_a_failed_entry_of_a_directory_run(tmp_path, capsys, monkeypatch):
    """The second file's solve diverges (forced): it is recorded as failed with its reason, the
    first is written, and the run exits 2 (some files failed)."""
    from fastsd.sanity import ResultError

    d = tmp_path / "in"
    d.mkdir()
    _gray(d / "a.npy", seed=1)
    _gray(d / "b.npy", seed=2)
    real, orig_setup, current = recon2d.sanity.check_result, recon2d._setup_image, {}

    def setup(args, path, dev):
        current["stem"] = path.stem
        return orig_setup(args, path, dev)

    def fail_b(result, y, op, what, x=None):
        if current["stem"] == "b":
            raise ResultError(f"{what} diverged: forced", result)
        return real(result, y, op, what, x)

    monkeypatch.setattr(recon2d, "_setup_image", setup)
    monkeypatch.setattr(recon2d.sanity, "check_result", fail_b)
    code, _, err = _run(["reconstruct", str(d), "--out", str(tmp_path / "out")] + INPAINT, capsys)
    summary = _strict_json(tmp_path / "out" / "summary.json")
    status = {r["input"].rsplit("/", 1)[-1]: r for r in summary["files"]}
    assert code == 2 and status["a.npy"]["status"] == "ok" and status["b.npy"]["status"] != "ok"
    assert "b.npy: the sdi result diverged: forced" in status["b.npy"]["error"]
    assert (tmp_path / "out" / "a" / "metrics.json").exists() and not (tmp_path / "out" / "b").exists()


def test_a_full_disk_names_where_it_was_writing(tmp_path, capsys, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    src = _gray(tmp_path / "g.npy")
    monkeypatch.setattr("fastsd.outputs.np.save", full)
    code, _, err = _run(["reconstruct", str(src), "--out", str(tmp_path / "out")] + INPAINT, capsys)
    line = _one_error_line(err)
    assert code == 2 and "No space left on device" in line and f"writing results in {tmp_path}" in line


def test_train_denoiser_channels_3_trains_on_the_colour_images(tmp_path, capsys):
    """Before, --channels 3 failed on the bundled grey camera image, yet an error message recommended it."""
    code, out, err = _run(["train-denoiser", "--channels", "3", "--steps", "1", "--batch-size", "2", "--width", "4",
                           "--depth", "2", "--out", str(tmp_path / "d3.pt")], capsys)
    assert code == 0, err
    from fastsd.priors import load_denoiser

    assert load_denoiser(tmp_path / "d3.pt").channels == 3


# -- the noise levels handed to the solvers ------------------------------------------------------


def test_denoise_simulates_noise_of_std_25_over_255_by_default(tmp_path):
    src = _gray(tmp_path / "g.npy", size=64)
    args = parse(["reconstruct", str(src), "--task", "denoise"])
    y, _, x = recon2d._setup_image(args, src, torch.device("cpu"))
    assert float((y - x).std()) == pytest.approx(25 / 255, rel=0.05)
    args = parse(["reconstruct", str(src), "--task", "denoise", "--noise", "0.2"])
    y, _, x = recon2d._setup_image(args, src, torch.device("cpu"))
    assert float((y - x).std()) == pytest.approx(0.2, rel=0.05)


@pytest.mark.parametrize("task, noise, expected", [("mri", 0.1, 0.1 / math.sqrt(2)), ("inpaint", 0.1, 0.2)])
def test_prior_solvers_get_the_noise_level_per_real_component(tmp_path, monkeypatch, task, noise, expected):
    """Complex MRI noise of std σ has σ/√2 per real component; image problems are solved on [-1, 1]
    (2x - 1), which doubles the noise std."""
    from fastsd.priors import TinyDenoiser

    src = _gray(tmp_path / "g.npy")
    args = parse(["reconstruct", str(src), "--task", task, "--noise", str(noise), "--method", "projdiff",
                  "--denoiser", "unused.pt", "--acs", "4"])
    dev = torch.device("cpu")
    y, op, _ = (recon2d._setup_mri if task == "mri" else recon2d._setup_image)(args, src, dev)
    seen = {}

    def capture(method, y, op, kw, truth, show, progress):
        seen.update(kw)
        raise KeyboardInterrupt  # stop before any solve

    monkeypatch.setattr(solving, "run_solver", capture)
    with pytest.raises(KeyboardInterrupt):
        solving.run_method(args, task, y, op, None, dev, False, TinyDenoiser(channels=2 if task == "mri" else 1))
    assert seen["noise_level"] == pytest.approx(expected, rel=1e-12)
