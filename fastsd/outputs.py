"""The files of one reconstruction (result folders: :mod:`fastsd.cli.results`).

:class:`Outputs` writes one reconstruction's files:
``truth.png``, ``<baseline>.png``, ``error_<baseline>.png`` before the solve; ``reconstruction.png``,
``reconstruction.npy``, ``error_reconstruction.png``, ``summary.png``, ``curve.png`` and
``metrics.json`` (strict JSON, :func:`to_json`) after it; :func:`record` is one input's entry in
a directory run's ``summary.json``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from fastsd.figures import curve_figure, display_range, error_map, save_png, summary_figure
from fastsd.tasks import Task, display

__all__ = ["to_json", "quality", "method_label", "Outputs", "summary_text", "record"]


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
           "projdiff": "ProjDiff", "dmplug": "DMPlug", "unfolding": "Diff-Unfolding"}


def method_label(method: str) -> str:
    """A solver's display name ('sdi' -> 'SDI')."""
    return _LABELS.get(method, method)


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
    for key, name in pairs:
        if key in metrics:
            m = metrics[key]
            ssim = "n/a" if m["ssim"] is None else f"{m['ssim']:.4f}"
            lines.append(f"{name:>14}: PSNR {m['psnr']:.2f} dB  SSIM {ssim}  NMSE {m['nmse']:.4g}")
    return "\n".join(lines)


def record(path: Path, out: Path, rank: int, status: str, metrics: dict | None = None, error: str | None = None) -> dict:
    """One entry of a directory run's ``summary.json`` (status 'ok', 'error', 'running', 'interrupted'
    or 'not run')."""
    rec = {"input": str(path), "output": str(out), "rank": rank, "status": status}
    if error is not None:
        rec["error"] = error
    if metrics is not None:
        rec.update(method=metrics["method"], runtime_s=metrics["runtime_s"], iterations=metrics["iterations"])
        for key in ("baseline", metrics["method"]):
            if key in metrics:
                rec[key] = metrics[key]
    return rec
