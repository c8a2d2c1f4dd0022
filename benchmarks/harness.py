"""The benchmark harness: the timer, result records, environment, targets, report.

Sections (:mod:`benchmarks.sections`) are short modules that build their cases and hand the
timer zero-argument callables; everything they share lives here. On CUDA the timer is
:func:`triton.testing.do_bench` (CUDA events around each call, L2 flushed before each call); on
CPU, where ``do_bench`` has no device to time, ``time.perf_counter`` around each call with the same
interface (per-call seconds).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
import traceback
from pathlib import Path

import torch

from benchmarks import cases  # first: clears TRITON_INTERPRET on GPU machines
from benchmarks.config import config
from benchmarks.sections import DEFAULT, SECTIONS

REPO = Path(__file__).resolve().parents[1]

TIMING = ("CUDA: the item's warm-up calls, then triton.testing.do_bench(fn, return_mode='all') with its repetition "
          "time set for at least about the item's repetition count (L2 flushed before each call, one CUDA event "
          "pair around each call, host not synchronised between calls, so launch-bound work shows its real cost); CPU: "
          "time.perf_counter per call. median_s is the median of times_s. The repetition count is lowered for slow "
          "items so that one item stays within about max_item_s.")


# ---------------------------------------------------------------------------------------------
# timing and bookkeeping


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Bench:
    """Times callables, collects result records and keeps the time budget."""

    def __init__(self, device: torch.device, cfg: dict, budget_s: float):
        self.device, self.cfg, self.budget_s = device, cfg, budget_s
        self.t0 = time.perf_counter()
        self.results: list[dict] = []
        self.copy_gbps: float | None = None  # set by the 'copy' section, read by 'ops'
        self.best_lever: str | None = None  # set by the 'levers' section, read by 'anchor'
        self.after_item = None  # called after every item (main: rewrite the report)

    # -- budget ----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def over_budget(self) -> bool:
        return self.left() <= 0

    # -- timing ----------------------------------------------------------------------------------
    def bandwidth(self, nbytes: int, times: list[float]) -> dict:
        """``gb_per_s`` of moving ``nbytes`` in the median of ``times``, and ``frac_copy_bw``, its
        fraction of the copy bandwidth, once the 'copy' section has measured that."""
        gbps = nbytes / statistics.median(times) / 1e9
        return dict(gb_per_s=gbps, **({"frac_copy_bw": gbps / self.copy_gbps} if self.copy_gbps else {}))

    def time(self, fn, reps: int, warmup: int) -> list[float]:
        """Per-call seconds of about ``reps`` calls of ``fn`` after ``warmup`` calls; fewer for slow calls."""
        for _ in range(warmup):
            fn()
        cases.sync(self.device)
        t = time.perf_counter()
        fn()
        cases.sync(self.device)
        one = max(time.perf_counter() - t, 1e-9)
        reps = int(max(3, min(reps, self.cfg["max_item_s"] / one)))
        if self.device.type == "cuda":
            from triton.testing import do_bench

            # do_bench sizes its repetitions by time, each call preceded by an L2 flush (a 256 MB
            # memset, well under 1 ms): reps x (one call + 1 ms) of it is at least about reps calls.
            rep_ms = reps * (one + 1e-3) * 1e3
            return [ms / 1e3 for ms in do_bench(fn, warmup=0, rep=rep_ms, return_mode="all")]
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return times

    # -- records ---------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():7.1f}s] {msg}", flush=True)

    def add(self, section: str, name: str, params: dict, times: list[float], **derived) -> dict:
        rec = dict(section=section, name=name, params=params, times_s=times,
                   median_s=statistics.median(times), **derived)
        self.results.append(rec)
        extra = ", ".join(f"{k}={_fmt(v)}" for k, v in derived.items() if isinstance(v, (int, float)))
        self.log(f"{name}: median {rec['median_s'] * 1e3:.4g} ms" + (f" ({extra})" if extra else ""))
        return rec

    def error(self, section: str, name: str, params: dict, exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        self.results.append(dict(section=section, name=name, params=params, error=msg,
                                 traceback=traceback.format_exc(limit=8)))
        self.log(f"{name}: ERROR {msg[:300]}")

    def skip(self, section: str, name: str, reason: str) -> None:
        self.results.append(dict(section=section, name=name, skipped=reason))
        self.log(f"{name}: skipped ({reason})")

    def free(self) -> None:
        """Release cached memory between items (best effort: a broken CUDA context must not stop the
        report from being written)."""
        gc.collect()
        if self.device.type == "cuda":
            try:
                torch.cuda.synchronize(self.device)
                torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass

    def find(self, name: str) -> dict | None:
        return cases.find_result(self.results, name)

    def item(self, section: str, name: str, params: dict, body) -> dict | None:
        """Run ``body() -> (times, derived)`` unless over budget; record result or error."""
        if self.over_budget():
            self.skip(section, name, f"budget of {self.budget_s:g} s exhausted")
            return None
        try:
            times, derived = body()
            return self.add(section, name, params, times, **derived)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            self.error(section, name, params, exc)
            self.free()
            return None
        finally:
            if self.after_item is not None:
                self.after_item()


# ---------------------------------------------------------------------------------------------
# environment, targets, report


def _git(*args) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - no git or not a repository
        return None


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    # A copy of the tree without its git history (e.g. on a remote GPU machine) names its commit in
    # FASTSD_COMMIT; whether that copy was clean is then unknown here.
    given = os.environ.get("FASTSD_COMMIT")
    status = None if given else _git("status", "--porcelain")
    env = dict(
        device=device.type,
        gpu_name=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        torch=torch.__version__,
        triton=triton_version,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        commit=given or _git("rev-parse", "HEAD"),
        commit_source="FASTSD_COMMIT" if given else "git",
        dirty=None if status is None else bool(status),
        date=_dt.date.today().isoformat(),
        timestamp=_dt.datetime.now().isoformat(timespec="seconds"),
        host=platform.node(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        platform=platform.platform(),
        tf32=dict(cudnn=torch.backends.cudnn.allow_tf32, matmul=torch.backends.cuda.matmul.allow_tf32),
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        fastsd_backend_env=os.environ.get("FASTSD_BACKEND"),
        triton_interpret_cleared=cases.TRITON_INTERPRET_CLEARED,
    )
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        env.update(gpu_memory_bytes=prop.total_memory, gpu_sms=prop.multi_processor_count)
    return env


def slug(env: dict) -> str:
    name = env["gpu_name"] or f"cpu-{platform.machine()}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def evaluate_targets(results: list[dict], device_name: str) -> dict:
    """The issue's H100 targets, evaluated with this run's measurements (pass = None if unmeasured)."""
    out = {"note": f"targets are stated for an H100; evaluated here on {device_name} with the measured values"}
    for mod in SECTIONS.values():
        if hasattr(mod, "targets"):
            out.update(mod.targets(results))
    return out


def _cell(r: dict, key: str) -> str:
    """One table cell: 'name', 'ms' (median), 'field', 'p:param', 'pct:field' or 'ms:field'."""
    if key == "name":
        return r["name"]
    if key == "ms":
        return f"{r['median_s'] * 1e3:.4g}"
    kind, _, field = key.rpartition(":")
    v = r["params"].get(field) if kind == "p" else r.get(field)
    if v is None:
        return ""
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "ms":
        return f"{v * 1e3:.4g}"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def markdown(report: dict) -> str:
    env = report
    lines = [f"# fastsd benchmarks — {env['gpu_name'] or env['device']} ({env['date']})", "",
             f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, commit "
             f"{(env['commit'] or 'unknown')[:12]}{' (dirty)' if env['dirty'] else ''}, quick={env['quick']}, "
             f"total {env['elapsed_s']:.1f} s", ""]
    for sec, mod in SECTIONS.items():
        rows = [r for r in report["results"] if r["section"] == sec and "median_s" in r]
        other = [r for r in report["results"] if r["section"] == sec and "median_s" not in r]
        if not rows and not other:
            continue
        lines += [f"## {sec}", ""]
        if rows:
            cols = mod.COLUMNS
            lines.append("| " + " | ".join(h for h, _ in cols) + " |")
            lines.append("|" + "---|" * len(cols))
            lines += ["| " + " | ".join(_cell(r, k) for _, k in cols) + " |" for r in rows]
            lines.append("")
        for r in other:
            what = r.get("error") or f"skipped: {r.get('skipped')}"
            lines.append(f"- `{r['name']}`: {what}")
        if other:
            lines.append("")
    tg = {k: v for k, v in report["targets"].items() if isinstance(v, dict)}
    lines += ["## targets", "", report["targets"]["note"], ""]
    if tg:
        lines += ["| target | measured | rule | pass |", "|---|---|---|---|"]
        for k, v in tg.items():
            val = "not measured" if v["value"] is None else f"{v['value']:.4g}"
            ok = "n/a" if v["pass"] is None else ("yes" if v["pass"] else "NO")
            lines.append(f"| {k} | {val} | {v['rule']} {v['threshold']} | {ok} |")
    else:
        lines.append("(no target was measurable on this device)")
    return "\n".join(lines) + "\n"


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(2, 1000):
        cand = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not cand.exists():
            return cand
    return path


# ---------------------------------------------------------------------------------------------
# entry point


def run_report(out, only: str, budget_s: float | None = None, **sets) -> dict:
    """Run sections ``only`` in this process as ``python -m benchmarks.run --only ONLY --out OUT
    --threads 0 --set KEY=JSON ...`` would, and return the report it wrote (one run per ``out``)."""
    argv = ["--only", only, "--out", str(out), "--threads", "0"]
    if budget_s is not None:
        argv += ["--budget-s", str(budget_s)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    if main(argv) != 0:
        raise RuntimeError(f"benchmarks.run {' '.join(argv)} failed")
    (path,) = Path(out).glob("*.json")
    return json.loads(path.read_text())


def main(argv=None, description: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=description)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and models (forced on CPU)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="output directory")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated sections out of {','.join(SECTIONS)} (default {','.join(DEFAULT)})")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="soft time limit: items starting after it are skipped (default 420)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 on CPU runs, stable on shared cores; torch's default "
                         "with CUDA); 0 keeps torch's default")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override one config entry, e.g. --set fastsd_seeds=2 --set 'anchor_cases=[\"mri-256x256-1coil\"]'")
    args = ap.parse_args(argv)

    only = DEFAULT if not args.only else tuple(s.strip() for s in args.only.split(",") if s.strip())
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    device = cases.default_device()
    quick = args.quick or device.type != "cuda"
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads > 0:
        torch.set_num_threads(threads)
    if cases.TRITON_INTERPRET_CLEARED:
        print("note: TRITON_INTERPRET=1 was set; cleared it so the GPU runs compiled kernels", flush=True)
    cfg = config(device, quick)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in cfg:
            ap.error(f"--set: unknown config entry {key!r}; known: {', '.join(cfg)}")
        cfg[key] = json.loads(value)
    env = environment(device)
    print(f"fastsd benchmarks on {env['gpu_name'] or 'cpu'} (torch {env['torch']}, triton {env['triton']}), "
          f"quick={quick}, budget {args.budget_s:g} s, sections {','.join(only)}", flush=True)

    b = Bench(device, cfg, args.budget_s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = _unique(out / f"{env['date']}-{slug(env)}.json")
    methods = dict(timing=TIMING, **{name: mod.METHOD for name, mod in SECTIONS.items()})
    ran = {}

    def write() -> str:
        """(Re)write JSON + markdown; called after every section so a killed run leaves a report."""
        report = dict(env, quick=quick, args=vars(args), config=cfg, budget_s=args.budget_s,
                      elapsed_s=b.elapsed(), sections=ran, copy_gb_per_s=b.copy_gbps, methods=methods,
                      results=b.results)
        report["targets"] = evaluate_targets(b.results, env["gpu_name"] or "cpu")
        path.write_text(json.dumps(report, indent=1, default=str) + "\n")
        md = markdown(report)
        path.with_suffix(".md").write_text(md)
        return md

    b.after_item = write  # a run killed inside a long section still leaves its finished items
    for sec, mod in SECTIONS.items():
        if sec not in only:
            continue
        if b.over_budget():
            b.skip(sec, sec, f"budget of {args.budget_s:g} s exhausted")
            ran[sec] = "skipped (budget)"
            continue
        t = time.perf_counter()
        try:
            mod.run(b)
            ran[sec] = "ran"
        except Exception as exc:  # noqa: BLE001 - recorded, the next section still runs
            b.error(sec, sec, {}, exc)
            ran[sec] = f"error: {type(exc).__name__}: {exc}"
            b.free()
        ran[sec + "_s"] = time.perf_counter() - t
        write()

    md = write()
    print()
    print(md)
    print(f"wrote {path} and {path.with_suffix('.md')}", flush=True)
    return 0
