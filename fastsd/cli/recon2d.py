"""The 2-D commands: ``fastsd demo`` and ``fastsd reconstruct`` for the tasks of :mod:`fastsd.tasks`.

An image (.npy / .png) is treated as ground truth, its measurements simulated with the task's
operator; fastMRI k-space (.h5) is retrospectively undersampled; ``--measured`` (denoise) takes the
input as the noisy measurement itself. The prior-based methods use a denoiser checkpoint
(:mod:`fastsd.cli.solving`).

Options, output paths and inputs are checked before any solve; a single input's files are staged
and committed by :class:`~fastsd.cli.results.ResultFolder`, a directory's by
:mod:`fastsd.cli.batch`.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from fastsd import tasks
from fastsd.cli import solving
from fastsd.cli.batch import run_directory
from fastsd.cli.common import UsageError, device, one_line
from fastsd.cli.results import ResultFolder
from fastsd.outputs import Outputs, summary_text
from fastsd.tasks import TASKS, display

__all__ = ["cmd_demo", "cmd_reconstruct"]


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
        raise UsageError(f"--acs {args.acs} / --acceleration {args.acceleration} on {shape[1]} k-space columns: "
                          f"{one_line(e)}; lower --acs") from None
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
        raise UsageError(f"{path}: the image is all zeros (nothing to reconstruct or compare with)")
    H, W = x.shape[-2:]
    if args.task == "inpaint" and args.box >= min(H, W):
        raise UsageError(f"--box {args.box} covers the whole {H}x{W} image; choose a smaller box")
    op = tasks.image_operator(args.task, (H, W), seed=args.seed, **{k: getattr(args, k) for k in _IMAGE_OPTIONS[args.task]})
    if args.task == "denoise" and args.measured:
        return x.to(dev), op.to(dev), None
    y = tasks.simulate_image(op, x, solving.noise_std(args, TASKS[args.task]), args.seed)
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
        raise UsageError(f"{path}: fastMRI .h5 input needs --task mri")
    y, op, truth = (_setup_mri if task.complex else _setup_image)(args, path, dev)
    with torch.no_grad():
        baseline = task.baseline(op, y)
    outputs = Outputs(folder, task, truth, baseline, baseline_key)
    method = args.method
    if method == "sdi":
        kw = solving.solver_kwargs(args, task.preset, dev)
        result, trace = solving.run_solver(method, y, op, kw, outputs.ref, lambda x: display(x, task), progress)
    else:
        result, trace = solving.run_method(args, task_name, y, op, outputs.ref, dev, progress, denoiser)
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


# -- commands ---------------------------------------------------------------------------------


def cmd_demo(args) -> int:
    dev = device(args.device)
    args.noise = 0.0  # the demo simulates noiseless k-space
    with ResultFolder(Path(args.out), args.overwrite) as folder:
        t0 = time.perf_counter()
        extra = {"data": "matplotlib s1045.ima.gz head MRI slice", "acceleration": args.acceleration,
                 "acs_lines": args.acs, "coils": args.coils}
        metrics = _reconstruct(args, "mri", None, folder.tmp, dev, not args.quiet, extra=extra,
                               baseline_key="zero_filled", started=t0)
    print(summary_text(metrics, TASKS["mri"].baseline_name, "zero_filled"))
    print(f"outputs in {folder.path} (summary.png, curve.png)")
    return 0


_INPUT_SUFFIXES = (".npy", ".png", ".h5", ".hdf5")


def _input_files(src: Path) -> list[Path]:
    """The one input file, or every .npy/.png/.h5 file of a directory in sorted order."""
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in _INPUT_SUFFIXES)
        if not files:
            raise UsageError(f"{src}: no .npy, .png or .h5 files in this directory")
        return files
    from fastsd.data import _check_file

    return [_check_file(src, _INPUT_SUFFIXES)]


def cmd_reconstruct(args) -> int:
    """One file, or a directory of files (:mod:`fastsd.cli.batch`)."""
    if args.measured and args.task != "denoise":
        raise UsageError("--measured is only supported for --task denoise")
    solving.check_method_options(args)
    src = Path(args.input)
    from_dir = src.is_dir()
    files = _input_files(src)
    dev = device(args.device)
    denoiser = solving.load_denoiser(args)
    if not from_dir:
        with ResultFolder(Path(args.out), args.overwrite) as folder:
            metrics = _reconstruct(args, args.task, files[0], folder.tmp, dev, not args.quiet, denoiser)
        print(summary_text(metrics, TASKS[args.task].baseline_name))
        print(f"outputs in {folder.path}")
        return 0
    return run_directory(args, src, files, dev,
                         lambda path, work, progress: _reconstruct(args, args.task, path, work, dev, progress, denoiser),
                         TASKS[args.task].baseline_name)
