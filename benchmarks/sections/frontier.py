"""Section 'frontier': reconstruction quality against the work a solve does.

Work is counted independently of the device: network training steps summed over slices
(``slice_steps``) and FLOPs of one training step from the network's layer shapes
(:func:`fastsd.nets.cost.training_step_flops`); wall time stands beside it. Every row is a full
SDI solve over ``frontier_seeds`` solver seeds on the same measurements; the summary gives the
mean, min and max PSNR/SSIM over seeds (for scans per seed the mean and the worst slice).

Problems (real images, simulated coils, ``frontier_coils`` birdcage maps, 4x equispaced lines
plus ``frontier_size / 16`` fully sampled centre lines):

* ``slice``: the bundled head slice (:func:`fastsd.data.mri_slice`) at ``frontier_size``²;
* ``other``: a slice of another head (the MNI template's centre axial slice), for reporting the
  preset chosen on ``slice``;
* ``scan``: ``frontier_slices`` adjacent axial slices of the MNI template (:mod:`fastsd.data3d`),
  the same acquisition per slice, solved as one batch with ``volume`` independent/shared/warm.

Levers, each alone against the paper preset (T=40, K=50), then combined: T x K at equal and
smaller budgets, the plateau rule (``plateau``), the network (width, depth, normalisation), and
the volume modes. The preset ``mri-fast`` is chosen on ``slice`` by a stated rule (the least work
whose mean PSNR is within ``frontier_tolerance_db`` of the paper preset's) and reported on
``other``. The ``combined`` rows put the levers that gained together: mri-fast with the wider and
the shallower network, and the warm scan with the wider network. On CPU the rows run in
``frontier_workers`` processes of one thread each.

``frontier_fast`` (``{"T": .., "K": ..}``) skips the choice (stage 1 runs only the paper preset and
that schedule) and ``frontier_levers`` runs only the named stage-2 levers, so a later run can add
rows beside a committed one with its baselines measured again.
"""
from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from benchmarks.cases import target_entry
from fastsd.solvers.volume import default_warm_levels

METHOD = ("SDI solves (fastsd.solve, method 'sdi', preset 'mri' with the row's overrides) on the problems of "
          "the module docstring; PSNR (data range = max of the truth) and SSIM of the magnitude against the "
          "truth's magnitude (fastsd.metrics). slice_steps = network training steps summed over slices; "
          "step_gflop = forward+backward FLOPs of one slice's training step counted from the layer shapes "
          "(torch.utils.flop_counter); work_gflop = slice_steps * step_gflop; work_ratio and psnr_delta are "
          "against the paper preset on the same problem (for the scan: against volume='independent' at the "
          "same schedule). Summary rows: mean/min/max over seeds; scans also the worst slice over seeds. "
          "wall_s = perf_counter around the solve (one thread per worker on CPU; workers share the machine).")
COLUMNS = [("name", "name"), ("slice-steps", "slice_steps_mean"), ("GFLOP/step", "step_gflop"),
           ("work ratio", "work_ratio"), ("mean PSNR", "psnr_mean"), ("min PSNR", "psnr_min"),
           ("max PSNR", "psnr_max"), ("ΔPSNR", "psnr_delta"), ("worst slice", "worst_slice_psnr_min"),
           ("mean SSIM", "ssim_mean"), ("mean wall s", "wall_s_mean")]

PAPER = dict(T=40, K=50)
# Rows: (lever, name, problem, solver options). The T x K grid is the paper's T in {10, 20, 40}
# x K in {25, 50, 100, 200} at the paper's budget (2000 steps) and below.
TK_GRID = [(10, 25), (10, 50), (10, 100), (10, 200), (20, 25), (20, 50), (20, 100), (40, 25), (40, 50)]
PLATEAUS = (0.01, 0.03)  # the plateau rule's least relative fall of the loss between two checks


def stage1_rows() -> list[tuple]:
    rows = [("paper", "paper", "slice", dict(PAPER))]
    rows += [("TxK", f"T{T}xK{K}", "slice", dict(T=T, K=K)) for T, K in TK_GRID if (T, K) != (40, 50)]
    rows += [("plateau", f"paper+plateau{p}", "slice", dict(PAPER, plateau=p)) for p in PLATEAUS]
    rows += [("plateau", f"T20xK100+plateau{p}", "slice", dict(T=20, K=100, plateau=p)) for p in PLATEAUS[:1]]
    return rows


def stage2_rows(fast: dict, cfg: dict) -> list[tuple]:
    """Rows run once mri-fast is chosen: its report on ``other``, the network levers and the scan."""
    w, d = (8, 4) if cfg["frontier_small"] else (64, 5)
    rows = [("report", "other/paper", "other", dict(PAPER)), ("report", "other/mri-fast", "other", dict(fast))]
    rows += [("network", f"mri-fast+width{w // 2}", "slice", dict(fast, width=w // 2)),
             ("network", f"mri-fast+width{w * 2}", "slice", dict(fast, width=w * 2)),
             ("network", f"mri-fast+depth{d - 1}", "slice", dict(fast, depth=d - 1)),
             ("network", "mri-fast+norm-none", "slice", dict(fast, norm="none"))]
    scan = dict(cfg["frontier_scan_schedule"] or fast)
    rows += [("volume", f"scan/{v}", "scan", dict(scan, volume=v)) for v in ("independent", "shared")]
    default = default_warm_levels(scan["T"])  # the 'warm' row of the targets; the others beside it
    levels = sorted({default} | {max(1, round(f * scan["T"])) for f in cfg["frontier_warm_fractions"]})
    rows += [("volume", "scan/warm" if n == default else f"scan/warm{n}", "scan",
              dict(scan, volume="warm", warm_levels=n)) for n in levels]
    rows += [("combined", f"mri-fast+width{w * 2}+depth{d - 1}", "slice", dict(fast, width=w * 2, depth=d - 1)),
             ("combined", f"scan/warm+width{w * 2}", "scan", dict(scan, volume="warm", warm_levels=default, width=w * 2))]
    levers = cfg["frontier_levers"]  # scan/independent stays: the baseline of every scan row
    return [r for r in rows if levers is None or r[0] in levers or r[1] == "scan/independent"]


# ---------------------------------------------------------------------------------------------
# problems and one solve (module level: run in worker processes)


def problem(name: str, cfg: dict):
    """(x_true, y, op) of a named problem; the same measurements for every row and seed."""
    from fastsd.data import mri_slice
    from fastsd.data3d import mri_volume
    from fastsd.tasks import mri_mask, simulate_mri

    n, coils = cfg["frontier_size"], cfg["frontier_coils"]
    if name == "slice":
        x = mri_slice(n)
    else:  # MNI axial slices: (A-P, S-I, L-R) volume, slices along S-I
        B = 1 if name == "other" else cfg["frontier_slices"]
        vol = mri_volume((n, cfg["frontier_volume_depth"], n))
        c = cfg["frontier_volume_depth"] // 2
        x = vol[0, :, :, c - B // 2 : c - B // 2 + B].permute(2, 0, 1, 3).contiguous()
    mask = mri_mask((n, n), acceleration=4, acs=max(2, n // 16))
    y, op = simulate_mri(x[:1], mask, coils=coils)
    if x.shape[0] > 1:  # same acquisition (mask, coil maps) for every slice
        y = op(x)
    return x, y, op


def solve_row(job: dict) -> dict:
    """One row at one seed: the solve's work, quality per slice and wall time."""
    import fastsd
    from fastsd.metrics import magnitude, psnr, ssim

    torch.set_num_threads(job["threads"])
    x, y, op = problem(job["problem"], job["cfg"])
    dev = torch.device(job["cfg"]["device"])
    x, y, op = x.to(dev), y.to(dev), op.to(dev)
    opts = dict(job["opts"])
    t0 = time.perf_counter()
    res = fastsd.solve(y, op, method="sdi", preset="mri", small=job["cfg"]["frontier_small"], seed=job["seed"],
                       **opts)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.perf_counter() - t0
    ps, ss = [], []
    for b in range(x.shape[0]):
        a, t = magnitude(res.x[b:b + 1].float())[0].cpu(), magnitude(x[b:b + 1])[0].cpu()
        ps.append(psnr(a, t))
        ss.append(ssim(a.numpy(), t.numpy()))
    return dict(job, wall_s=wall, slice_steps=res.info["slice_steps"], psnr=statistics.mean(ps), ssim=statistics.mean(ss),
                worst_slice_psnr=min(ps), slice_psnr=ps)


def step_gflop(opts: dict, cfg: dict) -> float:
    """GFLOP of one slice's training step for a row's network."""
    from fastsd.nets import UNet
    from fastsd.nets.cost import training_step_flops

    w, d = (8, 4) if cfg["frontier_small"] else (64, 5)
    net = UNet(2, 2, width=opts.get("width", w), depth=opts.get("depth", d), norm=opts.get("norm", "batch"))
    n = cfg["frontier_size"]
    return training_step_flops(net, (1, 2, n, n)) / 1e9


# ---------------------------------------------------------------------------------------------
# the section


def _run_rows(b, rows: list[tuple], log) -> dict:
    """Run every (row, seed), in worker processes on CPU; returns {row name: [per-seed results]}."""
    cfg = dict(b.cfg, device=str(b.device))
    workers = cfg["frontier_workers"] if b.device.type == "cpu" else 1
    jobs = [dict(lever=lever, row=name, problem=prob, opts=_scaled(opts, cfg), seed=s, cfg=cfg,
                 threads=1 if workers > 1 else 0)
            for lever, name, prob, opts in rows for s in range(cfg["frontier_seeds"])]
    for j in jobs:
        j["threads"] = j["threads"] or torch.get_num_threads()
    jobs.sort(key=lambda j: -_cost(j))  # longest first: the pool ends together
    out: dict[str, list[dict]] = {}
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=torch.multiprocessing.get_context("spawn")) as pool:
            for r in pool.map(solve_row, jobs):
                out.setdefault(r["row"], []).append(r)
                log(r)
    else:
        for j in jobs:
            if b.over_budget():
                b.skip("frontier", f"frontier/{j['row']}/seed{j['seed']}", "budget exhausted")
                continue
            r = solve_row(j)
            out.setdefault(r["row"], []).append(r)
            log(r)
    return out


def _scaled(opts: dict, cfg: dict) -> dict:
    """A row's options with K multiplied by ``frontier_k_scale`` (1 for real runs; smaller for a smoke run)."""
    return dict(opts, K=max(1, round(opts["K"] * cfg["frontier_k_scale"])))


def _cost(job: dict) -> float:
    o, cfg = job["opts"], job["cfg"]
    B = cfg["frontier_slices"] if job["problem"] == "scan" else 1
    width = o.get("width", 8 if cfg["frontier_small"] else 64) / (8 if cfg["frontier_small"] else 64)
    return o["T"] * o["K"] * B * max(width, 0.5) ** 2


def _summarise(b, runs: dict, rows: list[tuple], baselines: dict, known: dict | None = None) -> dict:
    """Add one summary record per row (work ratio and PSNR delta against the row named in
    ``baselines``, looked up among these rows and ``known``); returns {row name: summary}."""
    cfg, summaries = b.cfg, {}
    known = known or {}
    for lever, name, prob, opts in rows:
        rs = runs.get(name, [])
        if not rs:
            continue
        gflop = step_gflop(opts, cfg)
        steps = [r["slice_steps"] for r in rs]
        s = dict(lever=lever, problem=prob, opts=opts, seeds=[r["seed"] for r in rs], step_gflop=gflop,
                 slice_steps_mean=statistics.mean(steps), work_gflop=statistics.mean(steps) * gflop,
                 per_seed=[{k: r[k] for k in ("seed", "psnr", "ssim", "slice_steps", "wall_s", "worst_slice_psnr",
                                               "slice_psnr")} for r in rs])
        for key in ("psnr", "ssim", "wall_s", "worst_slice_psnr"):
            vals = [r[key] for r in rs]
            s.update({f"{key}_mean": statistics.mean(vals), f"{key}_min": min(vals), f"{key}_max": max(vals)})
        base = summaries.get(baselines.get(name)) or known.get(baselines.get(name))
        if base is not None:
            s["work_ratio"] = round(s["work_gflop"] / base["work_gflop"], 6)  # 2400/8000 is 0.3, not 0.30000000000000004
            s["psnr_delta"] = s["psnr_mean"] - base["psnr_mean"]
        summaries[name] = s
        params = dict(lever=lever, problem=prob, size=cfg["frontier_size"], coils=cfg["frontier_coils"],
                      slices=len(rs[0]["slice_psnr"]), **opts)
        b.add("frontier", f"frontier/{name}", params, [r["wall_s"] for r in rs], **s)
    return summaries


def choose_fast(summaries: dict, tolerance_db: float) -> str:
    """The stated rule: the row of least work on ``slice`` whose mean PSNR is at most
    ``tolerance_db`` below the paper preset's (the paper preset itself if none is)."""
    paper = summaries["paper"]
    ok = [(s["work_gflop"], n) for n, s in summaries.items()
          if s["problem"] == "slice" and s["psnr_mean"] >= paper["psnr_mean"] - tolerance_db]
    return min(ok)[1]


def run(b) -> None:
    cfg = b.cfg
    log_path = cfg.get("frontier_log")

    def log(r: dict) -> None:
        b.log(f"frontier {r['row']} seed {r['seed']}: {r['slice_steps']} slice-steps, PSNR {r['psnr']:.2f} dB, "
              f"{r['wall_s']:.1f} s")
        if log_path:
            with open(log_path, "a") as f:
                f.write(json.dumps({k: v for k, v in r.items() if k != "cfg"}) + "\n")

    given = cfg["frontier_fast"]  # the choice made by an earlier run: stage 1 runs only its baselines
    rows1 = stage1_rows()
    if given:
        rows1 = [r for r in rows1 if r[1] in ("paper", f"T{given['T']}xK{given['K']}")]
    runs = _run_rows(b, rows1, log)
    base1 = {name: "paper" for _, name, _, _ in rows1 if name != "paper"}
    sums = _summarise(b, runs, rows1, base1)
    fast_name = f"T{given['T']}xK{given['K']}" if given else choose_fast(sums, cfg["frontier_tolerance_db"])
    fast = dict(sums[fast_name]["opts"])
    b.log(f"frontier: mri-fast = {fast_name} {fast}")
    rows2 = stage2_rows(fast, cfg)
    if b.left() < 60:
        b.skip("frontier", "frontier/stage2", "budget exhausted after stage 1")
        return
    runs2 = _run_rows(b, rows2, log)
    base2 = {"other/mri-fast": "other/paper", **{n: "scan/independent" for _, n, p, _ in rows2 if p == "scan"},
             **{n: fast_name for lv, n, p, _ in rows2 if lv in ("network", "combined") and p == "slice"}}
    sums2 = _summarise(b, runs2, rows2, base2, known=sums)
    b.add("frontier", "frontier/mri-fast", dict(chosen=fast_name, size=cfg["frontier_size"], coils=cfg["frontier_coils"],
                                                rule="given (frontier_fast)" if given else f"least work within "
                                                f"{cfg['frontier_tolerance_db']} dB of paper on 'slice'", **fast),
          [0.0], chosen=fast_name, **{k: v for k, v in sums[fast_name].items() if k != "per_seed"},
          reported_other=sums2.get("other/mri-fast", {}).get("psnr_delta"))


def targets(results: list[dict]) -> dict:
    """The compute-quality issue's targets, from the CPU (128², 8 coils) or GPU run."""
    def find(name):
        return next((r for r in results if r["name"] == name and "median_s" in r), None)

    out = {}
    fast = find("frontier/mri-fast")
    if fast is not None:
        case = f"mri-{fast['params']['size']}-{fast['params']['coils']}coil"
        out[f"frontier_work_ratio[{case}/mri-fast]"] = target_entry(fast.get("work_ratio"), 0.5, "<=")
        out[f"frontier_psnr_delta[{case}/mri-fast]"] = target_entry(fast.get("psnr_delta"), -0.3, ">=")
    for r in results:
        p = r.get("params", {})
        scan = f"scan{p.get('slices')}-{p.get('size')}-{p.get('coils')}coil"
        if r["name"].startswith("frontier/scan/") and p.get("lever") == "volume" and "median_s" in r and "psnr_delta" in r:
            mode = r["name"].rsplit("/", 1)[1]
            if mode.startswith("warm"):
                out[f"frontier_work_ratio[{scan}/{mode}]"] = target_entry(r.get("work_ratio"), 0.3, "<=")
            out[f"frontier_psnr_delta[{scan}/{mode}]"] = target_entry(r.get("psnr_delta"), -0.3, ">=")
    return out


def figure(report: dict, path) -> None:
    """PSNR against work (GFLOP summed over slices) from a results report: one curve per lever on the
    slice problem (T x K grouped by T, the plateau rule, the network), and the scan's volume modes
    beside it; mean over seeds with the min-max range as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["name"].startswith("frontier/") and "psnr_mean" in r
            and r["name"] != "frontier/mri-fast"]
    paper = next(r["psnr_mean"] for r in rows if r["name"] == "frontier/paper")
    off = [r for r in rows if r["psnr_mean"] < paper - 10]  # failed levers would squash the axis: named instead
    rows = [r for r in rows if r not in off]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        p = r["params"]
        if p["problem"] == "slice":
            label = f"T={p['T']}, K varies" if p["lever"] in ("paper", "TxK") else p["lever"]
        else:
            label = "other slice" if p["problem"] == "other" else "scan"
        groups.setdefault(label, []).append(r)
    for label, rs in sorted(groups.items()):
        ax = axes[1] if label in ("scan", "other slice") else axes[0]
        rs = sorted(rs, key=lambda r: r["work_gflop"])
        xs = [r["work_gflop"] for r in rs]
        ys = [r["psnr_mean"] for r in rs]
        err = [[r["psnr_mean"] - r["psnr_min"] for r in rs], [r["psnr_max"] - r["psnr_mean"] for r in rs]]
        style = "-o" if label.startswith("T=") else "s"
        ax.errorbar(xs, ys, yerr=err, fmt=style, capsize=3, label=label)
        for r in rs:
            ax.annotate(r["name"].split("/", 1)[1].replace("mri-fast+", "+"), (r["work_gflop"], r["psnr_mean"]),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
    dev = report.get("gpu_name") or "CPU"
    hidden = ", ".join(f"{r['name'].split('/', 1)[1]} {r['psnr_mean']:.1f} dB" for r in off)
    for ax, title in zip(axes, ("one slice (head): levers" + (f"; off scale: {hidden}" if hidden else ""),
                                "scan (8 slices) and the other slice")):
        ax.set_xscale("log")
        ax.set_xlabel("work: GFLOP of network training, summed over slices")
        ax.set_ylabel("PSNR dB (mean over seeds, min-max bars)")
        ax.set_title(f"{title} — {dev}, {report['config']['frontier_size']}²", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m benchmarks.sections.frontier RESULTS.json FIGURE.png")
    with open(sys.argv[1]) as f:
        figure(json.load(f), sys.argv[2])
