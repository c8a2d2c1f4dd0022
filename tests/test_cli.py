"""The command line end to end on tiny inputs (in-process through ``main``), incl. bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastsd.cli import main

FAST = ["--T", "2", "--K", "3", "--quiet", "--small"]


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_demo_shortened(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--size", "48", "--acs", "6", "--out", str(out)] + FAST) == 0
    m = _metrics(out)
    assert set(m["zero_filled"]) == {"psnr", "ssim", "nmse"} and set(m["sdi"]) == {"psnr", "ssim", "nmse"}
    assert m["config"]["T"] == 2 and m["config"]["K"] == 3 and m["iterations"] == 6 and m["runtime_s"] > 0
    for name in ("reconstruction.png", "zero_filled.png", "error_reconstruction.png", "truth.png", "reconstruction.npy"):
        assert (out / name).is_file(), name
    rec = np.load(out / "reconstruction.npy")
    assert rec.shape == (48, 48) and np.iscomplexobj(rec)


def test_reconstruct_mri_from_png_and_npy(tmp_path):
    import matplotlib.pyplot as plt

    from fastsd.data import mri_slice

    img = mri_slice(40)[0, 0].numpy()
    plt.imsave(tmp_path / "slice.png", img, cmap="gray")
    np.save(tmp_path / "slice.npy", img.astype(np.complex64) * np.exp(0.3j))
    for name, extra in (("slice.png", ["--coils", "4"]), ("slice.npy", ["--mask", "random", "--noise", "0.01"])):
        out = tmp_path / name.replace(".", "_")
        assert main(["reconstruct", str(tmp_path / name), "--task", "mri", "--acs", "6", "--out", str(out)] + extra + FAST) == 0
        m = _metrics(out)
        assert m["sdi"]["psnr"] > 0 and m["baseline"]["psnr"] > 0
        assert np.load(out / "reconstruction.npy").shape == (40, 40)


@pytest.mark.parametrize("task,extra", [
    ("inpaint", ["--keep", "0.6"]), ("deblur", ["--blur-sigma", "1.0"]), ("sr", ["--factor", "2"]),
    ("denoise", ["--noise", "0.05"]),
])
def test_reconstruct_image_tasks(tmp_path, task, extra):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "img.npy", rng.random((3, 32, 32)).astype(np.float32))
    out = tmp_path / task
    assert main(["reconstruct", str(tmp_path / "img.npy"), "--task", task, "--out", str(out)] + extra + FAST) == 0
    m = _metrics(out)
    assert m["config"]["preset"] == ("denoise" if task == "denoise" else "image")
    assert np.load(out / "reconstruction.npy").shape == (3, 32, 32)
    assert (out / "reconstruction.png").is_file() and (out / "baseline.png").is_file()


def test_reconstruct_measured_denoise_has_no_metrics(tmp_path):
    np.save(tmp_path / "noisy.npy", np.random.default_rng(1).random((32, 32)).astype(np.float32))
    out = tmp_path / "o"
    assert main(["reconstruct", str(tmp_path / "noisy.npy"), "--task", "denoise", "--measured", "--out", str(out)] + FAST) == 0
    m = _metrics(out)
    assert "sdi" not in m and np.load(out / "reconstruction.npy").shape == (32, 32)


def test_reconstruct_fastmri_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    from fastsd.data import mri_slice
    from fastsd.ops.coils import birdcage_maps
    from fastsd.reference.mri import fft2c

    x = mri_slice(36)
    img = torch.complex(x[0, 0], x[0, 1])
    k = fft2c(birdcage_maps(3, (36, 36)) * img)  # (3, 36, 36)
    with h5py.File(tmp_path / "file.h5", "w") as f:
        f["kspace"] = np.stack([k.numpy()] * 2)
        f["reconstruction_rss"] = np.stack([img.abs().numpy()] * 2)
    out = tmp_path / "h5"
    assert main(["reconstruct", str(tmp_path / "file.h5"), "--acs", "8", "--slice", "1", "--out", str(out)] + FAST) == 0
    assert _metrics(out)["baseline"]["psnr"] > 10


@pytest.mark.parametrize("make,args,match", [
    (None, ["reconstruct", "{d}/missing.npy"], "no such file"),
    ("bad.npy", ["reconstruct", "{d}/bad.npy"], "could not be read"),
    ("img.txt", ["reconstruct", "{d}/img.txt"], "unsupported file type"),
    ("bad.h5", ["reconstruct", "{d}/bad.h5"], "not a readable HDF5"),
    ("bad.png", ["reconstruct", "{d}/bad.png", "--task", "denoise"], "could not be read"),
    ("ok.npy", ["reconstruct", "{d}/ok.npy", "--task", "sr", "--factor", "3"], "factor must be one of"),
    ("ok.npy", ["reconstruct", "{d}/ok.npy", "--task", "inpaint", "--measured"], "--measured"),
    ("ok.npy", ["reconstruct", "{d}/ok.npy", "--task", "mri", "--acceleration", "0.5"], "acceleration"),
    ("ok.npy", ["reconstruct", "{d}/ok.npy", "--task", "tomo"], "invalid choice"),
    ("ok.npy", ["reconstruct", "{d}/ok.npy", "--T", "0"], "--T must be"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, make, args, match):
    if make == "ok.npy":
        np.save(tmp_path / make, np.ones((32, 32), np.float32))
    elif make is not None:
        (tmp_path / make).write_bytes(b"this is not a valid file")
    argv = [a.format(d=tmp_path) for a in args] + ["--quiet", "--out", str(tmp_path / "o")]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("fastsd: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert match in err


def test_console_script_subprocess(tmp_path):
    """The installed entry point: a bad file gives status 2 and one line on stderr."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from fastsd.cli import main; sys.exit(main())",
                           "reconstruct", str(tmp_path / "nope.png")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("no such file") and "Traceback" not in proc.stderr
