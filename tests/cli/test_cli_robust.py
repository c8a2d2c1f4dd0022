"""The command line on bad input and on interruption: everything checked before the solve, results
never lost or silently replaced, directory runs that never abort, one-line errors, strict JSON,
and the pictures every run writes."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastsd.cli import main, recon2d, solving
from fastsd.testing import assert_close

FAST = ["--T", "2", "--K", "2", "--quiet", "--small", "--device", "cpu"]
INPAINT = ["--task", "inpaint"] + FAST


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if not ln.startswith("fastsd: warning:")]
    assert len(lines) == 1 and lines[0].startswith("fastsd: error:") and "Traceback" not in err, err
    return lines[0]


def _strict_json(path):
    def no_constants(name):
        raise AssertionError(f"{path}: {name} is not valid JSON")

    return json.loads(path.read_text(), parse_constant=no_constants)


@pytest.fixture
def no_solve(monkeypatch):
    """Fails the test if a solve starts: the error must come before any compute."""

    def forbidden(*a, **k):
        raise AssertionError("the solve started before the error was found")

    monkeypatch.setattr("fastsd.api.solve", forbidden)


def _gray(path, size=32, seed=0, dtype=np.float32, scale=1.0):
    np.save(path, (scale * np.random.default_rng(seed).random((size, size))).astype(dtype))
    return path


# -- validate before compute -----------------------------------------------------------------------


@pytest.mark.parametrize("setup,out,match", [
    ("file", "{d}/taken", "exists and is not a folder"),
    ("file", "{d}/taken/sub", "is a file, not a folder"),
    ("other", "{d}/other", "holds no fastsd results"),
])
def test_unusable_out_is_reported_before_the_solve(tmp_path, capsys, no_solve, setup, out, match):
    src = _gray(tmp_path / "g.npy")
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    code, _, err = _run(["reconstruct", str(src), "--out", out.format(d=tmp_path)] + INPAINT, capsys)
    assert code == 2 and match in _one_error_line(err) and "--out" in err
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_folder_is_reported_before_the_solve(tmp_path, capsys, no_solve):
    src = _gray(tmp_path / "g.npy")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = _run(["reconstruct", str(src), "--out", str(ro / "o")] + INPAINT, capsys)
    finally:
        ro.chmod(0o755)
    assert code == 2 and "not writable" in _one_error_line(err)


@pytest.mark.parametrize("make,argv,match", [
    (lambda p: np.save(p, np.zeros((0, 32), np.float32)), INPAINT, "at least 8x8"),
    (lambda p: np.save(p, np.zeros((5, 32, 32), np.float32)), INPAINT, "1 to 4 channels"),
    (lambda p: np.save(p, np.zeros((32, 32), np.float32)), INPAINT, "all zeros"),
    (lambda p: np.save(p, np.zeros((32, 32), np.float32)), ["--task", "mri", "--acs", "4"] + FAST, "all zeros"),
    (lambda p: np.save(p, np.full((32, 32), -3, np.int64)), INPAINT, "negative values"),
    (lambda p: np.save(p, np.full((32, 32), 70000, np.int64)), INPAINT, "exceed the 16-bit range"),
    (lambda p: np.save(p, np.full((32, 32), np.nan, np.float32)), INPAINT, "non-finite"),
])
def test_bad_images_are_reported_before_the_solve(tmp_path, capsys, no_solve, make, argv, match):
    make(tmp_path / "bad.npy")
    code, _, err = _run(["reconstruct", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o")] + argv, capsys)
    line = _one_error_line(err)
    assert code == 2 and match in line and "bad.npy" in line
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))  # nothing left behind


@pytest.mark.parametrize("argv,match", [
    (["--coils", "0"], "--coils must be a positive integer"),
    (["--coils", "-2"], "--coils must be a positive integer"),
    (["--noise", "-0.1"], "--noise must be a number >= 0"),
    (["--noise", "nan"], "--noise must be a number >= 0"),
    (["--task", "inpaint", "--box", "-4"], "--box must be an integer >= 0"),
    (["--task", "inpaint", "--box", "32"], "--box 32 covers the whole 32x32 image"),
    (["--task", "inpaint", "--keep", "0"], "--keep must be in (0, 1]"),
    (["--task", "deblur", "--blur-sigma", "-1"], "--blur-sigma must be a positive number"),
    (["--size", "100000"], "--size must be between 8 and 4096"),
    (["--size", "64"], "--acs 20 / --acceleration 4.0 on 64 k-space columns"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--acceleration", "0.5"], "--acceleration must be a number >= 1"),
    (["--device", "tpu9"], "--device"),
])
def test_option_errors_name_the_option(tmp_path, capsys, no_solve, argv, match):
    src = _gray(tmp_path / "g.npy")
    code, _, err = _run(["reconstruct", str(src), "--out", str(tmp_path / "o"), "--quiet"] + argv, capsys)
    assert code == 2 and match in _one_error_line(err)


def test_demo_option_errors(tmp_path, capsys, no_solve):
    for argv, match in ((["--size", "100000"], "--size must be between 8 and 4096"),
                        (["--coils", "0"], "--coils must be a positive integer"),
                        (["--size", "64"], "lower --acs")):
        code, _, err = _run(["demo", "--out", str(tmp_path / "o"), "--quiet"] + argv, capsys)
        assert code == 2 and match in _one_error_line(err), (argv, err)


def test_size_is_ignored_for_fastmri_with_a_warning(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    from fastsd.reference.mri import fft2c

    k = fft2c(__import__("torch").randn(1, 32, 32, dtype=__import__("torch").complex64))
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["kspace"] = np.stack([k.numpy()] * 2)
    code, _, err = _run(["reconstruct", str(tmp_path / "f.h5"), "--acs", "4", "--size", "64", "--out",
                         str(tmp_path / "o")] + FAST, capsys)
    assert code == 0 and "fastsd: warning:" in err and "--size is ignored" in err and err.count("\n") == 1


def test_train_denoiser_unwritable_out_is_reported_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fastsd.priors.train_denoiser", lambda *a, **k: pytest.fail("training started"))
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "d.pt").write_text("an earlier checkpoint")
    for out, match in ((tmp_path / "taken" / "d.pt", "is a file, not a folder"),
                       (tmp_path / "d.pt", "pass --overwrite")):
        code, _, err = _run(["train-denoiser", "--out", str(out), "--steps", "1"], capsys)
        assert code == 2 and match in _one_error_line(err)
    assert (tmp_path / "d.pt").read_text() == "an earlier checkpoint"


# -- image loading rules ---------------------------------------------------------------------------


def test_integer_and_out_of_range_float_images_match_the_uint8_image(tmp_path):
    from fastsd.data import ImageRangeWarning, load_image

    u8 = (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)
    ref = load_image(_save(tmp_path / "u8.npy", u8))
    assert float(ref.max()) <= 1
    assert_close("uint8", ref[0, 0], torch.from_numpy(u8 / 255.0))
    # by the dtype's range: 257 * v / 65535 = v / 255
    u16 = load_image(_save(tmp_path / "u16.npy", u8.astype(np.uint16) * 257))
    assert_close("uint16", u16[0, 0], ref[0, 0], factor=0.1)
    for name, arr in (("i64.npy", u8.astype(np.int64)), ("f255.npy", u8.astype(np.float32))):
        with pytest.warns(ImageRangeWarning, match="8-bit"):
            got = load_image(_save(tmp_path / name, arr))
        assert_close(name, got, ref, factor=0.1)
    with pytest.warns(ImageRangeWarning, match=r"rescaled to \[0, 1\]"):
        neg = load_image(_save(tmp_path / "neg.npy", -u8.astype(np.float32) / 255))
    assert float(neg.min()) == 0 and float(neg.max()) == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in-range data: no warning
        load_image(_save(tmp_path / "unit.npy", u8 / 255.0))


def _save(path, arr):
    np.save(path, arr)
    return path


def test_one_to_four_channel_images(tmp_path):
    from fastsd.data import load_image

    rng = np.random.default_rng(1)
    rgb = rng.random((16, 16, 3)).astype(np.float32)
    gray = rgb[..., 0]
    cases = {"c1.npy": (gray[..., None], 1), "c2.npy": (np.stack([gray, np.ones_like(gray)], -1), 1),
             "c3.npy": (rgb, 3), "c4.npy": (np.concatenate([rgb, np.ones_like(gray)[..., None]], -1), 3),
             "chw2.npy": (np.stack([gray, np.ones_like(gray)]), 1)}
    for name, (arr, channels) in cases.items():
        x = load_image(_save(tmp_path / name, arr))
        assert x.shape == (1, channels, 16, 16), name
        want = gray if channels == 1 else np.moveaxis(rgb, -1, 0)
        np.testing.assert_allclose(x[0].squeeze(0).numpy(), want, err_msg=name)  # alpha dropped


def test_png_and_uint8_npy_give_the_same_reconstruction(tmp_path, capsys):
    """The same picture as 8-bit PNG, uint8, int64 and float 0-255 arrays: the same metrics (before,
    int64 data was divided by int64's maximum and float 0-255 data was taken as it was)."""
    import matplotlib.pyplot as plt

    u8 = (np.random.default_rng(2).random((32, 32)) * 255).astype(np.uint8)
    plt.imsave(tmp_path / "a.png", u8, cmap="gray", vmin=0, vmax=255)
    psnrs = {}
    for name, arr in (("u8.npy", u8), ("i64.npy", u8.astype(np.int64)), ("f.npy", u8.astype(np.float64)), ("a.png", None)):
        if arr is not None:
            np.save(tmp_path / name, arr)
        out = tmp_path / name.replace(".", "_")
        code, _, err = _run(["reconstruct", str(tmp_path / name), "--gray", "--out", str(out)] + INPAINT, capsys)
        assert code == 0, err
        psnrs[name] = _strict_json(out / "metrics.json")["sdi"]["psnr"]
    assert psnrs["u8.npy"] == psnrs["i64.npy"] == psnrs["f.npy"], psnrs
    assert psnrs["a.png"] == pytest.approx(psnrs["u8.npy"], abs=0.01), psnrs  # grey from RGB: rounding only


# -- results are not lost and not silently replaced -----------------------------------------------


def test_existing_results_need_overwrite_and_are_replaced_entirely(tmp_path, capsys):
    src = _gray(tmp_path / "g.npy")
    out = tmp_path / "o"
    assert _run(["reconstruct", str(src), "--out", str(out)] + INPAINT, capsys)[0] == 0
    (out / "stale.png").write_bytes(b"from an earlier run")
    first = (out / "metrics.json").read_text()
    code, _, err = _run(["reconstruct", str(src), "--out", str(out), "--seed", "1"] + INPAINT, capsys)
    assert code == 2 and "pass --overwrite" in _one_error_line(err)
    assert (out / "metrics.json").read_text() == first and (out / "stale.png").exists()
    code, _, _ = _run(["reconstruct", str(src), "--out", str(out), "--seed", "1", "--overwrite"] + INPAINT, capsys)
    assert code == 0 and not (out / "stale.png").exists()
    assert _strict_json(out / "metrics.json")["config"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npy", "o"]  # no temporary folders left


def test_a_failed_solve_leaves_earlier_results_untouched(tmp_path, capsys, monkeypatch):
    src = _gray(tmp_path / "g.npy")
    out = tmp_path / "o"
    assert _run(["reconstruct", str(src), "--out", str(out)] + INPAINT, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*a, **k):
        raise RuntimeError("solver blew up")

    monkeypatch.setattr("fastsd.api.solve", broken)
    code, _, err = _run(["reconstruct", str(src), "--out", str(out), "--overwrite"] + INPAINT, capsys)
    assert code == 1 and "RuntimeError: solver blew up" in _one_error_line(err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npy", "o"]


def test_ctrl_c_in_a_single_run_prints_one_line_and_exits_130(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("fastsd.api.solve", interrupted)
    code, _, err = _run(["reconstruct", str(_gray(tmp_path / "g.npy")), "--out", str(tmp_path / "o")] + INPAINT, capsys)
    assert code == 130 and err == "fastsd: interrupted\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npy"]


# -- directory runs -----------------------------------------------------------------------------------


def _inputs(d, names=("a.npy", "b.npy", "c.npy", "d.npy")):
    d.mkdir()
    for i, name in enumerate(names):
        _gray(d / name, seed=i)
    return d


def test_directory_run_records_every_failure_and_goes_on(tmp_path, capsys, monkeypatch):
    d = _inputs(tmp_path / "in")
    np.save(d / "b.npy", np.zeros((0, 32), np.float32))  # zero-size
    (d / "e.png").write_bytes(b"not a png")
    real = solving.run_solver

    def flaky(method, y, op, kw, *rest):  # an unexpected exception on the third file (c.npy)
        if flaky.calls == 1:
            flaky.calls += 1
            raise RuntimeError("unexpected failure")
        flaky.calls += 1
        return real(method, y, op, kw, *rest)

    flaky.calls = 0
    monkeypatch.setattr(solving, "run_solver", flaky)
    out = tmp_path / "o"
    code, stdout, err = _run(["reconstruct", str(d), "--out", str(out)] + INPAINT, capsys)
    assert code == 2
    summary = _strict_json(out / "summary.json")
    status = {os.path.basename(r["input"]): (r["status"], r.get("error", "")) for r in summary["files"]}
    assert status["a.npy"][0] == "ok" and status["d.npy"][0] == "ok"
    assert status["b.npy"][0] == "error" and "at least 8x8" in status["b.npy"][1] and "b.npy" in status["b.npy"][1]
    assert status["c.npy"] == ("error", f"{d / 'c.npy'}: RuntimeError: unexpected failure")
    assert status["e.png"][0] == "error" and "could not be read" in status["e.png"][1]
    assert summary["n_files"] == 5 and summary["n_failed"] == 3 and summary["interrupted"] is False
    assert sorted(p.name for p in out.iterdir()) == ["a", "d", "summary.json"]  # no partial folders
    assert (out / "a" / "summary.png").is_file() and (out / "d" / "curve.png").is_file()
    assert "Traceback" not in err and err.count("fastsd: error:") == 3
    assert "3 files" not in stdout and "2/5 files reconstructed" in stdout


def test_ctrl_c_in_a_directory_run_writes_the_summary(tmp_path, capsys, monkeypatch):
    d = _inputs(tmp_path / "in")
    real = recon2d._reconstruct

    def interrupt_second(args, task, path, *rest, **kw):
        if path.name == "b.npy":
            raise KeyboardInterrupt
        return real(args, task, path, *rest, **kw)

    monkeypatch.setattr(recon2d, "_reconstruct", interrupt_second)
    out = tmp_path / "o"
    code, _, err = _run(["reconstruct", str(d), "--out", str(out)] + INPAINT, capsys)
    assert code == 130 and err.count("\n") == 1 and err.startswith("fastsd: interrupted: 1/4 files reconstructed")
    summary = _strict_json(out / "summary.json")
    assert summary["interrupted"] is True and summary["n_failed"] == 3
    assert [r["status"] for r in summary["files"]] == ["ok", "interrupted", "not run", "not run"]
    assert sorted(p.name for p in out.iterdir()) == ["a", "summary.json"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_sigint_subprocess_one_line_exit_130(tmp_path, sig, code, word):
    """A real Ctrl-C (SIGINT) or SIGTERM during a solve: one line on stderr, exit status 130 / 143, no traceback."""
    src = _gray(tmp_path / "g.npy")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    # a shell's background job (e.g. a CI runner) may have SIGINT ignored, which children inherit and
    # which stops Python from installing its handler: the child gets the default back
    # the progress lines without tqdm (installed or not: sigpy of the scanner extra pulls it in)
    no_tqdm = "import sys; sys.modules['tqdm'] = None; from fastsd.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", no_tqdm, "reconstruct", str(src), "--task", "inpaint",
                             "--T", "100", "--K", "40", "--small", "--device", "cpu", "--out", str(tmp_path / "o")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    line = proc.stderr.readline()  # the first progress line: the solve is running
    assert line.startswith("SDI "), line
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code
    assert [ln for ln in err.splitlines() if not ln.startswith("SDI ")] == [f"fastsd: {word}"], err
    assert not (tmp_path / "o").exists()


# -- outputs -------------------------------------------------------------------------------------


def test_metrics_json_is_strict_json(tmp_path, capsys, monkeypatch):
    """A perfect reconstruction has infinite PSNR: stored as null, not as the invalid Infinity."""
    src = _gray(tmp_path / "g.npy")
    real = solving.run_solver

    def exact(method, y, op, kw, truth, show, progress):
        result, trace = real(method, y, op, kw, truth, show, progress)
        result.x = op.pinv(y) * 0 + __import__("fastsd.data", fromlist=["load_image"]).load_image(src)
        result.info["nan_option"] = float("nan")
        return result, trace

    monkeypatch.setattr(solving, "run_solver", exact)
    assert _run(["reconstruct", str(src), "--out", str(tmp_path / "o")] + INPAINT, capsys)[0] == 0
    m = _strict_json(tmp_path / "o" / "metrics.json")
    assert m["sdi"]["psnr"] is None and m["config"]["nan_option"] is None and m["sdi"]["nmse"] == 0


def test_every_run_writes_summary_and_curve_pictures(tmp_path, capsys):
    import matplotlib.image as mpimg

    src = _gray(tmp_path / "g.npy")
    for task, extra in (("inpaint", []), ("mri", ["--acs", "4", "--coils", "2"])):
        out = tmp_path / task
        assert _run(["reconstruct", str(src), "--task", task, "--out", str(out)] + FAST + extra, capsys)[0] == 0
        summary, curve = mpimg.imread(out / "summary.png"), mpimg.imread(out / "curve.png")
        assert summary.shape[1] > 3 * summary.shape[0] and summary.std() > 0.01  # five panels side by side
        assert curve.shape[0] > 300 and curve.std() > 0.01
    out = tmp_path / "measured"  # no truth: baseline | reconstruction, loss only
    assert _run(["reconstruct", str(src), "--task", "denoise", "--measured", "--out", str(out)] + FAST, capsys)[0] == 0
    assert mpimg.imread(out / "summary.png").shape[1] < 3 * mpimg.imread(out / "summary.png").shape[0]
    assert (out / "curve.png").is_file()


def test_psnr_trace_of_the_curve_matches_the_final_metrics(tmp_path):
    """The PSNR drawn in curve.png is the metric of the same images: its last point equals metrics.json's."""
    import torch

    from fastsd.data import load_image
    from fastsd.ops.image import Inpainting, random_pixel_mask
    from fastsd.tasks import TASKS, display

    x = load_image(_gray(tmp_path / "g.npy"))
    op = Inpainting(random_pixel_mask((32, 32), 0.5, seed=0))
    task = TASKS["inpaint"]
    truth = display(x, task)
    kw = dict(preset="image", small=True, T=3, K=2, seed=0, device=torch.device("cpu"))
    result, trace = solving.run_solver("sdi", op(x), op, kw, truth, lambda v: display(v, task), False)
    assert trace.iters == [2, 4, 6]
    from fastsd.metrics import psnr

    assert trace.psnr[-1] == pytest.approx(psnr(display(result.x, task), truth))


# -- simulated measurement noise ----------------------------------------------------------------------


@pytest.mark.parametrize("coils", [1, 3])
def test_simulated_mri_noise_has_the_requested_std(coils):
    """--noise s adds complex noise with E|n|² = s² (s/√2 per real component) on the sampled entries only."""
    import argparse

    import torch

    sigma, size = 0.05, 96
    args = argparse.Namespace(size=size, coils=coils, noise=sigma, seed=3, mask="equispaced", acceleration=4.0, acs=8,
                              slice=None)
    y, op, x = recon2d._setup_mri(args, None, torch.device("cpu"))
    n = y - op(x)
    sampled = op.mask.expand_as(n).bool()
    assert torch.count_nonzero(n[~sampled]) == 0
    vals = n[sampled]
    m = vals.numel()  # >= 2300: the std estimate is within ~3% (4 standard errors)
    assert m > 2000
    assert float(vals.abs().pow(2).mean().sqrt()) == pytest.approx(sigma, rel=0.06)
    assert float(vals.real.std()) == pytest.approx(sigma / 2**0.5, rel=0.08)
    assert float(vals.imag.std()) == pytest.approx(sigma / 2**0.5, rel=0.08)


def test_simulated_image_noise_has_the_requested_std(tmp_path):
    import argparse

    import torch

    src = _gray(tmp_path / "g.npy", size=64)
    args = argparse.Namespace(size=None, gray=False, task="denoise", noise=0.1, measured=False, seed=0, box=0, keep=0.5)
    y, op, x = recon2d._setup_image(args, src, torch.device("cpu"))
    assert float((y - x).std()) == pytest.approx(0.1, rel=0.08)
