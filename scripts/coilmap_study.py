"""SDI quality with each choice of coil maps, and the time to estimate them (CPU, one thread).

A simulated multi-coil scan: the bundled real head slice (:func:`fastsd.data.mri_slice`, smooth
phase) at ``--size``², ``--coils`` birdcage coils, 4x equispaced lines with ``--acs`` centre lines
(the CLI's mask, seed s = mask offset and solver seed). For each seed and each map choice:

* ``acs``     — :func:`fastsd.scanner.coil_maps` 'acs' (windowed ACS lines over their RSS);
* ``espirit`` — 'espirit' (sigpy's EspiritCalib, CPU);
* ``file``    — the true birdcage maps read back from a .npy file (the oracle);

the map time (``time.perf_counter`` around :func:`~fastsd.scanner.coil_maps`, one thread), and the
magnitude PSNR / SSIM against the truth of the zero-filled image ``A^H y``, CG-SENSE (``op.pinv``),
SDI (preset 'mri', CPU network, ``--T`` x ``--K``, lr 1e-3) as it comes (``sdi_raw``) and set to
zero outside the maps' support (``sdi``, :func:`fastsd.scanner.coilmaps.coil_support`, as
``fastsd reconstruct`` does), and SDI + final data consistency (``op.project``, then the support)
with those maps. Writes ``OUT/<date>-cpu-coilmaps-<size>.json`` and ``.md``.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/coilmap_study.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fastsd.data import mri_slice
from fastsd.metrics import magnitude, psnr, ssim
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.mri import MRI
from fastsd.reference.mri import fft2c
from fastsd.scanner import coil_maps
from fastsd.scanner.coilmaps import coil_support
from fastsd.solvers.sdi import SelfDiffusion
from fastsd.tasks import mri_mask

CHOICES = ("acs", "espirit", "file")
METHODS = ("zero_filled", "cg_sense", "sdi_raw", "sdi", "sdi_dc")


def _quality(x: torch.Tensor, ref: np.ndarray) -> dict:
    mag = magnitude(x.detach())[0].numpy()
    return {"psnr": psnr(mag, ref), "ssim": ssim(mag[None], ref[None])}


def run(args) -> dict:
    torch.set_num_threads(1)
    size, C = args.size, args.coils
    x = mri_slice(size, phase="smooth")
    ref = magnitude(x)[0].numpy()
    truth_maps = birdcage_maps(C, (size, size))
    full = fft2c(truth_maps * torch.complex(x[0, 0], x[0, 1]))[None]  # (1, C, H, W)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        maps_file = Path(tmp) / "true_maps.npy"
        np.save(maps_file, truth_maps.numpy())
        for seed in args.seeds:
            mask = mri_mask((size, size), "equispaced", 4.0, args.acs, seed)
            y = full * mask
            for choice in CHOICES:
                t0 = time.perf_counter()
                maps = coil_maps(y, mask, str(maps_file) if choice == "file" else choice)
                map_s = time.perf_counter() - t0
                op = MRI(mask, maps[0])
                with torch.no_grad():
                    zf, cg = op.zero_filled(y), op.pinv(y)
                t0 = time.perf_counter()
                res = SelfDiffusion("mri", T=args.T, K=args.K, lr=1e-3, small=True, seed=seed).solve(y, op)
                solve_s = time.perf_counter() - t0
                with torch.no_grad():
                    support = coil_support(maps)
                    dc = op.project(res.x, y) * support
                row = dict(seed=seed, maps=choice, map_s=map_s, solve_s=solve_s,
                           support=float(support.float().mean()))
                for name, img in zip(METHODS, (zf, cg, res.x, res.x * support, dc)):
                    q = _quality(img, ref)
                    row[f"{name}_psnr"], row[f"{name}_ssim"] = q["psnr"], q["ssim"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for choice in CHOICES:
        rs = [r for r in rows if r["maps"] == choice]
        summary[choice] = {k: dict(mean=statistics.mean(r[k] for r in rs), min=min(r[k] for r in rs),
                                   max=max(r[k] for r in rs))
                           for k in rs[0] if k not in ("seed", "maps")}
    return dict(date=datetime.date.today().isoformat(), device="cpu, 1 thread (2-core machine shared with other work)",
                torch=torch.__version__, size=size, coils=C, acceleration=4.0, acs=args.acs, T=args.T, K=args.K,
                lr=1e-3, network="CPU U-Net (small)", seeds=args.seeds, method=__doc__.split("\n\n")[1], rows=rows,
                summary=summary)


def markdown(res: dict) -> str:
    s = res["summary"]
    lines = [f"# Coil maps: SDI on {res['size']}² with {res['coils']} coils, 4x equispaced + {res['acs']} ACS, "
             f"T={res['T']} K={res['K']}, seeds {res['seeds']} ({res['date']}, {res['device']})", "",
             "mean (min–max) over seeds; PSNR dB of the magnitude against the truth", "",
             "| maps | map time s | zero-filled | CG-SENSE | SDI raw | SDI | SDI + DC | SSIM SDI + DC |",
             "|---|---|---|---|---|---|---|---|"]

    def cell(d, fmt="{:.2f}"):
        return f"{fmt.format(d['mean'])} ({fmt.format(d['min'])}–{fmt.format(d['max'])})"

    for choice, v in s.items():
        lines.append(f"| {choice} | {cell(v['map_s'], '{:.3f}')} | {cell(v['zero_filled_psnr'])} | "
                     f"{cell(v['cg_sense_psnr'])} | {cell(v['sdi_raw_psnr'])} | {cell(v['sdi_psnr'])} | {cell(v['sdi_dc_psnr'])} | "
                     f"{cell(v['sdi_dc_ssim'], '{:.3f}')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--acs", type=int, default=20)
    p.add_argument("--T", type=int, default=20)
    p.add_argument("--K", type=int, default=40)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    res = run(args)
    stem = Path(args.out) / f"{res['date']}-cpu-coilmaps-{args.size}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2))
    stem.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
