"""The command line end to end on tiny inputs (in-process through ``main``), incl. bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastsd.cli import main
from fastsd.testing import assert_close

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


def test_demo_precision_reaches_the_solver(tmp_path):
    out = tmp_path / "bf16"
    assert main(["demo", "--size", "48", "--acs", "6", "--precision", "bf16", "--out", str(out)] + FAST) == 0
    m = _metrics(out)
    assert m["config"]["precision"] == "bf16" and np.isfinite(m["sdi"]["psnr"])


def test_demo_preset_reaches_the_solver(tmp_path):
    out = tmp_path / "fast"
    assert main(["demo", "--size", "48", "--acs", "6", "--preset", "mri-fast", "--out", str(out), "--quiet",
                 "--small", "--K", "2"]) == 0
    m = _metrics(out)
    assert m["config"]["preset"] == "mri-fast" and m["config"]["T"] == 10 and m["iterations"] == 20
    assert (m["config"]["width"], m["config"]["depth"]) == (8, 4)  # the CPU network, recorded


def test_network_size_reaches_the_solver(tmp_path, capsys):
    out = tmp_path / "net"
    assert main(["demo", "--size", "48", "--acs", "6", "--width", "4", "--depth", "3", "--out", str(out)] + FAST) == 0
    m = _metrics(out)
    assert (m["config"]["width"], m["config"]["depth"]) == (4, 3) and np.isfinite(m["sdi"]["psnr"])
    # the smallest image follows the depth: 16x16 is below the 4-level minimum, enough for 3 levels
    src = _gray_npy(tmp_path / "g.npy")
    argv = ["reconstruct", str(src), "--task", "inpaint", "--out", str(tmp_path / "o")] + FAST
    assert _exit_code(argv + ["--depth", "4"]) == 2
    assert "CPU-sized (--small) 4-level U-Net's minimum of 32x32" in capsys.readouterr().err
    assert main(argv + ["--depth", "3", "--width", "2"]) == 0


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


# -- other solvers and the trained denoiser prior ------------------------------------------------

TRAIN = ["--steps", "3", "--width", "8", "--depth", "3", "--patch", "16", "--batch-size", "2", "--seed", "5",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def denoiser_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("prior") / "denoiser.pt"
    assert main(["train-denoiser", "--out", str(path)] + TRAIN) == 0
    return path


def _gray_npy(path, size=16, seed=0):
    np.save(path, np.random.default_rng(seed).random((size, size)).astype(np.float32))
    return path


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as e:  # argparse errors
        return e.code


def test_train_denoiser_checkpoint_matches_library_training(tmp_path, capsys):
    from fastsd.priors import TinyDenoiser, load_denoiser, train_denoiser

    out = tmp_path / "sub" / "d.pt"
    assert main(["train-denoiser", "--out", str(out)] + TRAIN) == 0
    printed = capsys.readouterr().out
    ref, losses = train_denoiser(channels=1, width=8, depth=3, steps=3, patch=16, batch_size=2, seed=5)
    assert f"final loss {losses[-1]:.4g}" in printed
    raw = torch.load(out, weights_only=True)  # plain content only
    assert raw["config"] == {"channels": 1, "width": 8, "depth": 3, "sigma_data": 0.5}
    assert raw["info"]["steps"] == 3 and raw["info"]["final_loss"] == pytest.approx(losses[-1])
    model = load_denoiser(out)
    assert isinstance(model, TinyDenoiser) and not model.training
    x = torch.randn(2, 1, 12, 10, generator=torch.Generator().manual_seed(1))
    fresh = TinyDenoiser(1, 8, 3)  # an untrained net differs: the comparison can fail
    with torch.no_grad():
        for sigma in (0.05, 1.0, torch.tensor([0.3, 7.0])):
            assert_close(f"denoiser at sigma {sigma}", model(x, sigma), ref(x, sigma))
        assert not torch.allclose(fresh(x, 1.0), ref(x, 1.0), atol=1e-3)


def test_save_load_denoiser_round_trip_and_errors(tmp_path):
    from fastsd.priors import TinyDenoiser, load_denoiser, save_denoiser

    torch.manual_seed(0)
    net = TinyDenoiser(3, 4, 2, sigma_data=0.3)
    save_denoiser(net, tmp_path / "rgb.pt", {"note": "x"})
    back = load_denoiser(tmp_path / "rgb.pt")
    assert back.channels == 3 and back.sigma_data == 0.3 and back.info == {"note": "x"}
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(back(x, 0.5), net(x, 0.5))
    with pytest.raises(ValueError, match="no such file"):
        load_denoiser(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable denoiser checkpoint"):
        load_denoiser(tmp_path / "junk.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a fastsd denoiser checkpoint"):
        load_denoiser(tmp_path / "foreign.pt")
    ck = torch.load(tmp_path / "rgb.pt", weights_only=True)
    ck["config"]["width"] = 5  # weights no longer fit
    torch.save(ck, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="damaged checkpoint"):
        load_denoiser(tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="TinyDenoiser"):
        save_denoiser(torch.nn.Linear(2, 2), tmp_path / "lin.pt")


def test_reconstruct_dip_inpainting_png_matches_library(tmp_path, capsys):
    import matplotlib.pyplot as plt

    import fastsd
    from fastsd.data import load_image
    from fastsd.ops.image import Inpainting, random_pixel_mask

    plt.imsave(tmp_path / "img.png", np.random.default_rng(2).random((16, 16)), cmap="gray")
    out = tmp_path / "dip"
    argv = ["reconstruct", str(tmp_path / "img.png"), "--task", "inpaint", "--gray", "--keep", "0.6",
            "--method", "dip", "--iterations", "3", "--lr", "0.02", "--seed", "3", "--quiet", "--out", str(out),
            "--device", "cpu"]
    assert main(argv) == 0
    assert "DIP: PSNR" in capsys.readouterr().out
    m = _metrics(out)
    assert m["method"] == "dip" and "sdi" not in m and set(m["dip"]) == {"psnr", "ssim", "nmse"}
    assert m["iterations"] == 3 and m["config"]["lr"] == 0.02 and m["config"]["seed"] == 3
    x = load_image(tmp_path / "img.png", gray=True)
    op = Inpainting(random_pixel_mask((16, 16), 0.6, seed=3))
    ref = fastsd.solve(op(x), op, "dip", iterations=3, lr=0.02, seed=3, device="cpu")
    assert_close("reconstruction", torch.from_numpy(np.load(out / "reconstruction.npy")), ref.x[0, 0])


def test_reconstruct_dps_with_trained_denoiser_matches_library(tmp_path, denoiser_ckpt):
    import fastsd
    from fastsd.data import load_image
    from fastsd.ops.image import Inpainting, random_pixel_mask
    from fastsd.priors import load_denoiser

    src = _gray_npy(tmp_path / "g.npy")
    out = tmp_path / "dps"
    assert main(["reconstruct", str(src), "--task", "inpaint", "--method", "dps", "--iterations", "4",
                 "--denoiser", str(denoiser_ckpt), "--quiet", "--out", str(out), "--device", "cpu"]) == 0
    m = _metrics(out)
    assert m["method"] == "dps" and m["config"]["steps"] == 4 and m["denoiser"] == str(denoiser_ckpt)
    # the CLI solves in the denoiser's range [-1, 1]: x' = 2x - 1 from y' = 2y - A 1
    x = load_image(src)
    op = Inpainting(random_pixel_mask((16, 16), 0.5, seed=0))
    y_signed = 2 * op(x) - op(torch.ones_like(x))
    ref = fastsd.solve(y_signed, op, "dps", denoiser=load_denoiser(denoiser_ckpt), steps=4, seed=0, device="cpu")
    assert_close("reconstruction", torch.from_numpy(np.load(out / "reconstruction.npy")), ((ref.x + 1) / 2)[0, 0])


def test_reconstruct_projdiff_denoise_gets_noise_level_and_dir_summary(tmp_path, denoiser_ckpt):
    d = tmp_path / "in"
    d.mkdir()
    _gray_npy(d / "a.npy", seed=1)
    _gray_npy(d / "b.npy", seed=2)
    out = tmp_path / "pd"
    assert main(["reconstruct", str(d), "--task", "denoise", "--noise", "0.1", "--method", "projdiff",
                 "--iterations", "3", "--denoiser", str(denoiser_ckpt), "--quiet", "--out", str(out), "--device", "cpu"]) == 0
    m = _metrics(out / "a")
    assert m["method"] == "projdiff" and m["config"]["noise_level"] == pytest.approx(0.2)  # std in [-1, 1]
    assert np.isfinite(np.load(out / "a" / "reconstruction.npy")).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "projdiff" and summary["n_failed"] == 0
    assert all(r["method"] == "projdiff" and "psnr" in r["projdiff"] for r in summary["files"])


@pytest.mark.parametrize("argv,match", [
    (["--method", "unknown"], "invalid choice"),
    (["--method", "dps"], "needs a denoiser prior: train one with 'fastsd train-denoiser"),
    (["--method", "ddgm", "--denoiser", "{d}/missing.pt"], "missing.pt: no such file"),
    (["--method", "dps", "--denoiser", "{d}/junk.pt"], "not a readable denoiser checkpoint"),
    (["--method", "dip", "--denoiser", "{d}/junk.pt"], "uses no denoiser"),
    (["--method", "dip", "--T", "3"], "--T applies to --method sdi only"),
    (["--method", "dip", "--full"], "--small/--full applies to --method sdi only"),
    (["--iterations", "5"], "--iterations does not apply to --method sdi"),
    (["--method", "dps", "--lr", "0.1", "--denoiser", "{d}/junk.pt"], "--lr does not apply to --method dps"),
    (["--method", "dip", "--iterations", "0"], "--iterations must be a positive integer"),
    (["--method", "dip", "--precision", "bf16"], "--precision applies to --method sdi only"),
    (["--precision", "fp16"], "invalid choice"),
    (["--method", "dip", "--preset", "mri-fast"], "--preset applies to --method sdi only"),
    (["--method", "dip", "--volume", "warm"], "--volume applies to --method sdi only"),
    (["--method", "dip", "--width", "16"], "--width applies to --method sdi only"),
    (["--method", "dip", "--depth", "3"], "--depth applies to --method sdi only"),
    (["--width", "0"], "--width must be a positive integer"),
    (["--depth", "0"], "--depth must be an integer from 1 to 10, got 0"),
    (["--depth", "11"], "--depth must be an integer from 1 to 10, got 11"),
    (["--volume", "stacked"], "invalid choice"),
])
def test_method_option_errors_exit_2(tmp_path, capsys, argv, match):
    _gray_npy(tmp_path / "g.npy")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    code = _exit_code(["reconstruct", str(tmp_path / "g.npy"), "--task", "inpaint", "--quiet", "--out",
                       str(tmp_path / "o")] + [a.format(d=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("fastsd: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert match in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("task,extra,match", [
    ("mri", ["--acs", "6", "--size", "32"], "cannot serve --task mri"),
    ("inpaint", ["--rgb"], "the denoiser has 1 channel(s) but the image has 3: pass --gray"),
])
def test_denoiser_that_cannot_serve_the_task_exits_2(tmp_path, capsys, denoiser_ckpt, task, extra, match):
    if extra == ["--rgb"]:
        np.save(tmp_path / "g.npy", np.random.default_rng(0).random((3, 16, 16)).astype(np.float32))
        extra = []
    else:
        _gray_npy(tmp_path / "g.npy")
    code = _exit_code(["reconstruct", str(tmp_path / "g.npy"), "--task", task, "--method", "dps", "--iterations", "2",
                       "--denoiser", str(denoiser_ckpt), "--quiet", "--out", str(tmp_path / "o")] + extra)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and match in err


def test_train_denoiser_bad_options_exit_2(tmp_path, capsys):
    for argv, match in ((["--steps", "0"], "--steps must be a positive integer"),
                        (["--depth", "1"], "depth >= 2"),
                        (["--channels", "2"], "invalid choice"),
                        (["--patch", "600", "--batch-size", "1"], "smaller than the patch size"),
                        (["--batch-size", "10000000"], "--batch-size 10000000 with --patch 48 and --width 32 needs about")):
        code = _exit_code(["train-denoiser", "--out", str(tmp_path / "d.pt")] + argv)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and match in err, (argv, err)
    assert not (tmp_path / "d.pt").exists()


@pytest.mark.gpu
def test_every_method_on_cuda(tmp_path):
    """Each registered solver through the CLI on a GPU (CUDA graphs for dip/aseqdip/dmplug/unfolding),
    with a denoiser trained on the GPU; each run must finish with a finite reconstruction."""
    from fastsd.cli.solving import solver_options
    from fastsd.solvers import available_solvers

    ckpt = tmp_path / "d.pt"
    assert main(["train-denoiser", "--out", str(ckpt), "--steps", "50", "--width", "16", "--depth", "4",
                 "--patch", "32", "--batch-size", "8", "--device", "cuda"]) == 0
    src = _gray_npy(tmp_path / "g.npy", size=32)
    for method in available_solvers():
        extra = ["--T", "2", "--K", "3", "--small"] if method == "sdi" else [] if method == "zero-filled" \
            else ["--iterations", "20"]
        if "denoiser" in solver_options(method):
            extra += ["--denoiser", str(ckpt)]
        out = tmp_path / method
        assert main(["reconstruct", str(src), "--task", "inpaint", "--method", method, "--device", "cuda",
                     "--quiet", "--out", str(out)] + extra) == 0, method
        m = _metrics(out)
        assert m["method"] == method and m["config"]["device"].startswith("cuda"), method
        assert np.isfinite(np.load(out / "reconstruction.npy")).all(), method


@pytest.mark.parametrize("coils", [1, 3])
def test_final_data_consistency_reproduces_the_measured_kspace(tmp_path, coils):
    """--dc: the reconstruction's k-space equals the measurement on every sampled entry (single coil:
    exact replacement; several coils: CG projection), and the solver's own output is reported too."""
    from fastsd.data import load_mri_image
    from fastsd.ops.coils import birdcage_maps
    from fastsd.ops.masks import equispaced_mask
    from fastsd.ops.mri import MRI

    src = _gray_npy(tmp_path / "g.npy", size=32)
    out = tmp_path / "dc"
    assert main(["reconstruct", str(src), "--task", "mri", "--acs", "6", "--coils", str(coils), "--dc",
                 "--out", str(out), "--device", "cpu"] + FAST) == 0
    m = _metrics(out)
    assert m["final_dc"] is True and set(m["sdi_before_dc"]) == {"psnr", "ssim", "nmse"}
    rec = torch.from_numpy(np.load(out / "reconstruction.npy"))
    op = MRI(equispaced_mask((32, 32), 4, acs_lines=6, seed=0), birdcage_maps(coils, (32, 32)) if coils > 1 else None)
    x = load_mri_image(src)
    y, y_rec = op(x), op(torch.stack([rec.real, rec.imag])[None])
    tol = 1e-6 if coils == 1 else 5e-3  # exact replacement, or 50 CG iterations (raw output: > 0.1)
    assert float((y_rec - y).norm() / y.norm()) < tol
    # without --dc (the default of reconstruct) the solver's output is the result
    assert main(["reconstruct", str(src), "--task", "mri", "--acs", "6", "--coils", str(coils), "--out",
                 str(tmp_path / "raw"), "--device", "cpu"] + FAST) == 0
    raw = _metrics(tmp_path / "raw")
    assert raw["final_dc"] is False and "sdi_before_dc" not in raw
    assert raw["sdi"]["psnr"] == pytest.approx(m["sdi_before_dc"]["psnr"], abs=1e-9)
