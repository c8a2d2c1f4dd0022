"""The classical baselines on the command line: ``--method`` and ``--compare`` (tiny sizes)."""
import json

import numpy as np
import pytest

from fastsd.cli import main

FAST = ["--T", "2", "--K", "3", "--quiet", "--small"]
BASELINES = ("zero-filled", "cg-sense", "l1-wavelet")


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def _slice(path, size=32):
    from fastsd.data import mri_slice

    np.save(path, mri_slice(size)[0, 0].numpy())
    return path


def _code(argv):
    try:
        return main(argv)
    except SystemExit as e:  # argparse
        return e.code


def test_method_lists_the_baselines(capsys):
    assert _code(["reconstruct", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in BASELINES) and "--compare" in help_text


@pytest.mark.parametrize("method", BASELINES)
def test_reconstruct_with_a_baseline_method(tmp_path, method):
    src = _slice(tmp_path / "s.npy")
    out = tmp_path / method
    assert main(["reconstruct", str(src), "--task", "mri", "--acs", "6", "--coils", "4", "--method", method,
                 "--quiet", "--out", str(out)]) == 0
    m = _metrics(out)
    assert m["method"] == method and np.isfinite(m[method]["psnr"])
    if method == "zero-filled":  # the task's baseline is A^H y too
        assert m[method]["psnr"] == pytest.approx(m["baseline"]["psnr"], abs=1e-6)
    else:  # 4 coils at 4x: both beat the zero-filled image
        assert m[method]["psnr"] > m["baseline"]["psnr"] + 1


def test_compare_puts_the_baselines_beside_sdi(tmp_path, capsys):
    src = _slice(tmp_path / "s.npy")
    common = ["reconstruct", str(src), "--task", "mri", "--acs", "6", "--coils", "4"]
    out = tmp_path / "cmp"
    assert main(common + ["--compare", "cg-sense,l1-wavelet", "--out", str(out)] + FAST) == 0
    printed = capsys.readouterr().out
    m = _metrics(out)
    assert m["method"] == "sdi" and m["compare"] == ["cg-sense", "l1-wavelet"]
    for name in ("sdi", "cg-sense", "l1-wavelet"):
        assert set(m[name]) >= {"psnr", "ssim", "nmse"} and np.isfinite(m[name]["psnr"])
    assert "CG-SENSE" in printed and "L1-wavelet" in printed
    # the same numbers as running the baseline as the method on the same measurements
    alone = tmp_path / "alone"
    assert main(common + ["--method", "cg-sense", "--quiet", "--out", str(alone)]) == 0
    assert m["cg-sense"]["psnr"] == pytest.approx(_metrics(alone)["cg-sense"]["psnr"], abs=1e-9)


def test_compare_on_an_image_task(tmp_path):
    np.save(tmp_path / "g.npy", np.random.default_rng(0).random((32, 32)).astype(np.float32))
    out = tmp_path / "inp"
    assert main(["reconstruct", str(tmp_path / "g.npy"), "--task", "inpaint", "--method", "dip", "--iterations", "3",
                 "--compare", "l1-wavelet", "--quiet", "--out", str(out)]) == 0
    m = _metrics(out)
    assert np.isfinite(m["dip"]["psnr"]) and np.isfinite(m["l1-wavelet"]["psnr"])


@pytest.mark.parametrize("argv,match", [
    (["--compare", "tv"], "unknown baseline 'tv'"),
    (["--compare", "cg-sense,cg-sense"], "names a baseline twice"),
    (["--method", "cg-sense", "--compare", "cg-sense"], "already the --method"),
    (["--method", "cg-sense", "--lr", "0.1"], "--lr does not apply"),
    (["--method", "zero-filled", "--iterations", "3"], "--iterations does not apply"),
    (["--size", "33", "--compare", "l1-wavelet"], "--compare l1-wavelet: l1-wavelet needs even spatial sizes"),
])
def test_baseline_option_errors_exit_2_before_any_output(tmp_path, capsys, argv, match):
    src = _slice(tmp_path / "s.npy")
    code = _code(["reconstruct", str(src), "--task", "mri", "--acs", "6", "--quiet", "--out", str(tmp_path / "o")]
                 + argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("fastsd: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert match in err
    assert not (tmp_path / "o").exists()
