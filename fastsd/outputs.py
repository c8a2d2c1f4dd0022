"""Result folders and the files of one reconstruction.

A result folder is checked before any work (:func:`check_target`, :func:`writable_parent`) and
written atomically (:class:`ResultDir`: files go to a hidden ``.<name>.partial`` folder that is
renamed into place when complete). :class:`Outputs` writes one reconstruction's files:
``truth.png``, ``<baseline>.png``, ``error_<baseline>.png`` before the solve; ``reconstruction.png``,
``reconstruction.npy``, ``error_reconstruction.png``, ``summary.png``, ``curve.png`` and
``metrics.json`` (strict JSON, :func:`to_json`) after it. Problems with a path raise ``ValueError``
naming the path and the option that gave it.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from fastsd.figures import curve_figure, display_range, error_map, save_png, summary_figure
from fastsd.tasks import Task, display

__all__ = ["to_json", "quality", "method_label", "is_result", "check_target", "writable_parent", "ResultDir",
           "Outputs", "summary_text", "record"]


def to_json(obj) -> str:
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


def quality(x: np.ndarray, ref: np.ndarray) -> dict:
    """PSNR, SSIM (None for images under 7 pixels a side; the mean over slices of a volume) and NMSE."""
    from fastsd.metrics import nmse, psnr, ssim

    x2, r2 = (x, ref) if x.ndim == 3 else (x[None], ref[None])
    return {"psnr": psnr(x, ref), "ssim": ssim(x2, r2) if min(x.shape[-2:]) >= 7 else None, "nmse": nmse(x, ref)}


_LABELS = {"sdi": "SDI", "dip": "DIP", "aseqdip": "aSeqDIP", "ddgm": "DDGM", "dps": "DPS",
           "projdiff": "ProjDiff", "dmplug": "DMPlug", "unfolding": "Diff-Unfolding", "cg-sense": "CG-SENSE",
           "l1-wavelet": "L1-wavelet"}


def method_label(method: str) -> str:
    """A solver's display name ('sdi' -> 'SDI')."""
    return _LABELS.get(method, method)


# -- result folders -----------------------------------------------------------------------------


def is_result(path: Path) -> bool:
    """Whether ``path`` holds the results of an earlier run."""
    return (path / "metrics.json").is_file() or (path / "summary.json").is_file()


def check_target(path: Path, overwrite: bool, option: str = "--out") -> None:
    """A result folder may be new, empty, or (with ``overwrite``) an earlier fastsd result."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not is_result(path):
            raise ValueError(f"{option} {path}: folder is not empty and holds no fastsd results; choose a new "
                             f"or empty folder")
        if not overwrite:
            raise ValueError(f"{option} {path}: holds the results of an earlier run; pass --overwrite to replace them")


def writable_parent(path: Path, option: str) -> Path:
    """The (created) parent folder of ``path``, checked to be writable."""
    parent = path.parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot create {parent} ({e.strerror or e})") from None
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: folder {parent} is not writable")
    return parent


class ResultDir:
    """A result folder written atomically: files go to ``.<name>.partial`` beside ``final``, which
    replaces ``final`` (and whatever an earlier run left there) only in :meth:`commit`.

    ``with ResultDir(...) as folder:`` writes into ``folder.tmp`` and commits at the end of the block.
    The temporary name is fixed so that the ranks of a torchrun launch share it without talking to
    each other: each rank makes it if missing and writes only its own files; ``keep`` in
    :meth:`commit` drops whatever else a killed earlier run may have left in it."""

    def __init__(self, final: Path, overwrite: bool, fresh: bool = True, option: str = "--out"):
        final = Path(os.path.abspath(final))
        check_target(final, overwrite, option)
        parent = writable_parent(final, option)
        self.final, self.tmp = final, parent / f".{final.name}.partial"
        if fresh:
            shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            self.tmp.mkdir(exist_ok=True)
        except OSError as e:
            raise ValueError(f"{option} {final}: cannot write in {parent} ({e.strerror or e})") from None

    def __enter__(self) -> ResultDir:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        """Commit when the block succeeded; discard when it raised (Ctrl-C included) or the commit failed."""
        if kind is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise

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


# -- one reconstruction ---------------------------------------------------------------------------


class Outputs:
    """Writes one reconstruction's files into ``folder``: the pictures that need only the input
    (written first, before the solve: proof that the folder is writable and the images convert
    to PNG) and, after the solve, the reconstruction, figures and ``metrics.json``. The baseline's
    files and metrics go under ``baseline_key`` (e.g. ``zero_filled.png``)."""

    def __init__(self, folder: Path, task: Task, truth, baseline, baseline_key: str = "baseline"):
        self.folder, self.task, self.key = folder, task, baseline_key
        self.base = display(baseline, task)
        self.ref = None if truth is None else display(truth, task)
        self.lo, self.hi = display_range(self.ref if self.ref is not None else self.base)
        if self.ref is not None:
            save_png(folder / "truth.png", self.ref, self.lo, self.hi)
            save_png(folder / f"error_{baseline_key}.png", error_map(self.base, self.ref), 0, self.err_max, "inferno")
        save_png(folder / f"{baseline_key}.png", self.base, self.lo, self.hi)

    @property
    def err_max(self) -> float:
        return 0.2 * (self.hi - self.lo)

    def finish(self, recon: torch.Tensor, result, trace, extra: dict, method: str,
               before_dc: torch.Tensor | None = None, started: float | None = None) -> dict:
        """The reconstruction's files and ``metrics.json``; returns the metrics. The reconstruction's
        quality is stored under the method's name (e.g. ``"sdi"``) next to the baseline's key, and
        the solver's own output's under ``"<method>_before_dc"`` when a final data-consistency
        projection made ``recon`` from ``before_dc``. ``trace`` holds the PSNR trace (``iters``,
        ``psnr``); ``started`` (a ``time.perf_counter()`` value) adds ``wall_time_s``."""
        out, task = self.folder, self.task
        rec = display(recon, task)
        save_png(out / "reconstruction.png", rec, self.lo, self.hi)
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
        label, base_name = method_label(method) + (" + DC" if before_dc is not None else ""), task.baseline_name
        panels, errors = [(base_name, self.base, None), (label, rec, None)], []
        if self.ref is not None:
            save_png(out / "error_reconstruction.png", error_map(rec, self.ref), 0, self.err_max, "inferno")
            metrics[self.key] = quality(self.base, self.ref)
            metrics[method] = quality(rec, self.ref)
            if before_dc is not None:
                metrics[f"{method}_before_dc"] = quality(display(before_dc, task), self.ref)
            panels = [("truth", self.ref, None), (base_name, self.base, metrics[self.key]), (label, rec, metrics[method])]
            errors = [(f"|{base_name} − truth|", error_map(self.base, self.ref)),
                      (f"|{label} − truth|", error_map(rec, self.ref))]
        summary_figure(out / "summary.png", panels, self.lo, self.hi, errors, self.err_max)
        base_psnr = metrics[self.key]["psnr"] if self.ref is not None else None
        dc_psnr = metrics[method]["psnr"] if self.ref is not None and before_dc is not None else None
        curve_figure(out / "curve.png", result.history.get("loss", []), trace.iters, trace.psnr,
                     result.history.get("sigma", []), base_psnr, method_label(method), base_name, dc_psnr)
        if started is not None:
            metrics["wall_time_s"] = time.perf_counter() - started
        (out / "metrics.json").write_text(to_json(metrics))
        return metrics


def summary_text(metrics: dict, baseline_name: str, baseline_key: str = "baseline") -> str:
    """A few lines for the terminal: runtime, and the quality of the baseline and the reconstruction."""
    method = metrics["method"]
    label = method_label(method)
    lines = [f"{label}: runtime {metrics['runtime_s']:.1f} s ({metrics['iterations']} iterations, "
             f"{metrics['it_per_s']:.1f} it/s)"]
    pairs = [(baseline_key, baseline_name), (f"{method}_before_dc", f"{label} (no DC)"),
             (method, label + (" + DC" if f"{method}_before_dc" in metrics else ""))]
    pairs += [(name, method_label(name)) for name in metrics.get("compare", [])]
    for key, name in pairs:
        if "psnr" in metrics.get(key, {}):
            m = metrics[key]
            ssim = "n/a" if m["ssim"] is None else f"{m['ssim']:.4f}"
            lines.append(f"{name:>14}: PSNR {m['psnr']:.2f} dB  SSIM {ssim}  NMSE {m['nmse']:.4g}")
    return "\n".join(lines)


def record(path: Path, out: Path, rank: int, status: str, metrics: dict | None = None, error: str | None = None) -> dict:
    """One entry of a directory run's ``summary.json`` (status 'ok', 'error', 'interrupted', 'not run'
    or 'unknown')."""
    rec = {"input": str(path), "output": str(out), "rank": rank, "status": status}
    if error is not None:
        rec["error"] = error
    if metrics is not None:
        rec.update(method=metrics["method"], runtime_s=metrics["runtime_s"], iterations=metrics["iterations"])
        for key in ("baseline", metrics["method"]):
            if key in metrics:
                rec[key] = metrics[key]
    return rec
