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

This module maps options onto the library: the tasks and their simulated measurements
(:mod:`fastsd.tasks`), progress and PSNR traces (:mod:`fastsd.progress`), result folders and files
(:mod:`fastsd.outputs`, figures from :mod:`fastsd.figures`); 3-D MRI is :mod:`fastsd.cli3d`.
"""
from __future__ import annotations

import argparse
import inspect
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fastsd import tasks
from fastsd.outputs import Outputs, ResultDir, method_label, record, summary_text, to_json, writable_parent
from fastsd.progress import Progress, Trace
from fastsd.tasks import TASKS, Task, display

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


# -- solving ----------------------------------------------------------------------------------


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
    bar = Progress(total, progress, method_label(method))
    trace = Trace(bar, total, truth, show)
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


# -- problems: the options mapped onto fastsd.tasks --------------------------------------------


def _noise(args, task: Task) -> float:
    """Measurement noise std: ``--noise``, else the task's default (25/255 for denoise, else 0)."""
    return args.noise if args.noise is not None else task.noise


def _setup_mri(args, path: Path | None, dev):
    """(y, op, truth) for the MRI task: the bundled slice (``path`` None), an image, or fastMRI k-space."""
    from fastsd.data import load_fastmri, load_mri_image, mri_slice

    fastmri = path is not None and path.suffix.lower() in (".h5", ".hdf5")
    if fastmri:
        k = load_fastmri(path, args.slice)["kspace"]
        shape = k.shape[-2:]
        if args.size is not None:
            warnings.warn(f"{path}: --size is ignored for fastMRI k-space (used at its own {shape[0]}x{shape[1]})",
                          stacklevel=2)
    else:
        x = mri_slice(args.size) if path is None else load_mri_image(path, args.size)
        shape = x.shape[-2:]
    try:
        mask = tasks.mri_mask(tuple(shape), args.mask, args.acceleration, args.acs, args.seed)
    except ValueError as e:
        raise _UsageError(f"--acs {args.acs} / --acceleration {args.acceleration} on {shape[1]} k-space columns: "
                          f"{_one_line(e)}; lower --acs") from None
    if fastmri:
        y, op, x = tasks.kspace_problem(k, mask, args.acs)
    else:
        y, op = tasks.simulate_mri(x, mask, args.coils, args.noise or 0.0, args.seed)
    return y.to(dev), op.to(dev), x.to(dev)


_IMAGE_OPTIONS = {"inpaint": ("keep", "box"), "deblur": ("kernel", "blur_sigma", "motion_length", "motion_angle"),
                  "sr": ("factor",), "denoise": ()}
"""The options of each image task's operator (:func:`fastsd.tasks.image_operator` keywords)."""


def _setup_image(args, path: Path, dev):
    """(y, op, truth or None) for inpaint / deblur / sr / denoise."""
    from fastsd.data import load_image

    x = load_image(path, size=args.size, gray=args.gray)
    if not float(x.max()) > 0:
        raise _UsageError(f"{path}: the image is all zeros (nothing to reconstruct or compare with)")
    H, W = x.shape[-2:]
    if args.task == "inpaint" and args.box >= min(H, W):
        raise _UsageError(f"--box {args.box} covers the whole {H}x{W} image; choose a smaller box")
    op = tasks.image_operator(args.task, (H, W), seed=args.seed, **{k: getattr(args, k) for k in _IMAGE_OPTIONS[args.task]})
    if args.task == "denoise" and args.measured:
        return x.to(dev), op.to(dev), None
    y = tasks.simulate_image(op, x, _noise(args, TASKS[args.task]), args.seed)
    return y.to(dev), op.to(dev), x.to(dev)


# -- one reconstruction -------------------------------------------------------------------------


def _reconstruct(args, task_name: str, path: Path | None, folder: Path, dev: torch.device, progress: bool,
                 denoiser=None, extra: dict | None = None, baseline_key: str = "baseline",
                 started: float | None = None) -> dict:
    """Set up the problem from ``path``, write the input pictures into ``folder``, solve with
    ``args.method`` and write the rest (with the wall time since ``started`` when given); returns
    the metrics."""
    task = TASKS[task_name]
    if path is not None and path.suffix.lower() in (".h5", ".hdf5") and task_name != "mri":
        raise _UsageError(f"{path}: fastMRI .h5 input needs --task mri")
    y, op, truth = (_setup_mri if task.complex else _setup_image)(args, path, dev)
    with torch.no_grad():
        baseline = task.baseline(op, y)
    outputs = Outputs(folder, task, truth, baseline, baseline_key)
    method = args.method
    if method == "sdi":
        kw = _solver_kwargs(args, task.preset, dev)
        result, trace = _run_solver(method, y, op, kw, outputs.ref, lambda x: display(x, task), progress)
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
    return outputs.finish(recon, result, trace, info, method, before, started)


def _run_method(args, task_name: str, y, op, truth, dev: torch.device, progress: bool, denoiser):
    """A non-SDI solver. With a denoiser (trained on images in [-1, 1]) an image problem is solved
    for ``x' = 2x - 1`` from ``y' = 2y - A 1`` (noise std doubles) and mapped back; MRI images are
    used as they are (normalised to magnitude <= 1)."""
    task = TASKS[task_name]
    kw = _method_kwargs(args, dev, denoiser)
    show = lambda x: display(x, task)  # noqa: E731
    if denoiser is None:
        return _run_solver(args.method, y, op, kw, truth, show, progress)
    _check_denoiser_channels(args.method, denoiser, y, op, task_name)
    signed = not task.complex
    noise = (2 * _noise(args, task)) if signed else _noise(args, task) / math.sqrt(2)  # per real component
    if noise > 0 and "noise_level" in _solver_options(args.method):
        kw["noise_level"] = noise
    if not signed:
        return _run_solver(args.method, y, op, kw, truth, show, progress)
    with torch.no_grad():
        y_signed = 2 * y - op(torch.ones_like(op.adjoint(y)))
    result, trace = _run_solver(args.method, y_signed, op, kw, truth, lambda x: display((x + 1) / 2, task), progress)
    result.x = (result.x + 1) / 2
    return result, trace


# -- commands ---------------------------------------------------------------------------------


def _cmd_demo(args) -> int:
    dev = _device(args.device)
    args.mask, args.noise, args.method = "equispaced", 0.0, "sdi"
    with ResultDir(Path(args.out), args.overwrite) as folder:
        t0 = time.perf_counter()
        extra = {"data": "matplotlib s1045.ima.gz head MRI slice", "acceleration": args.acceleration,
                 "acs_lines": args.acs, "coils": args.coils}
        metrics = _reconstruct(args, "mri", None, folder.tmp, dev, not args.quiet, extra=extra,
                               baseline_key="zero_filled", started=t0)
    print(summary_text(metrics, TASKS["mri"].baseline_name, "zero_filled"))
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
        with ResultDir(Path(args.out), args.overwrite) as folder:
            metrics = _reconstruct(args, args.task, files[0], folder.tmp, dev, not args.quiet, denoiser)
        print(summary_text(metrics, TASKS[args.task].baseline_name))
        print(f"outputs in {folder.final}")
        return 0

    t0 = time.perf_counter()
    ctx = fdist.init(dev.type)
    folder = ResultDir(Path(args.out), args.overwrite, fresh=not ctx.distributed)
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
                records.append(record(path, out, ctx.rank, "interrupted"))
                records += [record(files[j], outs[j], ctx.rank, "not run") for j in mine[n + 1:]]
                interrupted = True
                break
            except Exception as e:  # any failure: recorded, and the run goes on
                shutil.rmtree(work, ignore_errors=True)
                msg = _file_error(path, e)
                print(f"{tag}fastsd: error: {msg}", file=sys.stderr, flush=True)
                records.append(record(path, out, ctx.rank, "error", error=msg))
                continue
            records.append(record(path, out, ctx.rank, "ok", metrics))
            print(f"{tag}{path.name}:")
            print(summary_text(metrics, TASKS[args.task].baseline_name))
            print(f"{tag}outputs in {out}", flush=True)
        if interrupted and ctx.distributed:  # the other ranks cannot be waited for: theirs are unknown
            seen = {r["input"] for r in records}
            gathered = [records + [record(p, o, -1, "unknown") for p, o in zip(files, outs) if str(p) not in seen]]
        else:
            gathered = fdist.gather(records, ctx)  # waits for every rank
            fdist.barrier(ctx)  # no rank tears the group down while another still receives
        if gathered is not None:
            every = sorted((r for rs in gathered for r in rs), key=lambda r: r["input"])
            n_ok = sum(r["status"] == "ok" for r in every)
            summary = {"input_dir": str(src), "task": args.task, "method": args.method, "world_size": ctx.world_size,
                       "backend": ctx.backend, "n_files": len(every), "n_failed": len(every) - n_ok,
                       "interrupted": interrupted, "wall_time_s": time.perf_counter() - t0, "files": every}
            (folder.tmp / "summary.json").write_text(to_json(summary))
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
    parent = writable_parent(out, "--out")
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


def _run_command(command: Callable[[], int]) -> int:
    """Run one command (which parses its own options) with the command line's reporting: warnings
    and errors in one line each, exit status 2 for bad input or options and 130 for Ctrl-C."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _warning_line
            return command()
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


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 bad input or options, 130 Ctrl-C)."""
    from fastsd import cli3d  # 3-D MRI: fastsd demo --3d, fastsd reconstruct --task mri3d

    argv = sys.argv[1:] if argv is None else list(argv)
    if cli3d.handles(argv):
        return cli3d.main(argv)

    def command() -> int:
        args = _parser().parse_args(argv)
        _check_options(args)
        commands = {"demo": _cmd_demo, "reconstruct": _cmd_reconstruct, "train-denoiser": _cmd_train_denoiser}
        return commands[args.command](args)

    return _run_command(command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
