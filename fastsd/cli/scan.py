"""``fastsd reconstruct SCAN``: every slice of a scanner file (fastMRI or ISMRMRD .h5, BART
.cfl/.hdr; :mod:`fastsd.scanner`) reconstructed as one scan.

The file's slices (``--slices START:STOP``; all by default) go through SDI in batches of
``--batch-slices`` (batch dimension = slices, one independent problem each). A fully sampled file
is undersampled retrospectively (``--mask``, ``--acceleration``, ``--acs``) and its coil-combined
images are the truth; an undersampled one keeps its own mask and has no truth. Coil maps
(``--coil-maps acs|espirit|FILE``) are estimated once, before any solve, after the file and its
ACS lines have been checked; the reconstruction is zero outside the maps' support (where ESPIRiT
crops them), as a SENSE reconstruction is.

The result folder: ``slice_NNN/`` per slice (the 2-D outputs of :class:`fastsd.outputs.Outputs`,
``metrics.json`` included), and for the scan ``reconstruction.nii.gz`` (magnitude volume, voxel
size from the file's header), ``reconstruction.cfl``/``.hdr`` (complex, BART layout),
``montage.png`` and ``metrics.json`` (per-slice and mean quality, worst slice, status); with
``--save-maps`` also ``coil_maps.cfl``/``.hdr``. The scan files are rewritten after every batch, so
a run stopped by Ctrl-C or an error keeps the slices it finished (:class:`Stopped`).
"""
from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from fastsd import tasks
from fastsd.cli import sanity, solving
from fastsd.cli.common import UsageError, one_line
from fastsd.outputs import Outputs, method_label, to_json
from fastsd.progress import Progress
from fastsd.tasks import TASKS

__all__ = ["is_scan", "refuse_scan_options", "reconstruct_scan", "Stopped", "BATCH_SLICES", "SCAN_VOLUME"]

BATCH_SLICES = 8
"""Slices per solve unless ``--batch-slices`` says otherwise."""
SCAN_VOLUME = "warm"
"""How the slices of a solve share work unless ``--volume`` says otherwise: warm starts from the centre
outwards, measured at 0.30 of the work of independent slices and 1.22 dB better on 8 MNI slices
(README "Cost and quality")."""


class Stopped(Exception):
    """A scan stopped by Ctrl-C or an error after some of its slices were written (the folder holds
    them and a ``metrics.json`` that says so)."""

    def __init__(self, cause: BaseException, done: int, total: int):
        self.cause, self.done, self.total = cause, done, total
        self.interrupted = isinstance(cause, KeyboardInterrupt)
        what = "interrupted" if self.interrupted else one_line(cause)
        super().__init__(f"{what} after {done} of {total} slices")


def is_scan(path: Path | None) -> bool:
    """Whether ``path`` is scanner k-space (reconstructed slice by slice as one scan)."""
    from fastsd.scanner import is_scan_file

    return path is not None and is_scan_file(path)


_OPTIONS = {"--slice": "slice", "--slices": "slices", "--coil-maps": "coil_maps", "--batch-slices": "batch_slices",
            "--save-maps": "save_maps"}


def refuse_scan_options(args, path: Path | None) -> None:
    """The options of scanner files given for another input: a one-line error."""
    for flag, name in _OPTIONS.items():
        if getattr(args, name, None) not in (None, False):
            raise UsageError(f"{flag} applies to scanner files (fastMRI/ISMRMRD .h5, BART .cfl), not to "
                             f"{path if path is not None else 'the demo'}")


def _slices(args) -> slice | None:
    from fastsd.scanner import parse_slices

    if args.slices is not None and args.slice is not None:
        raise UsageError("give --slices or --slice, not both")
    if args.slice is not None:
        return slice(args.slice, args.slice + 1)
    try:
        return parse_slices(args.slices)
    except ValueError as e:
        raise UsageError(f"--slices: {e}") from None


def _problem(args, scan):
    """(y, mask, retrospective): the measured k-space and mask, or the fully sampled k-space
    undersampled with the command line's mask."""
    if scan.mask is not None:
        return scan.kspace, scan.mask, False
    H, W = scan.shape
    try:
        mask = tasks.mri_mask((H, W), args.mask, args.acceleration, args.acs, args.seed)
    except ValueError as e:
        raise UsageError(f"--acs {args.acs} / --acceleration {args.acceleration} on {W} k-space columns: "
                         f"{one_line(e)}; lower --acs") from None
    return scan.kspace * mask, mask, True


class _SliceTraces:
    """Solver callback for a batch of slices: each slice's PSNR against its truth after every
    noise level, and the progress bar (with the mean PSNR)."""

    def __init__(self, bar: Progress, refs: list):
        self.bar, self.refs = bar, refs
        self.iters: list[list[int]] = [[] for _ in refs]
        self.psnr: list[list[float]] = [[] for _ in refs]

    def __call__(self, it: int, state: dict):
        x = state.get("x")
        if x is not None and self.refs[0] is not None:
            from fastsd.metrics import magnitude, psnr

            mags = magnitude(x.detach().cpu()).numpy()
            slices = state.get("slices", range(len(self.refs)))  # a warm solve reports one group at a time
            for j, i in enumerate(slices):
                self.psnr[i].append(psnr(mags[j], self.refs[i]))
                self.iters[i].append(it)
            state = dict(state, psnr=float(np.mean([self.psnr[i][-1] for i in slices])))
        self.bar(it, state)

    def of(self, i: int) -> SimpleNamespace:
        return SimpleNamespace(iters=self.iters[i] if self.refs[i] is not None else [], psnr=self.psnr[i])


def _mean_quality(records: list[dict], key: str) -> dict | None:
    vals = [r[key] for r in records if r.get(key) is not None]
    if not vals:
        return None
    out = {}
    for name in ("psnr", "ssim", "nmse"):
        v = [q[name] for q in vals if q[name] is not None]
        out[name] = float(np.mean(v)) if v else None
    return out


def _write_scan(folder: Path, info: dict, records: list[dict], volume: list[torch.Tensor], voxel, status: str,
                error: str | None = None) -> dict:
    """The scan's files for the slices done so far: metrics.json, NIfTI and BART volumes, montage."""
    from fastsd.figures import display_range, montage
    from fastsd.metrics import magnitude
    from fastsd.scanner import save_bart_volume, save_volume_nifti

    metrics = {**info, "status": status, "slices_done": [r["slice"] for r in records]}
    if error is not None:
        metrics["error"] = error
    for key in ("baseline", "sdi_before_dc", "sdi"):
        q = _mean_quality(records, key)
        if q is not None:
            metrics[key] = q
    if metrics.get("sdi", {}).get("psnr") is not None:
        worst = min((r for r in records if r.get("sdi")), key=lambda r: r["sdi"]["psnr"])
        metrics["sdi_worst_slice"] = {"slice": worst["slice"], **worst["sdi"]}
    runtime = float(sum(r["runtime_s"] for r in records))
    # solver steps per second: each batch of slices takes `iterations` steps together
    metrics.update(runtime_s=runtime, it_per_s=info["iterations"] * info["solves"] / max(runtime, 1e-9),
                   per_slice=records)
    if volume:
        x = torch.cat(volume)  # (S, 2, H, W)
        mags = magnitude(x).numpy()
        save_volume_nifti(folder / "reconstruction.nii.gz", mags, voxel)
        save_bart_volume(folder / "reconstruction", torch.complex(x[:, 0], x[:, 1]))
        montage(folder / "montage.png", mags, *display_range(mags))
    (folder / "metrics.json").write_text(to_json(metrics))
    return metrics


def _solve_batch(args, kw: dict, scan, y, mask, maps, rows: range, folder: Path, dev, progress: bool,
                 retrospective: bool) -> tuple[list[dict], torch.Tensor, int]:
    """SDI on the slices ``rows`` of the scan as one batch; each slice's files in ``slice_NNN/``.
    Returns the slices' records, their images (B, 2, H, W) on the CPU and the solver's steps."""
    from fastsd.api import solve
    from fastsd.ops.mri import MRI, coil_combined
    from fastsd.scanner.coilmaps import coil_support
    from fastsd.solvers.sdi import SelfDiffusion
    from fastsd.solvers.volume import warm_steps

    task, smaps = TASKS["mri"], None if maps is None else maps[rows.start:rows.stop]
    op, yb = MRI(mask, smaps).to(dev), y[rows.start:rows.stop].to(dev)
    with torch.no_grad():
        base = op.zero_filled(yb)
    outs = []
    for i, s in enumerate(rows):
        work = folder / f"slice_{scan.slices[s]:03d}"
        work.mkdir(exist_ok=True)
        truth = coil_combined(scan.kspace[s], None if smaps is None else smaps[i]) if retrospective else None
        outs.append(Outputs(work, task, truth, base[i:i + 1], "baseline"))
    cfg = SelfDiffusion(**kw).config(op)
    T, K = int(cfg["T"]), int(cfg["K"])
    steps = warm_steps(len(rows), T, K, cfg["warm_levels"]) if cfg["volume"] == "warm" else T * K
    bar = Progress(steps, progress,
                   f"{method_label('sdi')} slices {rows.start + 1}-{rows.stop}/{len(scan.slices)}")
    traces = _SliceTraces(bar, [o.ref for o in outs])
    try:
        result = solve(yb, op, "sdi", callback=traces, **kw)
    finally:
        bar.close()
    recon, before = result.x.detach(), None
    if args.dc:  # the closest images that reproduce the measured k-space exactly
        with torch.no_grad():
            recon, before = op.project(result.x, yb), result.x.detach()
    if smaps is not None:  # no coil sees the image outside the maps' support
        inside = coil_support(smaps).to(recon.device)
        recon, before = recon * inside, None if before is None else before * inside
    records = []
    for i, s in enumerate(rows):
        info = {"task": "mri", "input": scan.source, "slice": scan.slices[s], "image_size": list(scan.shape),
                "batch_slices": len(rows), "final_dc": bool(args.dc)}
        m = outs[i].finish(recon[i:i + 1], result, traces.of(i), info, "sdi", None if before is None else before[i:i + 1])
        records.append({"slice": scan.slices[s], "runtime_s": m["runtime_s"] / len(rows),
                        **{k: m[k] for k in ("baseline", "sdi_before_dc", "sdi") if k in m}})
    return records, recon.cpu(), steps


def reconstruct_scan(args, path: Path, folder: Path, dev: torch.device, progress: bool) -> dict:
    """Reconstruct the scan in ``path`` into ``folder`` (see the module); returns the scan's metrics.
    Raises :class:`Stopped` when a Ctrl-C or an error ends the run after some slices were written."""
    from fastsd.ops.masks import acceleration_of
    from fastsd.scanner import acs_lines, coil_maps, load_scan, save_bart_kspace

    t_start = time.perf_counter()
    if args.method != "sdi":
        raise UsageError(f"--method {args.method}: scanner files are reconstructed with sdi only")
    scan = load_scan(path, _slices(args))
    sanity.check_measured_kspace_options(args, path, scan.n_coils)
    if args.size is not None:
        warnings.warn(f"{path}: --size is ignored for scanner k-space (used at its own "
                      f"{scan.shape[0]}x{scan.shape[1]})", stacklevel=2)
    y, mask, retrospective = _problem(args, scan)
    method = args.coil_maps or "acs"
    t0 = time.perf_counter()
    maps = coil_maps(y, mask, method)
    maps_s = time.perf_counter() - t0
    if maps is not None and args.save_maps:
        save_bart_kspace(folder / "coil_maps", maps)
    try:
        acs = acs_lines(mask)
    except ValueError:
        acs = None
    S, batch = len(scan.slices), args.batch_slices or BATCH_SLICES
    kw = solving.solver_kwargs(args, TASKS["mri"].preset, dev)
    kw.setdefault("volume", SCAN_VOLUME)
    info = {"task": "mri", "method": "sdi", "input": str(path), "format": scan.format, "slices": scan.slices,
            "volume": kw["volume"],
            "image_size": list(scan.shape), "coils": scan.n_coils, "undersampling":
            "retrospective" if retrospective else "measured", "acceleration": acceleration_of(mask),
            "acs_lines": None if acs is None else acs[1] - acs[0], "coil_maps": method, "coil_maps_s": maps_s,
            "voxel_size_mm": scan.voxel_size, "final_dc": bool(args.dc), "batch_slices": batch,
            "iterations": None, "solves": 0}
    records, volume = [], []
    try:
        for a in range(0, S, batch):
            rows = range(a, min(a + batch, S))
            try:
                recs, recon, info["iterations"] = _solve_batch(args, kw, scan, y, mask, maps, rows, folder, dev, progress, retrospective)
            except BaseException:  # a batch that did not finish leaves nothing behind
                for s in rows:
                    shutil.rmtree(folder / f"slice_{scan.slices[s]:03d}", ignore_errors=True)
                raise
            records += recs
            volume.append(recon)
            info["solves"] += 1
            _write_scan(folder, info, records, volume, scan.voxel_size, "running")
    except (KeyboardInterrupt, Exception) as e:
        if not records:
            raise
        stopped = Stopped(e, len(records), S)
        _write_scan(folder, info, records, volume, scan.voxel_size, "interrupted" if stopped.interrupted else "error",
                    None if stopped.interrupted else one_line(e))
        raise stopped from e
    metrics = _write_scan(folder, info, records, volume, scan.voxel_size, "complete")
    metrics["wall_time_s"] = time.perf_counter() - t_start
    (folder / "metrics.json").write_text(to_json(metrics))
    return metrics
