"""Command line: ``fastsd demo``, ``fastsd reconstruct`` and ``fastsd train-denoiser``.

``fastsd demo`` reconstructs the real 256x256 head MRI slice bundled with matplotlib from
simulated 4x-undersampled 8-coil k-space (equispaced lines + 20 ACS lines) with self-diffusion
and a CPU-sized network (the paper's U-Net on a GPU), and writes ``summary.png``, ``curve.png``,
PNGs of each image and ``metrics.json``.

``fastsd reconstruct INPUT --task mri|inpaint|deblur|sr|denoise [--method NAME]`` runs a solver
(default SDI; any of :func:`fastsd.solvers.available_solvers`) on an image (.npy / .png: treated
as ground truth, measurements simulated with the chosen operator) or on fastMRI k-space (.h5: the
file's k-space retrospectively undersampled). ``--measured`` (denoise) takes the input as the
noisy measurement itself. The prior-based methods (those taking a ``denoiser``) need
``--denoiser CKPT``, a checkpoint written by ``fastsd train-denoiser`` (a small denoiser trained
offline on scikit-image's bundled images, :func:`fastsd.priors.train_denoiser`); it works on
images in [-1, 1], so image problems are solved for ``x' = 2x - 1`` from ``y' = 2y - A 1`` and
mapped back. ``INPUT`` may be a directory: every .npy/.png/.h5 file in it is reconstructed into
``OUT/<stem>/`` and ``OUT/summary.json`` lists them all; under ``torchrun --nproc_per_node=N -m
fastsd.cli reconstruct DIR ...`` the files are sharded over the N ranks (:mod:`fastsd.distributed`).

Results are never lost and never silently replaced: options, output paths and inputs are checked
before any solve; a run writes into a hidden temporary folder beside ``--out`` and renames it into
place when complete (earlier results there are replaced only with ``--overwrite``, and then
entirely). A directory run never stops at a bad file: each failure is recorded in
``summary.json`` and the others go on; on Ctrl-C the summary is written too, marking the files
not finished. Every error is one line (``fastsd: error: ...``) naming the file or the option, exit
status 2; Ctrl-C prints one line and exits with 130.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["main"]

MAX_SIZE = 4096  # largest --size: a 4096^2 image already needs GBs per network activation


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2 (argparse's own convention)
        self.exit(2, f"fastsd: error: {message}\n")


class _UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


class _Interrupted(Exception):
    """Ctrl-C, after whatever could be saved was saved; the message is the one line printed."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the command line: one line, no source excerpt."""
    print(f"fastsd: warning: {_one_line(message)}", file=sys.stderr if file is None else file, flush=True)


# -- progress and traces ------------------------------------------------------------------------


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


class _Trace:
    """Solver callback: PSNR against the truth at about 100 iterations (in display space), the
    noise level where the solver reports one, and the progress bar."""

    def __init__(self, bar: _Progress, total: int | None, truth: np.ndarray | None, show: Callable):
        self.bar, self.truth, self.show = bar, truth, show
        self.every = max((total or 0) // 100, 1)
        self.iters: list[int] = []
        self.psnr: list[float] = []

    def __call__(self, it: int, state: dict):
        if self.truth is not None and state.get("x") is not None and (it % self.every == 0 or "sigma" in state):
            from fastsd.metrics import psnr

            state = dict(state, psnr=psnr(self.show(state["x"]), self.truth))
            self.iters.append(it)
            self.psnr.append(state["psnr"])
        self.bar(it, state)
        return None


# -- helpers ----------------------------------------------------------------------------------


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise _UsageError(f"--device: unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise _UsageError("--device cuda requested but no CUDA device is available")
    return dev


def _memory_bytes(dev: torch.device) -> int | None:
    """Total memory of the device (RAM for the CPU); None where it cannot be told."""
    try:
        if dev.type == "cuda":
            return int(torch.cuda.get_device_properties(dev).total_memory)
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def _json(obj) -> str:
    """Strict JSON (non-finite numbers, which JSON cannot hold, become null)."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=2, allow_nan=False)


def _quality(x: np.ndarray, ref: np.ndarray) -> dict:
    from fastsd.metrics import nmse, psnr, ssim

    x2, r2 = (x, ref) if x.ndim == 3 else (x[None], ref[None])
    return {"psnr": psnr(x, ref), "ssim": ssim(x2, r2) if min(x.shape[-2:]) >= 7 else None, "nmse": nmse(x, ref)}


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


# -- option checks (all before any work) ---------------------------------------------------------


def _check_options(args) -> None:
    """Ranges of the numeric options, each error naming its option."""
    positive_ints = ("T", "K", "iterations", "steps", "width", "patch", "batch_size", "coils", "factor")
    for name in positive_ints:
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise _UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    size = getattr(args, "size", None)
    if size is not None and not 8 <= size <= MAX_SIZE:
        raise _UsageError(f"--size must be between 8 and {MAX_SIZE}, got {size}")
    checks = (  # (option, attribute, test, requirement)
        ("--noise", "noise", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
        ("--acs", "acs", lambda v: v >= 0, "an integer >= 0"),
        ("--acceleration", "acceleration", lambda v: math.isfinite(v) and v >= 1, "a number >= 1"),
        ("--box", "box", lambda v: v >= 0, "an integer >= 0"),
        ("--keep", "keep", lambda v: 0 < v <= 1, "in (0, 1]"),
        ("--blur-sigma", "blur_sigma", lambda v: math.isfinite(v) and v > 0, "a positive number"),
        ("--motion-length", "motion_length", lambda v: math.isfinite(v) and v > 0, "a positive number"),
        ("--motion-angle", "motion_angle", math.isfinite, "a finite number"),
        ("--lr", "lr", lambda v: math.isfinite(v) and v > 0, "a positive number"),
        ("--slice", "slice", lambda v: v >= 0, "an integer >= 0"),
    )
    for flag, name, ok, need in checks:
        v = getattr(args, name, None)
        if v is not None and not ok(v):
            raise _UsageError(f"{flag} must be {need}, got {v}")


def _check_method_options(args) -> None:
    """Reject options that do not apply to ``--method``, and a missing ``--denoiser``, before any work."""
    method, params = args.method, _solver_options(args.method)
    if method == "sdi":
        if args.iterations is not None:
            raise _UsageError("--iterations does not apply to --method sdi (it runs T x K steps: use --T and --K)")
    else:
        given = {"--T": args.T is not None, "--K": args.K is not None, "--small/--full": args.small is not None,
                 "--resample-noise": args.resample_noise, "--precision": args.precision != "fp32"}
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


# -- output folders: checked first, written to a temporary folder, renamed into place ------------


def _is_result(path: Path) -> bool:
    return (path / "metrics.json").is_file() or (path / "summary.json").is_file()


def _check_target(path: Path, overwrite: bool, flag: str = "--out") -> None:
    """A result folder may be new, empty, or (with ``--overwrite``) an earlier fastsd result."""
    if path.exists() and not path.is_dir():
        raise _UsageError(f"{flag} {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not _is_result(path):
            raise _UsageError(f"{flag} {path}: folder is not empty and holds no fastsd results; choose a new "
                              f"or empty folder")
        if not overwrite:
            raise _UsageError(f"{flag} {path}: holds the results of an earlier run; pass --overwrite to replace them")


def _writable_parent(path: Path, flag: str) -> Path:
    """The (created) parent folder of ``path``, checked to be writable."""
    parent = path.parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise _UsageError(f"{flag} {path}: {existing} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _UsageError(f"{flag} {path}: cannot create {parent} ({e.strerror or e})") from None
    if not parent.is_dir():
        raise _UsageError(f"{flag} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _UsageError(f"{flag} {path}: folder {parent} is not writable")
    return parent


class _ResultDir:
    """A result folder written atomically: files go to ``.<name>.partial`` beside ``final``, which
    replaces ``final`` (and whatever an earlier run left there) only in :meth:`commit`.

    The temporary name is fixed so that the ranks of a torchrun launch share it without talking to
    each other: each rank makes it if missing and writes only its own files; ``keep`` in
    :meth:`commit` drops whatever else a killed earlier run may have left in it."""

    def __init__(self, final: Path, overwrite: bool, fresh: bool = True):
        final = Path(os.path.abspath(final))
        _check_target(final, overwrite)
        parent = _writable_parent(final, "--out")
        self.final, self.tmp = final, parent / f".{final.name}.partial"
        if fresh:
            shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            self.tmp.mkdir(exist_ok=True)
        except OSError as e:
            raise _UsageError(f"--out {final}: cannot write in {parent} ({e.strerror or e})") from None

    def commit(self, keep: set[str] | None = None) -> None:
        """Rename into place (keeping only the entries named in ``keep``, when given)."""
        if keep is not None:
            for entry in self.tmp.iterdir():
                if entry.name not in keep:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        old = None
        if self.final.exists():
            old = self.final.parent / f".{self.final.name}.replaced-{os.getpid()}"
            self.final.rename(old)
        self.tmp.rename(self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- pictures -----------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _range(ref: np.ndarray) -> tuple[float, float]:
    """The display range of an image and of every image compared with it: [min(0, lo), hi]."""
    lo, hi = min(0.0, float(ref.min())), float(ref.max())
    return lo, hi if hi > lo else lo + 1.0


def _rgb(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(C, H, W) colour -> (H, W, 3) in [0, 1]; (H, W) unchanged."""
    if img.ndim == 2:
        return img
    return np.clip((np.moveaxis(img, 0, -1) - lo) / (hi - lo), 0, 1)


def _save_png(path: Path, img: np.ndarray, lo: float, hi: float, cmap: str = "gray") -> None:
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:
        _pyplot().imsave(path, _rgb(img, lo, hi))
    else:
        _pyplot().imsave(path, img, cmap=cmap, vmin=lo, vmax=hi)


def _error_map(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
    err = np.abs(img - ref)
    return err if err.ndim == 2 else err.mean(0)


def _title(name: str, q: dict | None) -> str:
    if not q:
        return name
    ssim = "" if q.get("ssim") is None else f", SSIM {q['ssim']:.3f}"
    return f"{name}\nPSNR {q['psnr']:.2f} dB{ssim}"


def _summary_figure(path: Path, panels: list[tuple[str, np.ndarray, dict | None]], lo: float, hi: float,
                    errors: list[tuple[str, np.ndarray]], err_max: float) -> None:
    """truth | baseline | reconstruction | error maps: one colour scale for the images, one for the errors."""
    plt = _pyplot()
    n = len(panels) + len(errors)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.7), squeeze=False)
    for ax, (name, img, q) in zip(axes[0], panels):
        ax.imshow(_rgb(img, lo, hi), cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(_title(name, q), fontsize=10)
    for ax, (name, err) in zip(axes[0][len(panels):], errors):
        im = ax.imshow(err, cmap="inferno", vmin=0, vmax=err_max)
        ax.set_title(name, fontsize=10)
    for ax in axes[0]:
        ax.set_axis_off()
    if errors:
        fig.colorbar(im, ax=list(axes[0][len(panels):]), fraction=0.046, pad=0.02)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _curve_figure(path: Path, loss: list[float], trace: _Trace, sigma: list[float], baseline_psnr: float | None,
                  label: str, baseline_name: str, dc_psnr: float | None = None) -> None:
    """Loss (log scale) and PSNR against iteration; the noise level on a second axis where there is
    one; the PSNR after a final data-consistency step as one marked point."""
    plt = _pyplot()
    rows = 2 if trace.psnr else 1
    fig, axes = plt.subplots(rows, 1, figsize=(7, 2.8 * rows + 0.4), sharex=True, squeeze=False)
    ax = axes[0][0]
    if loss:
        its = np.arange(1, len(loss) + 1)
        pos = np.asarray(loss, dtype=np.float64)
        ax.plot(its, pos, lw=0.8, color="tab:blue")
        if (pos > 0).all():
            ax.set_yscale("log")
    ax.set_ylabel("loss", color="tab:blue")
    ax.set_title(f"{label}: loss, PSNR and noise level per iteration", fontsize=10)
    if sigma:
        per = max(len(loss), 1) / len(sigma)  # SDI: one level per K iterations
        ax2 = ax.twinx()
        ax2.step(np.arange(len(sigma) + 1) * per, [sigma[0]] + list(sigma), where="pre", color="tab:red", lw=1.0)
        ax2.set_ylabel("noise level σ", color="tab:red")
    if rows == 2:
        bx = axes[1][0]
        bx.plot(trace.iters, trace.psnr, marker=".", ms=3, color="tab:green", label=label)
        if baseline_psnr is not None and math.isfinite(baseline_psnr):
            bx.axhline(baseline_psnr, ls="--", color="gray", label=baseline_name)
        if dc_psnr is not None and math.isfinite(dc_psnr):
            bx.plot([trace.iters[-1]], [dc_psnr], marker="*", ms=12, ls="none", color="tab:purple",
                    label=f"{label} + final DC")
        bx.set_ylabel("PSNR (dB)")
        bx.legend(loc="lower right", fontsize=8)
    axes[-1][0].set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- tasks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    """What ``--task NAME`` means: ``setup(args, path, dev) -> (y, op, truth or None)``, the SDI
    preset, how the baseline is formed and named, and whether images are complex (shown as |x|)."""

    setup: Callable
    preset: str
    baseline: Callable
    baseline_name: str
    complex: bool = False


def _display(x: torch.Tensor, task: _Task) -> np.ndarray:
    """One problem's image for metrics/PNGs: magnitude for complex tasks, (C,H,W) or (H,W) otherwise."""
    from fastsd.metrics import magnitude

    x = x.detach().cpu()
    if task.complex:
        return magnitude(x[:1])[0].numpy()
    x = x[0].to(torch.float32).numpy()
    return x[0] if x.shape[0] == 1 else x


def _solver_kwargs(args, preset: str, device: torch.device) -> dict:
    small = args.small if args.small is not None else device.type == "cpu"
    kw = dict(preset=preset, small=small, seed=args.seed, device=device,
              resample_noise=args.resample_noise, precision=args.precision)
    for name in ("T", "K", "lr"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return kw


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


def _run_solver(method: str, y, op, kw: dict, truth: np.ndarray | None, show: Callable, progress: bool):
    """``fastsd.solve(y, op, method, **kw)`` with a progress bar and a PSNR trace against ``truth``
    (a display image; ``show`` maps the solver's x to one). Returns (result, trace)."""
    from fastsd.api import solve

    total = _progress_total(method, op, kw)
    bar = _Progress(total, progress, _label(method))
    trace = _Trace(bar, total, truth, show)
    # SDI reports after each noise level with the step count; the others count from 0
    callback = trace if method == "sdi" else (lambda it, state: trace(it + 1, state))
    try:
        return solve(y, op, method, callback=callback, **kw), trace
    finally:
        bar.close()


def _check_denoiser_channels(method: str, denoiser, y, op, task_name: str) -> None:
    """The denoiser must see images with its own channel count (network layout: complex = 2 channels)."""
    from fastsd.solvers.layout import to_net

    with torch.no_grad():
        c = to_net(op.adjoint(y)).shape[1]
    have = denoiser.channels
    if have == c:
        return
    if task_name == "mri":
        raise _UsageError(f"--method {method} cannot serve --task mri with this denoiser: MRI images are complex "
                          f"(2 channels, real and imaginary) but the denoiser has {have}; fastsd train-denoiser "
                          f"trains natural-image priors (1 or 3 channels) for the image tasks")
    hint = "pass --gray, or train a 3-channel denoiser (fastsd train-denoiser --channels 3)" if c == 3 and have == 1 \
        else f"train a {c}-channel denoiser (fastsd train-denoiser --channels {c})"
    raise _UsageError(f"--method {method}: the denoiser has {have} channel(s) but the image has {c}: {hint}")


# -- operators --------------------------------------------------------------------------------


def _mri_mask(args, shape):
    from fastsd.ops.masks import equispaced_mask, random_mask

    acs = min(args.acs, shape[1])
    try:
        if args.mask == "equispaced":
            return equispaced_mask(shape, args.acceleration, acs_lines=acs, seed=args.seed)
        return random_mask(shape, args.acceleration, center_fraction=acs / shape[1], seed=args.seed)
    except ValueError as e:
        raise _UsageError(f"--acs {args.acs} / --acceleration {args.acceleration} on {shape[1]} k-space columns: "
                          f"{_one_line(e)}; lower --acs") from None


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
    """``y`` plus complex Gaussian noise of standard deviation ``sigma`` (σ/√2 per real component)."""
    g = torch.Generator().manual_seed(seed + 1000)
    n = torch.randn(y.shape + (2,), generator=g) * (sigma / math.sqrt(2))
    return y + torch.view_as_complex(n).to(y.device)


def _setup_mri(args, path: Path | None, dev):
    """(y, op, truth) for the MRI task: the bundled slice (``path`` None), an image, or fastMRI k-space."""
    from fastsd.data import load_fastmri, load_mri_image, mri_slice
    from fastsd.ops.coils import birdcage_maps
    from fastsd.ops.mri import MRI

    if path is not None and path.suffix.lower() in (".h5", ".hdf5"):
        d = load_fastmri(path, args.slice)
        k = d["kspace"]
        C, H, W = k.shape
        if args.size is not None:
            warnings.warn(f"{path}: --size is ignored for fastMRI k-space (used at its own {H}x{W})", stacklevel=2)
        mask = _mri_mask(args, (H, W))
        smaps = None if C == 1 else _acs_maps(k, min(args.acs, W))
        op = MRI(mask, smaps)
        from fastsd.reference.mri import ifft2c

        coil_imgs = ifft2c(k)
        truth_c = coil_imgs[0] if smaps is None else (smaps.conj() * coil_imgs).sum(0)
        truth = torch.stack([truth_c.real, truth_c.imag])[None]
        y = mask * k[None]
        return y.to(dev), op.to(dev), truth.to(dev)
    x = mri_slice(args.size) if path is None else load_mri_image(path, args.size)
    H, W = x.shape[-2:]
    smaps = birdcage_maps(args.coils, (H, W)) if args.coils > 1 else None
    op = MRI(_mri_mask(args, (H, W)), smaps)
    y = op(x)
    noise = args.noise or 0.0
    if noise > 0:
        y = op.mask * _complex_noise(y, noise, args.seed)
    return y.to(dev), op.to(dev), x.to(dev)


def _image_noise(args) -> float:
    """Measurement noise std of an image task (default: 25/255 for denoise, else 0)."""
    return args.noise if args.noise is not None else (25 / 255 if args.task == "denoise" else 0.0)


def _setup_image(args, path: Path, dev):
    """(y, op, truth or None) for inpaint / deblur / sr / denoise."""
    from fastsd.data import load_image
    from fastsd.ops.image import (
        Blur,
        Denoise,
        Downsample,
        Inpainting,
        box_mask,
        gaussian_kernel,
        motion_kernel,
        random_pixel_mask,
    )

    x = load_image(path, size=args.size, gray=args.gray)
    if not float(x.max()) > 0:
        raise _UsageError(f"{path}: the image is all zeros (nothing to reconstruct or compare with)")
    H, W = x.shape[-2:]
    task = args.task
    if task == "inpaint":
        if args.box >= min(H, W):
            raise _UsageError(f"--box {args.box} covers the whole {H}x{W} image; choose a smaller box")
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


def _zero_filled(op, y):
    return op.zero_filled(y)


def _pinv(op, y):
    return op.pinv(y)


_IMAGE_TASK = dict(setup=_setup_image, preset="image", baseline=_pinv, baseline_name="A^+ y")
TASKS: dict[str, _Task] = {
    "mri": _Task(_setup_mri, "mri", _zero_filled, "zero-filled", complex=True),
    "inpaint": _Task(**_IMAGE_TASK),
    "deblur": _Task(**_IMAGE_TASK),
    "sr": _Task(**_IMAGE_TASK),
    "denoise": _Task(**dict(_IMAGE_TASK, preset="denoise")),
}
"""``--task`` choices; a new task adds an entry (its ``setup`` reads the input and the options)."""


# -- one reconstruction -------------------------------------------------------------------------


class _Outputs:
    """Writes one reconstruction's files into ``folder``: the pictures that need only the input
    (written first, before the solve: proof that the folder is writable and the images convert
    to PNG) and, after the solve, the reconstruction, figures and ``metrics.json``."""

    def __init__(self, folder: Path, task: _Task, truth, baseline, baseline_key: str = "baseline"):
        self.folder, self.task, self.key = folder, task, baseline_key
        self.base = _display(baseline, task)
        self.ref = None if truth is None else _display(truth, task)
        self.lo, self.hi = _range(self.ref if self.ref is not None else self.base)
        if self.ref is not None:
            _save_png(folder / "truth.png", self.ref, self.lo, self.hi)
            _save_png(folder / f"error_{baseline_key}.png", _error_map(self.base, self.ref), 0, self.err_max, "inferno")
        _save_png(folder / f"{baseline_key}.png", self.base, self.lo, self.hi)

    @property
    def err_max(self) -> float:
        return 0.2 * (self.hi - self.lo)

    def finish(self, recon: torch.Tensor, result, trace: _Trace, extra: dict, method: str,
               before_dc: torch.Tensor | None = None) -> dict:
        """The reconstruction's files and ``metrics.json``; returns the metrics. The reconstruction's
        quality is stored under the method's name (e.g. ``"sdi"``) next to the baseline's key, and
        the solver's own output's under ``"<method>_before_dc"`` when a final data-consistency
        projection made ``recon`` from ``before_dc``."""
        out, task = self.folder, self.task
        rec = _display(recon, task)
        _save_png(out / "reconstruction.png", rec, self.lo, self.hi)
        arr = recon.detach().cpu()[0]
        if task.complex:
            arr = torch.complex(arr[0], arr[1])
        elif arr.shape[0] == 1:
            arr = arr[0]
        np.save(out / "reconstruction.npy", arr.numpy())
        info = result.info
        iters = info.get("iterations", info.get("steps", len(result.history.get("loss", []))))
        it_per_s = info.get("it_per_s", iters / max(info["runtime_s"], 1e-9))
        metrics = {"task": extra.pop("task"), "method": method, **extra, "runtime_s": info["runtime_s"],
                   "iterations": iters, "it_per_s": it_per_s,
                   "config": {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool, type(None)))}}
        label, base_name = _label(method) + (" + DC" if before_dc is not None else ""), task.baseline_name
        panels, errors = [(base_name, self.base, None), (label, rec, None)], []
        if self.ref is not None:
            _save_png(out / "error_reconstruction.png", _error_map(rec, self.ref), 0, self.err_max, "inferno")
            metrics[self.key] = _quality(self.base, self.ref)
            metrics[method] = _quality(rec, self.ref)
            if before_dc is not None:
                metrics[f"{method}_before_dc"] = _quality(_display(before_dc, task), self.ref)
            panels = [("truth", self.ref, None), (base_name, self.base, metrics[self.key]), (label, rec, metrics[method])]
            errors = [(f"|{base_name} − truth|", _error_map(self.base, self.ref)),
                      (f"|{label} − truth|", _error_map(rec, self.ref))]
        _summary_figure(out / "summary.png", panels, self.lo, self.hi, errors, self.err_max)
        base_psnr = metrics[self.key]["psnr"] if self.ref is not None else None
        dc_psnr = metrics[method]["psnr"] if self.ref is not None and before_dc is not None else None
        _curve_figure(out / "curve.png", result.history.get("loss", []), trace, result.history.get("sigma", []),
                      base_psnr, _label(method), base_name, dc_psnr)
        (out / "metrics.json").write_text(_json(metrics))
        return metrics


def _summary(metrics: dict, baseline_name: str, baseline_key: str = "baseline") -> str:
    method = metrics["method"]
    lines = [f"{_label(method)}: runtime {metrics['runtime_s']:.1f} s ({metrics['iterations']} iterations, "
             f"{metrics['it_per_s']:.1f} it/s)"]
    pairs = [(baseline_key, baseline_name), (f"{method}_before_dc", f"{_label(method)} (no DC)"),
             (method, _label(method) + (" + DC" if f"{method}_before_dc" in metrics else ""))]
    for key, name in pairs:
        if key in metrics:
            m = metrics[key]
            ssim = "n/a" if m["ssim"] is None else f"{m['ssim']:.4f}"
            lines.append(f"{name:>14}: PSNR {m['psnr']:.2f} dB  SSIM {ssim}  NMSE {m['nmse']:.4g}")
    return "\n".join(lines)


def _reconstruct(args, task_name: str, path: Path | None, folder: Path, dev: torch.device, progress: bool,
                 denoiser=None, extra: dict | None = None, baseline_key: str = "baseline") -> dict:
    """Set up the problem from ``path``, write the input pictures into ``folder``, solve with
    ``args.method`` and write the rest; returns the metrics."""
    task = TASKS[task_name]
    if path is not None and path.suffix.lower() in (".h5", ".hdf5") and task_name != "mri":
        raise _UsageError(f"{path}: fastMRI .h5 input needs --task mri")
    y, op, truth = task.setup(args, path, dev)
    with torch.no_grad():
        baseline = task.baseline(op, y)
    outputs = _Outputs(folder, task, truth, baseline, baseline_key)
    method = args.method
    if method == "sdi":
        kw = _solver_kwargs(args, task.preset, dev)
        result, trace = _run_solver(method, y, op, kw, outputs.ref, lambda x: _display(x, task), progress)
    else:
        result, trace = _run_method(args, task_name, y, op, outputs.ref, dev, progress, denoiser)
    size = list(op.img_size) if task.complex and hasattr(op, "img_size") else list(y.shape[-2:])
    info = {"task": task_name, "input": str(path) if path is not None else None, "image_size": size, **(extra or {})}
    if denoiser is not None:
        info["denoiser"] = str(args.denoiser)
    recon, before = result.x, None
    info["final_dc"] = bool(getattr(args, "dc", False) and hasattr(op, "project"))
    if info["final_dc"]:  # the closest image that reproduces the measured k-space exactly
        with torch.no_grad():
            recon, before = op.project(result.x, y), result.x
    return outputs.finish(recon, result, trace, info, method, before)


def _run_method(args, task_name: str, y, op, truth, dev: torch.device, progress: bool, denoiser):
    """A non-SDI solver. With a denoiser (trained on images in [-1, 1]) an image problem is solved
    for ``x' = 2x - 1`` from ``y' = 2y - A 1`` (noise std doubles) and mapped back; MRI images are
    used as they are (normalised to magnitude <= 1)."""
    task = TASKS[task_name]
    kw = _method_kwargs(args, dev, denoiser)
    show = lambda x: _display(x, task)  # noqa: E731
    if denoiser is None:
        return _run_solver(args.method, y, op, kw, truth, show, progress)
    _check_denoiser_channels(args.method, denoiser, y, op, task_name)
    signed = not task.complex
    noise = (2 * _image_noise(args)) if signed else (args.noise or 0.0) / math.sqrt(2)  # per real component
    if noise > 0 and "noise_level" in _solver_options(args.method):
        kw["noise_level"] = noise
    if not signed:
        return _run_solver(args.method, y, op, kw, truth, show, progress)
    with torch.no_grad():
        y_signed = 2 * y - op(torch.ones_like(op.adjoint(y)))
    result, trace = _run_solver(args.method, y_signed, op, kw, truth, lambda x: _display((x + 1) / 2, task), progress)
    result.x = (result.x + 1) / 2
    return result, trace


# -- commands ---------------------------------------------------------------------------------


def _cmd_demo(args) -> int:
    dev = _device(args.device)
    args.mask, args.noise, args.method = "equispaced", 0.0, "sdi"
    folder = _ResultDir(Path(args.out), args.overwrite)
    t0 = time.perf_counter()
    try:
        extra = {"data": "matplotlib s1045.ima.gz head MRI slice", "acceleration": args.acceleration,
                 "acs_lines": args.acs, "coils": args.coils}
        metrics = _reconstruct(args, "mri", None, folder.tmp, dev, not args.quiet, extra=extra,
                               baseline_key="zero_filled")
        metrics["wall_time_s"] = time.perf_counter() - t0
        (folder.tmp / "metrics.json").write_text(_json(metrics))
        folder.commit()
    except BaseException:
        folder.discard()
        raise
    print(_summary(metrics, "zero-filled", "zero_filled"))
    print(f"outputs in {folder.final} (summary.png, curve.png)")
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


def _file_error(path: Path, e: BaseException) -> str:
    """One line naming the file; unexpected exceptions keep their type."""
    msg = _one_line(e)
    if not isinstance(e, (ValueError, _UsageError, OSError, ImportError)):
        msg = f"{type(e).__name__}: {msg}"
    return msg if str(path) in msg else f"{path}: {msg}"


def _record(path: Path, out: Path, rank: int, status: str, metrics: dict | None = None, error: str | None = None) -> dict:
    """One line of the directory summary (status 'ok', 'error', 'interrupted' or 'not run')."""
    rec = {"input": str(path), "output": str(out), "rank": rank, "status": status}
    if error is not None:
        rec["error"] = error
    if metrics is not None:
        rec.update(method=metrics["method"], runtime_s=metrics["runtime_s"], iterations=metrics["iterations"])
        for key in ("baseline", metrics["method"]):
            if key in metrics:
                rec[key] = metrics[key]
    return rec


def _load_denoiser(args):
    if args.denoiser is None:
        return None
    from fastsd.priors import load_denoiser

    return load_denoiser(args.denoiser)


def _cmd_reconstruct(args) -> int:
    """One file, or a directory of files sharded over the ranks of a torchrun launch
    (:mod:`fastsd.distributed`): rank r takes files[r::world] and writes its outputs into the shared
    temporary folder; rank 0 writes ``summary.json`` with every file's record once all ranks are
    done, and renames the folder into place. The ranks meet only in that final gather."""
    from fastsd import distributed as fdist

    if args.measured and args.task != "denoise":
        raise _UsageError("--measured is only supported for --task denoise")
    _check_method_options(args)
    src = Path(args.input)
    from_dir = src.is_dir()
    files = _input_files(src)
    dev = _device(args.device)
    denoiser = _load_denoiser(args)
    if not from_dir:
        folder = _ResultDir(Path(args.out), args.overwrite)
        try:
            metrics = _reconstruct(args, args.task, files[0], folder.tmp, dev, not args.quiet, denoiser)
            folder.commit()
        except BaseException:
            folder.discard()
            raise
        print(_summary(metrics, TASKS[args.task].baseline_name))
        print(f"outputs in {folder.final}")
        return 0

    t0 = time.perf_counter()
    ctx = fdist.init(dev.type)
    folder = _ResultDir(Path(args.out), args.overwrite, fresh=not ctx.distributed)
    outs = _output_dirs(files, folder.final, True)
    tag = f"[rank {ctx.rank}/{ctx.world_size}] " if ctx.distributed else ""
    mine = fdist.shard(range(len(files)), ctx.rank, ctx.world_size)
    records, interrupted = [], False
    try:
        for n, i in enumerate(mine):
            path, out = files[i], outs[i]
            work = folder.tmp / out.name
            try:
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir()
                metrics = _reconstruct(args, args.task, path, work, dev, not args.quiet and ctx.is_main, denoiser)
            except KeyboardInterrupt:
                shutil.rmtree(work, ignore_errors=True)
                records.append(_record(path, out, ctx.rank, "interrupted"))
                records += [_record(files[j], outs[j], ctx.rank, "not run") for j in mine[n + 1:]]
                interrupted = True
                break
            except Exception as e:  # any failure: recorded, and the run goes on
                shutil.rmtree(work, ignore_errors=True)
                msg = _file_error(path, e)
                print(f"{tag}fastsd: error: {msg}", file=sys.stderr, flush=True)
                records.append(_record(path, out, ctx.rank, "error", error=msg))
                continue
            records.append(_record(path, out, ctx.rank, "ok", metrics))
            print(f"{tag}{path.name}:")
            print(_summary(metrics, TASKS[args.task].baseline_name))
            print(f"{tag}outputs in {out}", flush=True)
        if interrupted and ctx.distributed:  # the other ranks cannot be waited for: theirs are unknown
            seen = {r["input"] for r in records}
            gathered = [records + [_record(p, o, -1, "unknown") for p, o in zip(files, outs) if str(p) not in seen]]
        else:
            gathered = fdist.gather(records, ctx)  # waits for every rank
            fdist.barrier(ctx)  # no rank tears the group down while another still receives
        if gathered is not None:
            every = sorted((r for rs in gathered for r in rs), key=lambda r: r["input"])
            n_ok = sum(r["status"] == "ok" for r in every)
            summary = {"input_dir": str(src), "task": args.task, "method": args.method, "world_size": ctx.world_size,
                       "backend": ctx.backend, "n_files": len(every), "n_failed": len(every) - n_ok,
                       "interrupted": interrupted, "wall_time_s": time.perf_counter() - t0, "files": every}
            (folder.tmp / "summary.json").write_text(_json(summary))
            folder.commit(keep={"summary.json"} | {Path(r["output"]).name for r in every if r["status"] == "ok"})
            done = f"{n_ok}/{len(every)} files reconstructed; summary in {folder.final / 'summary.json'}"
            if interrupted:
                raise _Interrupted(f"interrupted: {done}")
            print(done)
            return 2 if n_ok < len(every) else 0
        if interrupted:
            raise _Interrupted("interrupted")
        return 2 if any(r["status"] != "ok" for r in records) else 0
    finally:
        fdist.finalize(ctx)


def _check_memory(needed: float, dev: torch.device, what: str) -> None:
    have = _memory_bytes(dev)
    if have is not None and needed > have:
        where = "GPU memory" if dev.type == "cuda" else "memory"
        raise _UsageError(f"{what} needs about {needed / 2**30:.3g} GiB, more than this machine's "
                          f"{have / 2**30:.3g} GiB of {where}")


def _cmd_train_denoiser(args) -> int:
    """Train :class:`fastsd.priors.TinyDenoiser` on scikit-image's bundled images and save it
    (checked writable first; written to a temporary file, renamed when complete)."""
    from fastsd.priors import save_denoiser, train_denoiser

    dev = _device(args.device)
    out = Path(os.path.abspath(args.out))
    if out.is_dir():
        raise _UsageError(f"--out {out}: is a directory; --out names the checkpoint file to write")
    if out.exists() and not args.overwrite:
        raise _UsageError(f"--out {out}: exists; pass --overwrite to replace it")
    # activations kept for the backward pass: batch x patch^2 x width per layer, float32, about 3x
    _check_memory(3.0 * 4 * args.batch_size * args.patch**2 * args.width * args.depth, dev,
                  f"--batch-size {args.batch_size} with --patch {args.patch} and --width {args.width}")
    parent = _writable_parent(out, "--out")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=parent)
    except OSError as e:
        raise _UsageError(f"--out {out}: cannot write in {parent} ({e.strerror or e})") from None
    os.close(fd)
    try:
        t0 = time.perf_counter()
        model, losses = train_denoiser(channels=args.channels, width=args.width, depth=args.depth, steps=args.steps,
                                       batch_size=args.batch_size, patch=args.patch, lr=args.lr, seed=args.seed,
                                       device=dev)
        elapsed = time.perf_counter() - t0
        tail = losses[-min(len(losses), 50):]
        info = dict(steps=args.steps, batch_size=args.batch_size, patch=args.patch, lr=args.lr, seed=args.seed,
                    final_loss=losses[-1], final_loss_mean50=sum(tail) / len(tail), train_s=elapsed, device=str(dev))
        save_denoiser(model, tmp, info)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"trained TinyDenoiser (channels {args.channels}, width {args.width}, depth {args.depth}, "
          f"{n_params} parameters) for {args.steps} steps in {elapsed:.1f} s on {dev}")
    print(f"final loss {losses[-1]:.4g} (mean of the last {len(tail)} steps {info['final_loss_mean50']:.4g})")
    print(f"saved {out}")
    return 0


# -- parser -------------------------------------------------------------------------------------


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
    g.add_argument("--T", type=int, default=T, help=f"sdi: noise levels (default: {T or 'the task preset'})")
    g.add_argument("--K", type=int, default=K, help=f"sdi: Adam steps per noise level (default: {K or 'preset'})")
    g.add_argument("--lr", type=float, default=lr,
                   help="learning rate of sdi, dip, aseqdip, dmplug (Adam) and projdiff (step towards the "
                        f"denoised estimate); default: {lr or 'the solver or preset value'}")
    net = g.add_mutually_exclusive_group()
    net.add_argument("--small", dest="small", action="store_true", default=None,
                     help="sdi: CPU-sized U-Net (width 8, 4 levels); the default on CPU")
    net.add_argument("--full", dest="small", action="store_false",
                     help="sdi: the paper's 88 M-parameter U-Net; the default on CUDA")
    g.add_argument("--resample-noise", action="store_true", help="sdi: fresh noise at every inner step (paper)")
    g.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="sdi: network arithmetic; bf16 = autocast with float32 weights, loss and operator "
                        "(default: fp32)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default="fastsd-out", help="output folder (default: ./fastsd-out)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_mri_options(p: argparse.ArgumentParser, coils: int = 1, dc: bool = False) -> None:
    g = p.add_argument_group("MRI")
    g.add_argument("--dc", action=argparse.BooleanOptionalAction, default=dc,
                   help="finish with hard data consistency: the closest image whose k-space matches the "
                        f"measured samples exactly (CG for several coils); default {'on' if dc else 'off'}")
    g.add_argument("--acceleration", type=float, default=4.0)
    g.add_argument("--acs", type=int, default=20, help="fully sampled centre lines (default 20)")
    g.add_argument("--coils", type=int, default=coils,
                   help=f"simulated birdcage coils (1 = single coil; default {coils})")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fastsd", description="Self-diffusion (SDI) and other seed solvers for imaging inverse problems.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("demo", help="reconstruct a real MRI slice from 4x-undersampled simulated 8-coil k-space")
    d.add_argument("--size", type=int, default=256, help="image size (default 256, the slice's own)")
    _add_mri_options(d, coils=DEMO["coils"], dc=True)
    _add_solver_options(d, T=DEMO["T"], K=DEMO["K"], lr=DEMO["lr"])

    r = sub.add_parser("reconstruct", help="reconstruct from an image (.npy/.png) or fastMRI k-space (.h5)")
    r.add_argument("input", help=".npy, .png or fastMRI .h5 file, or a directory of them (one output "
                   "folder per file plus summary.json; sharded over ranks under torchrun)")
    r.add_argument("--task", choices=tuple(TASKS), default="mri")
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
    t.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
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


DEMO = dict(coils=8, T=20, K=40, lr=1e-3)
"""``fastsd demo`` defaults, chosen by measurement on a 2-core CPU (see README, "Demo")."""


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 bad input or options, 130 Ctrl-C)."""
    from fastsd import cli3d  # 3-D MRI: fastsd demo --3d, fastsd reconstruct --task mri3d

    if cli3d.handles(sys.argv[1:] if argv is None else list(argv)):
        return cli3d.main(argv)
    try:
        args = _parser().parse_args(argv)
        commands = {"demo": _cmd_demo, "reconstruct": _cmd_reconstruct, "train-denoiser": _cmd_train_denoiser}
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _warning_line
            _check_options(args)
            return commands[args.command](args)
    except KeyboardInterrupt:
        print("fastsd: interrupted", file=sys.stderr)
        return 130
    except _Interrupted as e:
        print(f"fastsd: {e}", file=sys.stderr)
        return 130
    except (ValueError, _UsageError, ImportError, OSError) as e:
        print(f"fastsd: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)) or "not enough memory" in str(e):
            print(f"fastsd: error: out of memory ({_one_line(e)[:200]}); lower --size or --batch-size", file=sys.stderr)
            return 2
        if os.environ.get("FASTSD_DEBUG"):
            raise
        print(f"fastsd: error: {type(e).__name__}: {_one_line(e)[:500]} (FASTSD_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
