"""Solvers from the command line: which options a method takes (read from its constructor), the
keywords handed to :func:`fastsd.solve`, the progress bar and PSNR trace around a solve, and the
denoiser prior of the prior-based methods (checked against the problem's channel count)."""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import numpy as np
import torch

from fastsd.cli.common import UsageError
from fastsd.outputs import method_label
from fastsd.progress import Progress, Trace
from fastsd.tasks import TASKS, Task, display

__all__ = ["solver_options", "check_method_options", "solver_kwargs", "run_solver", "run_method", "noise_std",
           "load_denoiser", "compare_methods", "run_baselines"]


def solver_options(method: str) -> dict:
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



def check_method_options(args) -> None:
    """Reject options that do not apply to ``--method``, and a missing ``--denoiser``, before any work."""
    method, params = args.method, solver_options(args.method)
    if method == "sdi":
        if args.iterations is not None:
            raise UsageError("--iterations does not apply to --method sdi (it runs T x K steps: use --T and --K)")
    else:
        given = {"--T": args.T is not None, "--K": args.K is not None, "--small/--full": args.small is not None,
                 "--width": args.width is not None, "--depth": args.depth is not None,
                 "--preset": args.preset is not None, "--volume": args.volume is not None,
                 "--resample-noise": args.resample_noise, "--precision": args.precision != "fp32"}
        for flag, used in given.items():
            if used:
                raise UsageError(f"{flag} applies to --method sdi only, not to --method {method}")
        if args.iterations is not None and _count_option(params) is None:
            raise UsageError(f"--iterations does not apply to --method {method}")
    if args.lr is not None and "lr" not in params:
        raise UsageError(f"--lr does not apply to --method {method} (it has no learning rate)")
    if "denoiser" in params and args.denoiser is None:
        raise UsageError(f"--method {method} needs a denoiser prior: train one with "
                          f"'fastsd train-denoiser --out denoiser.pt' and pass --denoiser denoiser.pt")
    if "denoiser" not in params and args.denoiser is not None:
        raise UsageError(f"--method {method} uses no denoiser; drop --denoiser")
    args.compare = compare_methods(getattr(args, "compare", None), method)


def compare_methods(value: str | None, method: str) -> list[str]:
    """The baselines named by ``--compare`` (comma-separated, each once, none of them ``--method``)."""
    from fastsd.solvers.classical import BASELINES

    if isinstance(value, list) or not value:
        return list(value or [])
    names = [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        if name not in BASELINES:
            raise UsageError(f"--compare: unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        if name == method:
            raise UsageError(f"--compare {name}: that is already the --method")
    if len(set(names)) != len(names):
        raise UsageError(f"--compare names a baseline twice: {value!r}")
    return names


def run_baselines(names: list[str], y, op, dev: torch.device, seed: int) -> dict:
    """``{name: SolveResult}`` of each ``--compare`` baseline on the measurements (default options);
    run before the main solve, so that a baseline that cannot serve the problem fails first."""
    from fastsd.api import solve

    out = {}
    for name in names:
        try:
            out[name] = solve(y, op, name, seed=seed, device=dev)
        except ValueError as e:
            raise UsageError(f"--compare {name}: {e}") from None
    return out



def solver_kwargs(args, preset: str, device: torch.device) -> dict:
    small = args.small if args.small is not None else device.type == "cpu"
    kw = dict(preset=args.preset or preset, small=small, seed=args.seed, device=device,
              resample_noise=args.resample_noise, precision=args.precision)
    if args.volume is not None:
        kw["volume"] = args.volume
    for name in ("T", "K", "lr", "width", "depth"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return kw


def _method_kwargs(args, dev: torch.device, denoiser) -> dict:
    """Options of a non-SDI solver from the command line (problem-dependent ones are added later)."""
    params = solver_options(args.method)
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
    params = solver_options(method)
    name = _count_option(params)
    return None if name is None else int(kw.get(name, params[name].default))


def run_solver(method: str, y, op, kw: dict, truth: np.ndarray | None, show: Callable, progress: bool):
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
        raise UsageError(f"--method {method} cannot serve --task mri with this denoiser: MRI images are complex "
                          f"(2 channels, real and imaginary) but the denoiser has {have}; fastsd train-denoiser "
                          f"trains natural-image priors (1 or 3 channels) for the image tasks")
    hint = "pass --gray, or train a 3-channel denoiser (fastsd train-denoiser --channels 3)" if c == 3 and have == 1 \
        else f"train a {c}-channel denoiser (fastsd train-denoiser --channels {c})"
    raise UsageError(f"--method {method}: the denoiser has {have} channel(s) but the image has {c}: {hint}")



def noise_std(args, task: Task) -> float:
    """Measurement noise std: ``--noise``, else the task's default (25/255 for denoise, else 0)."""
    return args.noise if args.noise is not None else task.noise



def run_method(args, task_name: str, y, op, truth, dev: torch.device, progress: bool, denoiser):
    """A non-SDI solver. With a denoiser (trained on images in [-1, 1]) an image problem is solved
    for ``x' = 2x - 1`` from ``y' = 2y - A 1`` (noise std doubles) and mapped back; MRI images are
    used as they are (normalised to magnitude <= 1)."""
    task = TASKS[task_name]
    kw = _method_kwargs(args, dev, denoiser)
    show = lambda x: display(x, task)  # noqa: E731
    if denoiser is None:
        return run_solver(args.method, y, op, kw, truth, show, progress)
    _check_denoiser_channels(args.method, denoiser, y, op, task_name)
    signed = not task.complex
    noise = (2 * noise_std(args, task)) if signed else noise_std(args, task) / math.sqrt(2)  # per real component
    if noise > 0 and "noise_level" in solver_options(args.method):
        kw["noise_level"] = noise
    if not signed:
        return run_solver(args.method, y, op, kw, truth, show, progress)
    with torch.no_grad():
        y_signed = 2 * y - op(torch.ones_like(op.adjoint(y)))
    result, trace = run_solver(args.method, y_signed, op, kw, truth, lambda x: display((x + 1) / 2, task), progress)
    result.x = (result.x + 1) / 2
    return result, trace


def load_denoiser(args):
    if args.denoiser is None:
        return None
    from fastsd.priors import load_denoiser

    return load_denoiser(args.denoiser)
