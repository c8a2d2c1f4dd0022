"""Command line: ``fastsd demo``, ``fastsd reconstruct`` and ``fastsd train-denoiser``.

``fastsd demo`` reconstructs the real 256x256 head MRI slice bundled with matplotlib from
simulated 4x-undersampled k-space (equispaced lines + 20 ACS lines) with self-diffusion and a
CPU-sized network, and writes PNGs (truth, zero-filled, SDI, error maps) and ``metrics.json``.

``fastsd reconstruct INPUT --task mri|inpaint|deblur|sr|denoise [--method NAME]`` runs a solver
(default SDI; any of :func:`fastsd.solvers.available_solvers`) on an image (.npy / .png: treated
as ground truth, measurements simulated with the chosen operator) or on fastMRI k-space (.h5: the
file's k-space retrospectively undersampled). ``--measured`` (denoise) takes the input as the
noisy measurement itself. The prior-based methods (those taking a ``denoiser``) need
``--denoiser CKPT``, a checkpoint written by ``fastsd train-denoiser`` (a small denoiser trained
offline on scikit-image's bundled images, :func:`fastsd.priors.train_denoiser`); it works on
images in [-1, 1], so image problems are solved for ``x' = 2x - 1`` from ``y' = 2y - A 1`` and
mapped back. ``INPUT`` may be a directory: every .npy/.png/.h5 file in it is reconstructed into ``OUT/<stem>/`` and ``OUT/summary.json`` lists them all; under
``torchrun --nproc_per_node=N -m fastsd.cli reconstruct DIR ...`` the files are sharded over
the N ranks (:mod:`fastsd.distributed`). Bad files or options exit with status 2 and a
one-line message (in a directory run, a bad file is recorded and the others go on).
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2 (argparse's own convention)
        self.exit(2, f"fastsd: error: {message}\n")


class _UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


# -- progress ---------------------------------------------------------------------------------


class _Progress:
    """tqdm bar over the solver's iterations when available, else about 20 lines in all."""

    def __init__(self, total: int | None, enabled: bool, name: str = "SDI"):
        self.total, self.enabled, self.bar, self.name = total, enabled, None, name
        self.last = self.printed = 0
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=name, unit="it", file=sys.stderr)
            except ImportError:
                pass

    def __call__(self, it: int, state: dict):
        if not self.enabled:
            return None
        info = {"sigma": f"{state['sigma']:.3f}"} if "sigma" in state else {}
        info["loss"] = f"{state['loss']:.4g}"
        if "psnr" in state:
            info["psnr"] = f"{state['psnr']:.2f}"
        if self.bar is not None:
            self.bar.update(it - self.last)
            self.bar.set_postfix(info)
        elif it == self.total or it - self.printed >= max((self.total or 0) // 20, 1):
            print(f"{self.name} {it}/{self.total} " + " ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr, flush=True)
            self.printed = it
        self.last = it
        return None

    def close(self):
        if self.bar is not None:
            self.bar.close()


# -- helpers ----------------------------------------------------------------------------------


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise _UsageError(f"unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise _UsageError("--device cuda requested but no CUDA device is available")
    return dev


def _save_png(path: Path, img: np.ndarray, vmax: float | None = None, cmap: str = "gray") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:  # (C, H, W) colour image
        img = np.clip(np.moveaxis(img, 0, -1) / (vmax or 1.0), 0, 1)
        plt.imsave(path, img)
    else:
        plt.imsave(path, img, cmap=cmap, vmin=0.0, vmax=vmax if vmax is not None else float(img.max() or 1.0))


def _quality(x: np.ndarray, ref: np.ndarray) -> dict:
    from fastsd.metrics import nmse, psnr, ssim

    x2, r2 = (x, ref) if x.ndim == 3 else (x[None], ref[None])
    return {"psnr": psnr(x, ref), "ssim": ssim(x2, r2) if min(x.shape[-2:]) >= 7 else None, "nmse": nmse(x, ref)}


def _display(x: torch.Tensor, task: str) -> np.ndarray:
    """One problem's image for metrics/PNGs: magnitude for MRI, (C,H,W) or (H,W) otherwise."""
    from fastsd.metrics import magnitude

    x = x.detach().cpu()
    if task == "mri":
        return magnitude(x)[0].numpy()
    x = x[0].numpy()
    return x[0] if x.shape[0] == 1 else x


def _solver_kwargs(args, preset: str, device: torch.device) -> dict:
    small = args.small if args.small is not None else device.type == "cpu"
    kw = dict(preset=preset, small=small, seed=args.seed, device=device,
              resample_noise=args.resample_noise)
    for name in ("T", "K", "lr"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return kw


_LABELS = {"sdi": "SDI", "dip": "DIP", "aseqdip": "aSeqDIP", "ddgm": "DDGM", "dps": "DPS",
           "projdiff": "ProjDiff", "dmplug": "DMPlug", "unfolding": "Diff-Unfolding"}


def _label(method: str) -> str:
    return _LABELS.get(method, method)


def _solver_options(method: str) -> dict:
    """Constructor keywords (name -> inspect.Parameter) of a registered solver, base classes included."""
    from fastsd.solvers import get_solver

    params = {}
    for klass in reversed(get_solver(method).__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, prm in inspect.signature(init).parameters.items():
            if name != "self" and prm.kind not in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD):
                params[name] = prm
    return params


def _count_option(params: dict) -> str | None:
    """The solver's own name for ``--iterations``: 'iterations' or 'steps'."""
    return next((n for n in ("iterations", "steps") if n in params), None)


def _check_method_options(args) -> None:
    """Reject options that do not apply to ``--method``, and a missing ``--denoiser``, before any work."""
    method, params = args.method, _solver_options(args.method)
    if method == "sdi":
        if args.iterations is not None:
            raise _UsageError("--iterations does not apply to --method sdi (it runs T x K steps: use --T and --K)")
    else:
        given = {"--T": args.T is not None, "--K": args.K is not None, "--small/--full": args.small is not None,
                 "--resample-noise": args.resample_noise}
        for flag, used in given.items():
            if used:
                raise _UsageError(f"{flag} applies to --method sdi only, not to --method {method}")
        if args.iterations is not None and _count_option(params) is None:
            raise _UsageError(f"--iterations does not apply to --method {method}")
    if args.lr is not None and "lr" not in params:
        raise _UsageError(f"--lr does not apply to --method {method} (it has no learning rate)")
    if "denoiser" in params and args.denoiser is None:
        raise _UsageError(f"--method {method} needs a denoiser prior: train one with "
                          f"'fastsd train-denoiser --out denoiser.pt' and pass --denoiser denoiser.pt")
    if "denoiser" not in params and args.denoiser is not None:
        raise _UsageError(f"--method {method} uses no denoiser; drop --denoiser")


def _method_kwargs(args, dev: torch.device, denoiser) -> dict:
    """Options of a non-SDI solver from the command line (problem-dependent ones are added later)."""
    params = _solver_options(args.method)
    kw = dict(seed=args.seed, device=dev)
    if args.iterations is not None:
        kw[_count_option(params)] = args.iterations
    if args.lr is not None:
        kw["lr"] = args.lr
    if "denoiser" in params:
        kw["denoiser"] = denoiser
    return kw


def _progress_total(method: str, op, kw: dict) -> int | None:
    if method == "sdi":
        from fastsd.solvers.sdi import SelfDiffusion

        cfg = SelfDiffusion(**kw).config(op)
        return int(cfg["T"]) * int(cfg["K"])
    params = _solver_options(method)
    name = _count_option(params)
    return None if name is None else int(kw.get(name, params[name].default))


def _run_solver(method: str, y, op, kw: dict, x_true, progress: bool):
    """``fastsd.solve(y, op, method, **kw)`` with a progress bar (and ``x_true`` where the solver takes it)."""
    from fastsd.api import solve
    from fastsd.solvers import get_solver

    call = {}
    if x_true is not None and "x_true" in inspect.signature(get_solver(method).solve).parameters:
        call["x_true"] = x_true
    bar = _Progress(_progress_total(method, op, kw), progress, _label(method))
    if progress:  # SDI reports after each noise level with the step count; the others count from 0
        call["callback"] = bar if method == "sdi" else (lambda it, state: bar(it + 1, state))
    try:
        return solve(y, op, method, **call, **kw)
    finally:
        bar.close()


def _check_denoiser_channels(method: str, denoiser, y, op, task: str) -> None:
    """The denoiser must see images with its own channel count (network layout: complex = 2 channels)."""
    from fastsd.solvers.diffusion import to_net

    with torch.no_grad():
        c = to_net(op.adjoint(y)).shape[1]
    have = denoiser.channels
    if have == c:
        return
    if task == "mri":
        raise _UsageError(f"--method {method} cannot serve --task mri with this denoiser: MRI images are complex "
                          f"(2 channels, real and imaginary) but the denoiser has {have}; fastsd train-denoiser "
                          f"trains natural-image priors (1 or 3 channels) for the image tasks")
    hint = "pass --gray, or train a 3-channel denoiser (fastsd train-denoiser --channels 3)" if c == 3 and have == 1 \
        else f"train a {c}-channel denoiser (fastsd train-denoiser --channels {c})"
    raise _UsageError(f"--method {method}: the denoiser has {have} channel(s) but the image has {c}: {hint}")


def _write_outputs(out: Path, task: str, truth, baseline, recon, result, extra: dict, method: str = "sdi") -> dict:
    """PNGs, recon.npy and metrics.json in ``out``; returns the metrics dict. The reconstruction's
    quality is stored under the method's name (e.g. ``"sdi"``, ``"dip"``) next to ``"baseline"``."""
    out.mkdir(parents=True, exist_ok=True)
    rec, base = _display(recon, task), _display(baseline, task)
    ref = None if truth is None else _display(truth, task)
    vmax = float(ref.max()) if ref is not None else float(max(rec.max(), 1e-12))
    _save_png(out / "reconstruction.png", rec, vmax)
    _save_png(out / "baseline.png", base, vmax)
    arr = recon.detach().cpu()[0]
    if task == "mri":
        arr = torch.complex(arr[0], arr[1])
    elif arr.shape[0] == 1:
        arr = arr[0]
    np.save(out / "reconstruction.npy", arr.numpy())
    info = result.info
    iters = info.get("iterations", info.get("steps", len(result.history.get("loss", []))))
    it_per_s = info.get("it_per_s", iters / max(info["runtime_s"], 1e-9))
    metrics = {"task": task, "method": method, **extra, "runtime_s": info["runtime_s"],
               "iterations": iters, "it_per_s": it_per_s,
               "config": {k: v for k, v in result.info.items() if isinstance(v, (int, float, str, bool, type(None)))}}
    if ref is not None:
        _save_png(out / "truth.png", ref, vmax)
        err_max = 0.2 * vmax
        err = np.abs(rec - ref) if rec.ndim == 2 else np.abs(rec - ref).mean(0)
        _save_png(out / "error_reconstruction.png", err, err_max, cmap="inferno")
        err_b = np.abs(base - ref) if base.ndim == 2 else np.abs(base - ref).mean(0)
        _save_png(out / "error_baseline.png", err_b, err_max, cmap="inferno")
        metrics["baseline"] = _quality(base, ref)
        metrics[method] = _quality(rec, ref)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _summary(metrics: dict, baseline_name: str) -> str:
    method = metrics["method"]
    lines = [f"{_label(method)}: runtime {metrics['runtime_s']:.1f} s ({metrics['iterations']} iterations, "
             f"{metrics['it_per_s']:.1f} it/s)"]
    for key, name in (("baseline", baseline_name), (method, _label(method))):
        if key in metrics:
            m = metrics[key]
            ssim = "n/a" if m["ssim"] is None else f"{m['ssim']:.4f}"
            lines.append(f"{name:>12}: PSNR {m['psnr']:.2f} dB  SSIM {ssim}  NMSE {m['nmse']:.4g}")
    return "\n".join(lines)


# -- operators --------------------------------------------------------------------------------


def _mri_mask(args, shape):
    from fastsd.ops.masks import equispaced_mask, random_mask

    acs = min(args.acs, shape[1])
    if args.mask == "equispaced":
        return equispaced_mask(shape, args.acceleration, acs_lines=acs, seed=args.seed)
    return random_mask(shape, args.acceleration, center_fraction=acs / shape[1], seed=args.seed)


def _acs_maps(kspace: torch.Tensor, acs: int) -> torch.Tensor:
    """Coil maps from the fully sampled centre: low-resolution coil images over their RSS."""
    from fastsd.reference.mri import ifft2c  # centred orthonormal inverse FFT

    C, H, W = kspace.shape
    low = torch.zeros_like(kspace)
    c0 = (W - acs + 1) // 2
    win = torch.hann_window(acs + 2, periodic=False, dtype=torch.float32)[1:-1]
    low[..., c0 : c0 + acs] = kspace[..., c0 : c0 + acs] * win
    img = ifft2c(low)
    rss = img.abs().pow(2).sum(0, keepdim=True).sqrt()
    return img / rss.clamp_min(1e-6 * float(rss.max()))


def _complex_noise(y: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    n = torch.randn(y.shape + (2,), generator=g) * (sigma / math.sqrt(2))
    return y + torch.view_as_complex(n).to(y.device)


def _setup_mri(args, path: Path | None, dev):
    """(y, op, truth or None) for the MRI task."""
    from fastsd.data import load_array, load_fastmri, mri_slice, resize
    from fastsd.ops.coils import birdcage_maps
    from fastsd.ops.mri import MRI

    if path is not None and path.suffix.lower() in (".h5", ".hdf5"):
        d = load_fastmri(path, args.slice)
        k = d["kspace"]
        C, H, W = k.shape
        mask = _mri_mask(args, (H, W))
        smaps = None if C == 1 else _acs_maps(k, min(args.acs, W))
        op = MRI(mask, smaps)
        from fastsd.reference.mri import ifft2c

        coil_imgs = ifft2c(k)
        truth_c = coil_imgs[0] if smaps is None else (smaps.conj() * coil_imgs).sum(0)
        truth = torch.stack([truth_c.real, truth_c.imag])[None]
        y = mask * k[None]
        return y.to(dev), op.to(dev), truth.to(dev)
    if path is None:
        x = mri_slice(args.size)
    else:
        a = load_array(path)
        if np.iscomplexobj(a):
            if a.ndim != 2:
                raise _UsageError(f"{path}: a complex .npy must be one (H, W) image, got shape {a.shape}")
            t = torch.from_numpy(a.astype(np.complex64))
            x = torch.stack([t.real, t.imag])[None]
        else:
            from fastsd.data import _array_to_image

            img = _array_to_image(a, str(path), gray=True)
            x = torch.cat([img, torch.zeros_like(img)], dim=1)
        if args.size is not None:
            x = resize(x, args.size)
        scale = float(x.norm(dim=1).max())
        x = x / (scale if scale > 0 else 1.0)
    H, W = x.shape[-2:]
    smaps = birdcage_maps(args.coils, (H, W)) if args.coils > 1 else None
    op = MRI(_mri_mask(args, (H, W)), smaps)
    y = op(x)
    if args.noise > 0:
        y = op.mask * _complex_noise(y, args.noise, args.seed)
    return y.to(dev), op.to(dev), x.to(dev)


def _image_noise(args) -> float:
    """Measurement noise std of an image task (default: 25/255 for denoise, else 0)."""
    return args.noise if args.noise is not None else (25 / 255 if args.task == "denoise" else 0.0)


def _setup_image(args, path: Path, dev):
    """(y, op, truth or None) for inpaint / deblur / sr / denoise."""
    from fastsd.data import load_image
    from fastsd.ops.image import Blur, Denoise, Downsample, Inpainting, box_mask, gaussian_kernel, motion_kernel, random_pixel_mask

    x = load_image(path, size=args.size, gray=args.gray)
    H, W = x.shape[-2:]
    task = args.task
    if task == "inpaint":
        mask = box_mask((H, W), args.box) if args.box else random_pixel_mask((H, W), args.keep, seed=args.seed)
        op = Inpainting(mask)
    elif task == "deblur":
        k = gaussian_kernel(args.blur_sigma) if args.kernel == "gaussian" else motion_kernel(args.motion_length, args.motion_angle)
        op = Blur(k, (H, W))
    elif task == "sr":
        op = Downsample(args.factor, img_size=(H, W))
    else:
        op = Denoise()
    noise = _image_noise(args)
    if task == "denoise" and args.measured:
        return x.to(dev), op.to(dev), None
    y = op(x)
    if noise > 0:
        y = y + noise * torch.randn(y.shape, generator=torch.Generator().manual_seed(args.seed + 1000))
    return y.to(dev), op.to(dev), x.to(dev)


# -- commands ---------------------------------------------------------------------------------


def _cmd_demo(args) -> int:
    dev = _device(args.device)
    args.mask = "equispaced"
    args.noise = 0.0
    y, op, truth = _setup_mri(args, None, dev)
    kw = _solver_kwargs(args, "mri", dev)
    t0 = time.perf_counter()
    result = _run_solver("sdi", y, op, kw, truth, not args.quiet)
    extra = {"data": "matplotlib s1045.ima.gz head MRI slice", "image_size": list(truth.shape[-2:]),
             "acceleration": args.acceleration, "acs_lines": args.acs, "coils": args.coils,
             "wall_time_s": time.perf_counter() - t0}
    metrics = _write_outputs(Path(args.out), "mri", truth, op.zero_filled(y), result.x, result, extra)
    # the README and the issue speak of zero-filled: keep that name in the JSON as well
    metrics["zero_filled"] = metrics.pop("baseline")
    (Path(args.out) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    for a, b in (("baseline.png", "zero_filled.png"), ("error_baseline.png", "error_zero_filled.png")):
        (Path(args.out) / a).replace(Path(args.out) / b)
    metrics["baseline"] = metrics["zero_filled"]
    print(_summary(metrics, "zero-filled"))
    print(f"outputs in {Path(args.out).resolve()}")
    return 0


_INPUT_SUFFIXES = (".npy", ".png", ".h5", ".hdf5")


def _input_files(src: Path) -> list[Path]:
    """The one input file, or every .npy/.png/.h5 file of a directory in sorted order."""
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in _INPUT_SUFFIXES)
        if not files:
            raise _UsageError(f"{src}: no .npy, .png or .h5 files in this directory")
        return files
    from fastsd.data import _check_file

    return [_check_file(src, _INPUT_SUFFIXES)]


def _output_dirs(files: list[Path], out: Path, from_dir: bool) -> list[Path]:
    """``out`` for a single input; ``out/<stem>`` per file of a directory (``out/<name_ext>``
    when two files share a stem)."""
    if not from_dir:
        return [out]
    stems = [p.stem for p in files]
    unique = len(set(stems)) == len(stems)
    return [out / (p.stem if unique else p.name.replace(".", "_")) for p in files]


def _reconstruct_file(args, path: Path, out: Path, dev: torch.device, progress: bool, denoiser=None) -> dict:
    """Reconstruct one input into ``out`` with ``args.method``; returns its metrics."""
    if path.suffix.lower() in (".h5", ".hdf5") and args.task != "mri":
        raise _UsageError(f"{path}: fastMRI .h5 input needs --task mri")
    if args.task == "mri":
        if args.noise is None:
            args.noise = 0.0
        y, op, truth = _setup_mri(args, path, dev)
        preset, baseline = "mri", op.zero_filled(y)
    else:
        y, op, truth = _setup_image(args, path, dev)
        preset = "denoise" if args.task == "denoise" else "image"
        baseline = op.pinv(y)
    method = args.method
    if method == "sdi":
        result = _run_solver(method, y, op, _solver_kwargs(args, preset, dev), truth, progress)
    else:
        result = _run_method(args, y, op, truth, dev, progress, denoiser)
    extra = {"input": str(path), "image_size": list(y.shape[-2:]) if args.task != "mri" else list(op.img_size)}
    if denoiser is not None:
        extra["denoiser"] = str(args.denoiser)
    return _write_outputs(out, args.task, truth, baseline, result.x, result, extra, method)


def _run_method(args, y, op, truth, dev: torch.device, progress: bool, denoiser):
    """A non-SDI solver. With a denoiser (trained on images in [-1, 1]) an image problem is solved
    for ``x' = 2x - 1`` from ``y' = 2y - A 1`` (noise std doubles) and mapped back; MRI images are
    used as they are (normalised to magnitude <= 1)."""
    kw = _method_kwargs(args, dev, denoiser)
    if denoiser is None:
        return _run_solver(args.method, y, op, kw, truth, progress)
    _check_denoiser_channels(args.method, denoiser, y, op, args.task)
    signed = args.task != "mri"
    noise = (2 * _image_noise(args)) if signed else args.noise / math.sqrt(2)  # per real component
    if noise > 0 and "noise_level" in _solver_options(args.method):
        kw["noise_level"] = noise
    if not signed:
        return _run_solver(args.method, y, op, kw, truth, progress)
    with torch.no_grad():
        y_signed = 2 * y - op(torch.ones_like(op.adjoint(y)))
    result = _run_solver(args.method, y_signed, op, kw, None if truth is None else 2 * truth - 1, progress)
    result.x = (result.x + 1) / 2
    return result


def _record(path: Path, out: Path, rank: int, metrics: dict | None, error: str | None) -> dict:
    """One line of the directory summary."""
    rec = {"input": str(path), "output": str(out), "rank": rank, "status": "ok" if error is None else "error"}
    if error is not None:
        rec["error"] = error
    else:
        rec.update(method=metrics["method"], runtime_s=metrics["runtime_s"], iterations=metrics["iterations"])
        for key in ("baseline", metrics["method"]):
            if key in metrics:
                rec[key] = metrics[key]
    return rec


def _cmd_reconstruct(args) -> int:
    """One file, or a directory of files sharded over the ranks of a torchrun launch
    (:mod:`fastsd.distributed`): rank r takes files[r::world], writes its outputs, and rank 0
    writes ``summary.json`` with every file's record once all ranks are done."""
    from fastsd import distributed as fdist

    if args.measured and args.task != "denoise":
        raise _UsageError("--measured is only supported for --task denoise")
    _check_method_options(args)
    src = Path(args.input)
    from_dir = src.is_dir()
    files = _input_files(src)
    outs = _output_dirs(files, Path(args.out), from_dir)
    dev = _device(args.device)
    denoiser = None
    if args.denoiser is not None:
        from fastsd.priors import load_denoiser

        denoiser = load_denoiser(args.denoiser)
    t0 = time.perf_counter()
    ctx = fdist.init(dev.type)
    try:
        tag = f"[rank {ctx.rank}/{ctx.world_size}] " if ctx.distributed else ""
        records = []
        for i in fdist.shard(range(len(files)), ctx.rank, ctx.world_size):
            path, out = files[i], outs[i]
            try:
                metrics = _reconstruct_file(args, path, out, dev, not args.quiet and ctx.is_main, denoiser)
            except (ValueError, _UsageError, ImportError, OSError) as e:
                if not from_dir:
                    raise
                msg = " ".join(str(e).split())
                print(f"{tag}fastsd: error: {msg}", file=sys.stderr)
                records.append(_record(path, out, ctx.rank, None, msg))
                continue
            records.append(_record(path, out, ctx.rank, metrics, None))
            if from_dir:
                print(f"{tag}{path.name}:")
            print(_summary(metrics, "zero-filled" if args.task == "mri" else "A^+ y"))
            print(f"{tag}outputs in {out.resolve()}")
        failed = any(r["status"] != "ok" for r in records)
        gathered = fdist.gather(records, ctx)  # waits for every rank
        if gathered is not None and from_dir:
            every = sorted((r for rs in gathered for r in rs), key=lambda r: r["input"])
            n_failed = sum(r["status"] != "ok" for r in every)
            summary = {"input_dir": str(src), "task": args.task, "method": args.method, "world_size": ctx.world_size,
                       "backend": ctx.backend, "n_files": len(every), "n_failed": n_failed,
                       "wall_time_s": time.perf_counter() - t0, "files": every}
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
            print(f"{len(every) - n_failed}/{len(every)} files reconstructed; summary in "
                  f"{(Path(args.out) / 'summary.json').resolve()}")
            failed = n_failed > 0
        return 2 if failed else 0
    finally:
        fdist.finalize(ctx)


def _add_solver_options(p: argparse.ArgumentParser, T=None, K=None, lr=None, methods: bool = False) -> None:
    g = p.add_argument_group("solver")
    if methods:
        from fastsd.solvers import available_solvers

        priors = ", ".join(m for m in available_solvers() if "denoiser" in _solver_options(m))
        g.add_argument("--method", choices=available_solvers(), default="sdi",
                       help=f"solver (default: sdi); {priors} need --denoiser")
        g.add_argument("--iterations", type=int, default=None,
                       help="non-SDI methods: the solver's iteration/step count (default: the solver's)")
        g.add_argument("--denoiser", default=None, metavar="CKPT",
                       help="denoiser checkpoint for the prior-based methods (write one with fastsd train-denoiser)")
    g.add_argument("--T", type=int, default=T, help="sdi: noise levels (default: the task preset's)")
    g.add_argument("--K", type=int, default=K, help="sdi: Adam steps per noise level (default: preset)")
    g.add_argument("--lr", type=float, default=lr,
                   help="learning rate of sdi, dip, aseqdip, dmplug (Adam) and projdiff (step towards the "
                        "denoised estimate); default: the solver's or preset's")
    net = g.add_mutually_exclusive_group()
    net.add_argument("--small", dest="small", action="store_true", default=None,
                     help="sdi: CPU-sized U-Net (width 8, 4 levels); the default on CPU")
    net.add_argument("--full", dest="small", action="store_false",
                     help="sdi: the paper's 88 M-parameter U-Net; the default on CUDA")
    g.add_argument("--resample-noise", action="store_true", help="sdi: fresh noise at every inner step (paper)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default="fastsd-out", help="output directory (default: ./fastsd-out)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_mri_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MRI")
    g.add_argument("--acceleration", type=float, default=4.0)
    g.add_argument("--acs", type=int, default=20, help="fully sampled centre lines (default 20)")
    g.add_argument("--coils", type=int, default=1, help="simulated birdcage coils (1 = single coil)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fastsd", description="Self-diffusion (SDI) and other seed solvers for imaging inverse problems.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("demo", help="reconstruct a real MRI slice from 4x-undersampled simulated k-space")
    d.add_argument("--size", type=int, default=256, help="image size (default 256, the slice's own)")
    _add_mri_options(d)
    _add_solver_options(d, T=20, K=40, lr=3e-3)

    r = sub.add_parser("reconstruct", help="reconstruct from an image (.npy/.png) or fastMRI k-space (.h5)")
    r.add_argument("input", help=".npy, .png or fastMRI .h5 file, or a directory of them (one output "
                   "folder per file plus summary.json; sharded over ranks under torchrun)")
    r.add_argument("--task", choices=("mri", "inpaint", "deblur", "sr", "denoise"), default="mri")
    r.add_argument("--size", type=int, default=None, help="resize the input image to size x size")
    r.add_argument("--gray", action="store_true", help="convert a colour image to grey")
    r.add_argument("--noise", type=float, default=None,
                   help="measurement noise std (default: 25/255 for denoise, else 0)")
    r.add_argument("--measured", action="store_true", help="denoise: the input already is the noisy image")
    _add_mri_options(r)
    r.add_argument("--mask", choices=("equispaced", "random"), default="equispaced", help="MRI sampling mask")
    r.add_argument("--slice", type=int, default=None, help="fastMRI slice (default: the middle one)")
    g = r.add_argument_group("image operators")
    g.add_argument("--keep", type=float, default=0.5, help="inpaint: fraction of observed pixels")
    g.add_argument("--box", type=int, default=0, help="inpaint: hide a centred box of this size instead")
    g.add_argument("--kernel", choices=("gaussian", "motion"), default="gaussian", help="deblur kernel")
    g.add_argument("--blur-sigma", type=float, default=2.0)
    g.add_argument("--motion-length", type=float, default=9.0)
    g.add_argument("--motion-angle", type=float, default=0.0)
    g.add_argument("--factor", type=int, default=4, help="sr: downsampling factor")
    _add_solver_options(r, methods=True)

    t = sub.add_parser("train-denoiser", help="train the small denoiser prior on the bundled images (offline)")
    t.add_argument("--out", default="denoiser.pt", help="checkpoint file to write (default: ./denoiser.pt)")
    t.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    t.add_argument("--width", type=int, default=32, help="conv channels (default 32)")
    t.add_argument("--depth", type=int, default=5, help="conv layers, >= 2 (default 5)")
    t.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 = gray, 3 = RGB (default 1)")
    t.add_argument("--patch", type=int, default=48, help="training patch size (default 48)")
    t.add_argument("--batch-size", type=int, default=16, help="patches per step (default 16)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return p


def _cmd_train_denoiser(args) -> int:
    """Train :class:`fastsd.priors.TinyDenoiser` on scikit-image's bundled images and save it."""
    from fastsd.priors import save_denoiser, train_denoiser

    dev = _device(args.device)
    out = Path(args.out)
    if out.is_dir():
        raise _UsageError(f"{out}: is a directory; --out names the checkpoint file to write")
    t0 = time.perf_counter()
    model, losses = train_denoiser(channels=args.channels, width=args.width, depth=args.depth, steps=args.steps,
                                   batch_size=args.batch_size, patch=args.patch, lr=args.lr, seed=args.seed,
                                   device=dev)
    elapsed = time.perf_counter() - t0
    tail = losses[-min(len(losses), 50):]
    info = dict(steps=args.steps, batch_size=args.batch_size, patch=args.patch, lr=args.lr, seed=args.seed,
                final_loss=losses[-1], final_loss_mean50=sum(tail) / len(tail), train_s=elapsed, device=str(dev))
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    save_denoiser(model, out, info)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"trained TinyDenoiser (channels {args.channels}, width {args.width}, depth {args.depth}, "
          f"{n_params} parameters) for {args.steps} steps in {elapsed:.1f} s on {dev}")
    print(f"final loss {losses[-1]:.4g} (mean of the last {len(tail)} steps {info['final_loss_mean50']:.4g})")
    print(f"saved {out.resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 bad input or options)."""
    from fastsd import cli3d  # 3-D MRI: fastsd demo --3d, fastsd reconstruct --task mri3d

    if cli3d.handles(sys.argv[1:] if argv is None else list(argv)):
        return cli3d.main(argv)
    args = _parser().parse_args(argv)
    for name in ("T", "K", "size", "iterations", "steps", "width", "patch", "batch_size"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            print(f"fastsd: error: --{name.replace('_', '-')} must be a positive integer, got {v}", file=sys.stderr)
            return 2
    commands = {"demo": _cmd_demo, "reconstruct": _cmd_reconstruct, "train-denoiser": _cmd_train_denoiser}
    try:
        return commands[args.command](args)
    except (ValueError, _UsageError, ImportError, OSError) as e:
        msg = " ".join(str(e).split())  # one line
        print(f"fastsd: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
