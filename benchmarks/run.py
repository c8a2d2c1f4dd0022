"""Side-by-side benchmark of fastsd on whatever device exists, in one run.

Usage::

    python -m benchmarks.run [--quick] [--out DIR] [--only copy,ops,step,levers,batch,anchor] [--budget-s 420]
                             [--threads N]

Sections (each one failing is recorded and the rest still run; once ``--budget-s`` seconds have
passed the remaining items are skipped and recorded as such):

1. ``copy``  — device copy bandwidth (``dst.copy_(src)``, 2 × nbytes per copy): the ceiling.
2. ``ops``   — every fused op (``torch.ops.fastsd.*``) next to its plain-PyTorch reference at a
   small size and at a GPU-filling size, with bytes counted explicitly, GB/s and fraction of the
   copy bandwidth; on CUDA also the three Triton kernels of the MRI pipeline alone.
3. ``step``  — one SDI inner step: eager with the reference backend, eager fused, fused + CUDA
   graph; MRI single-coil 256² and 15-coil 320²; paper U-Net and small preset; plus the network's
   forward + backward alone, whose time subtracted from the step's is the non-network work.
4. ``levers`` — the network training step with each speed lever alone and together (precision,
   fused BatchNorm+ReLU, cuDNN autotuning), a breakdown of the step, and B slices of a volume on one
   shared network (:mod:`benchmarks.training_step`).
5. ``batch`` — throughput of B independent problems (BatchedNet) for B in (1, 4, 8).
6. ``anchor`` — full solves: the official SDI loop against fastsd's default and fastest path on
   the same measurements, several seeds, wall time and PSNR (:mod:`benchmarks.anchor`).

Results go to ``DIR/<YYYY-MM-DD>-<device>.json`` (default ``benchmarks/results``) with a markdown
table next to it (also printed). CUDA timings use CUDA events around each call after warm-up; CPU
timings use ``time.perf_counter``. On CPU ``--quick`` is forced (small sizes, no CUDA graphs) and
the fused ops dispatch to the reference, so "fused" there measures the custom-op path only.
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
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmarks import (
    anchor,
    cases,  # first: clears TRITON_INTERPRET on GPU machines
    training_step,
)
from fastsd._backend import use_backend

SECTIONS = ("copy", "ops", "step", "levers", "batch", "anchor")
REPO = Path(__file__).resolve().parents[1]
TARGETS = dict(step_speedup=8.0, non_network_share=0.15, bandwidth_fraction=0.70)

METHODS = {
    "timing": "CUDA: warm-up calls, then one CUDA event pair around each call (host not synchronised "
              "between calls, so launch-bound work shows its real cost); CPU: time.perf_counter per call. "
              "median_s is the median of times_s. The repetition count is lowered for slow items so that "
              "one item stays within about max_item_s.",
    "copy": "dst.copy_(src) of one large float32 tensor; bytes = 2 * nbytes (read + write).",
    "ops": "fused = torch.ops.fastsd.<op> (Triton on CUDA; on CPU the same reference behind the custom op), "
           "reference = fastsd.reference.<module>.<op> on the same inputs, both under no_grad. bytes_moved is "
           "the DRAM traffic of the fused pipeline: each Triton kernel reads its operands once and writes its "
           "output once, each cuFFT call counts as one read + one write of the spectra (a lower bound); "
           "io_bytes is the compulsory traffic (inputs once, outputs once). gb_per_s = bytes_moved / median_s "
           "for both implementations (so their ratio is the speed ratio); frac_copy_bw = gb_per_s / copy "
           "bandwidth. kernel_* entries time one Triton kernel of the MRI pipeline alone (exact bytes). "
           "'small' sizes stay in L2 and are launch-bound; only 'fill' sizes (operands well above L2) are "
           "held against the copy-bandwidth target.",
    "step": "One SDI inner step as the solver builds it for MRI (x_in = x_hat + sigma*eps fixed for the noise "
            "level unless resample_noise; U-Net forward; loss sqrt(||M(FSx-y)||^2) + 1e-4 TV through the fused "
            "fidelity op; backward; Adam lr 1e-3). reference-eager: eager with use_backend('reference'); "
            "fused-eager: eager with the fused ops; fused-graph: StepGraph (CUDA graph replay, fused capturable Adam; the eager steps use the default foreach Adam). "
            "net-fwd-bwd-*: the same BatchedNet forward on a fixed input plus backward with a fixed upstream "
            "gradient, no operator/loss/noise/optimizer, eager or graphed. non_network_s = step median - "
            "net-fwd-bwd median of the same execution mode (eager for eager steps, graph for the graphed "
            "step); non_network_share = non_network_s / step median.",
    "batch": "B independent problems (one network copy each, BatchedNet) on the MRI case, one inner step "
             "per call (graphed on CUDA, eager on CPU); slice_steps_per_s = B / median_s.",
    "levers": "SelfDiffusion(preset='mri').prepare(y, op) with each lever's options on the anchor's 320x320 "
              "16-coil problem; one call = run.runner.run(1) (a CUDA-graph replay on CUDA). breakdown/*: each part "
              "of the step graphed alone after warm-up steps of the same run; backward = fwd_bwd - fwd. volume/*: "
              "B1 = one slice per step (one network), B<n> = n slices per step on one shared network "
              "(shared_net=True); slices_per_s = B / median_s; volume_speedup = B<n> slices/s over B1.",
    "anchor": "Full solves, T=40, K=50. official = benchmarks.anchor.official_solve (eager, paper U-Net "
              "channels-first, torch.optim.Adam defaults, PyTorch FFT operator ||M F(S x) - M y|| + 1e-4 TV, noise "
              "once per level, loss.item() and sigma.item() every iteration, no graph, no fused kernels). "
              "fastsd-default = SelfDiffusion(preset='mri') defaults; fastsd-fastest = the fastest lever of the "
              "levers section. wall_s = perf_counter around everything from network creation to the result "
              "(synchronised), after one untimed short warm-up solve per implementation. Official seed 0 runs "
              "alone; official seeds >= 1 run side by side in subprocesses (timing='concurrent': their PSNR "
              "counts, their wall time does not). PSNR: |x|/max|x| against |x_true|/max|x_true|, data range 1. "
              "Speed-up = mean solo official wall / mean fastsd wall.",
}


def config(device: torch.device, quick: bool) -> dict:
    """Sizes and repetition counts: paper sizes on CUDA, small ones on CPU."""
    if device.type == "cuda":
        return dict(
            copy_numel=2**27,
            ops_mri=[("small", (1, 1, 256, 256)), ("fill", (16, 15, 320, 320))],
            ops_elem=[("small", (1, 2, 256, 256)), ("fill", (64, 2, 512, 512))],
            op_reps=(20, 5) if quick else (100, 10),
            step_cases=[(1, 256, 256), (15, 320, 320)],
            step_nets=list(cases.NETS),
            resample_cases=[(1, 256, 256)],
            step_reps=(10, 6) if quick else (30, 6),
            batch_case=(15, 320, 320),
            batch_nets=["unet-small"] if quick else ["unet-small", "unet-paper"],
            batch_sizes=(1, 4, 8),
            batch_vectorize=(8,),
            batch_reps=(5, 6) if quick else (10, 6),
            lever_case="mri-320x320-16coil",
            lever_small=False,
            volume_B=16,
            anchor_cases=["mri-320x320-16coil", "mri-256x256-1coil"],
            anchor_TK=(4, 10) if quick else (40, 50),
            official_seeds=3,
            fastsd_seeds=5,
            max_item_s=15.0,
        )
    return dict(
        copy_numel=2**22,
        ops_mri=[("small", (1, 1, 32, 32)), ("fill", (2, 4, 64, 64))],
        ops_elem=[("small", (1, 2, 32, 32)), ("fill", (2, 2, 64, 64))],
        op_reps=(10, 2),
        step_cases=[(1, 64, 64), (4, 64, 64)],
        step_nets=["unet-small"],
        resample_cases=[(1, 64, 64)],
        step_reps=(5, 2),
        batch_case=(1, 64, 64),
        batch_nets=["unet-small"],
        batch_sizes=(1, 4, 8),
        batch_vectorize=(),
        batch_reps=(3, 1),
        lever_case="mri-32x32-2coil",
        lever_small=True,
        volume_B=2,
        anchor_cases=["mri-64x64-2coil"],
        anchor_TK=(2, 2),
        official_seeds=2,
        fastsd_seeds=2,
        max_item_s=2.0,
    )


# ---------------------------------------------------------------------------------------------
# timing and bookkeeping


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    """Release cached memory between items (best effort: a broken CUDA context must not stop the
    report from being written)."""
    gc.collect()
    if device.type == "cuda":
        try:
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


class Bench:
    """Times callables, collects result records and keeps the time budget."""

    def __init__(self, device: torch.device, cfg: dict, budget_s: float):
        self.device, self.cfg, self.budget_s = device, cfg, budget_s
        self.t0 = time.perf_counter()
        self.results: list[dict] = []
        self.copy_gbps: float | None = None

    # -- budget ----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def over_budget(self) -> bool:
        return self.left() <= 0

    # -- timing ----------------------------------------------------------------------------------
    def time(self, fn, reps: int, warmup: int) -> list[float]:
        """Per-call seconds of ``fn`` after ``warmup`` calls; fewer reps for slow calls."""
        dev = self.device
        for _ in range(warmup):
            fn()
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        one = time.perf_counter() - t
        reps = int(max(3, min(reps, self.cfg["max_item_s"] / max(one, 1e-9))))
        if dev.type == "cuda":
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(reps)]
            for start, end in events:
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize(dev)
            return [start.elapsed_time(end) / 1e3 for start, end in events]
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return times

    # -- records ---------------------------------------------------------------------------------
    def _log(self, msg: str) -> None:
        print(f"[{self.elapsed():7.1f}s] {msg}", flush=True)

    def add(self, section: str, name: str, params: dict, times: list[float], **derived) -> dict:
        rec = dict(section=section, name=name, params=params, times_s=times,
                   median_s=statistics.median(times), **derived)
        self.results.append(rec)
        extra = ", ".join(f"{k}={_fmt(v)}" for k, v in derived.items() if isinstance(v, (int, float)))
        self._log(f"{name}: median {rec['median_s'] * 1e3:.4g} ms" + (f" ({extra})" if extra else ""))
        return rec

    def error(self, section: str, name: str, params: dict, exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        self.results.append(dict(section=section, name=name, params=params, error=msg,
                                 traceback=traceback.format_exc(limit=8)))
        self._log(f"{name}: ERROR {msg[:300]}")

    def skip(self, section: str, name: str, reason: str) -> None:
        self.results.append(dict(section=section, name=name, skipped=reason))
        self._log(f"{name}: skipped ({reason})")

    def free(self) -> None:
        _free(self.device)

    def find(self, name: str) -> dict | None:
        for r in self.results:
            if r["name"] == name and "median_s" in r:
                return r
        return None

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
            _free(self.device)
            return None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ---------------------------------------------------------------------------------------------
# sections


def section_copy(b: Bench) -> None:
    n = b.cfg["copy_numel"]
    src = torch.randn(n, device=b.device)
    dst = torch.empty_like(src)
    nbytes = 2 * src.numel() * src.element_size()

    def body():
        times = b.time(lambda: dst.copy_(src), 30, 5)
        gbps = nbytes / statistics.median(times) / 1e9
        b.copy_gbps = gbps
        return times, dict(bytes_moved=nbytes, gb_per_s=gbps)

    b.item("copy", "copy/float32", dict(numel=n, nbytes_per_tensor=n * 4), body)
    del src, dst
    _free(b.device)


def _time_op_case(b: Bench, c: cases.OpCase) -> None:
    reps, warm = b.cfg["op_reps"]
    params = dict(c.params, bytes_moved=c.bytes_moved, io_bytes=c.io_bytes)

    def derived(times):
        gbps = c.bytes_moved / statistics.median(times) / 1e9
        d = dict(gb_per_s=gbps, io_gb_per_s=c.io_bytes / statistics.median(times) / 1e9)
        if b.copy_gbps:
            d["frac_copy_bw"] = gbps / b.copy_gbps
        return d

    ref = None
    if c.reference is not None:
        def ref_body():
            times = b.time(c.reference, reps, warm)
            return times, derived(times)

        ref = b.item("ops", f"ops/{c.op}/{c.size}/reference", dict(params, impl="reference"), ref_body)

    def fused_body():
        times = b.time(c.fused, reps, warm)
        d = derived(times)
        if ref is not None:
            d["speedup_vs_reference"] = ref["median_s"] / statistics.median(times)
        return times, d

    impl = "triton" if b.device.type == "cuda" else "custom-op (reference on CPU)"
    b.item("ops", f"ops/{c.op}/{c.size}/fused", dict(params, impl=impl), fused_body)


def section_ops(b: Bench) -> None:
    dev = b.device
    with torch.no_grad():
        for size, (B, C, H, W) in b.cfg["ops_mri"]:
            if b.over_budget():
                b.skip("ops", f"ops/mri/{size}", "budget exhausted")
                continue
            try:
                for c in cases.mri_op_cases(B, C, H, W, dev, size):
                    _time_op_case(b, c)
                if dev.type == "cuda" and size == "fill":
                    for c in cases.mri_kernel_cases(B, C, H, W, dev, size):
                        _time_op_case(b, c)
            except Exception as exc:  # noqa: BLE001 - building the case failed
                b.error("ops", f"ops/mri/{size}", dict(B=B, C=C, H=H, W=W), exc)
            _free(dev)
        for size, shape in b.cfg["ops_elem"]:
            if b.over_budget():
                b.skip("ops", f"ops/elementwise/{size}", "budget exhausted")
                continue
            try:
                for c in cases.elementwise_op_cases(shape, dev, size):
                    _time_op_case(b, c)
            except Exception as exc:  # noqa: BLE001
                b.error("ops", f"ops/elementwise/{size}", dict(shape=list(shape)), exc)
            _free(dev)


def _step_group(b: Bench, p: dict, net, net_kind: str, resample: bool, net_only: dict) -> None:
    """reference-eager, fused-eager, fused-graph (CUDA) for one (case, net, resample) + shares."""
    dev, (reps, warm) = b.device, b.cfg["step_reps"]
    case = cases.case_name(p["H"], p["W"], p["C"])
    prefix = f"step/{case}/{net_kind}" + ("/resample" if resample else "")
    base = dict(B=1, C=p["C"], H=p["H"], W=p["W"], net=net_kind,
                params_per_problem=sum(q.numel() for q in net.parameters()), resample_noise=resample)
    is_cuda = dev.type == "cuda"

    def share(times, mode):
        ref = net_only.get(mode)
        if ref is None:
            return {}
        nn_s = statistics.median(times) - ref["median_s"]
        return dict(non_network_s=nn_s, non_network_share=nn_s / statistics.median(times))

    holder = {}

    def eager_runner():
        if "eager" not in holder:
            holder["eager"] = cases.sdi_step(p, net, graphed=False, resample_noise=resample)[0]
        return holder["eager"]

    def ref_body():
        runner = eager_runner()
        with use_backend("reference"):
            times = b.time(lambda: runner.run(1), reps, warm)
        return times, share(times, "eager")

    r_ref = b.item("step", f"{prefix}/reference-eager",
                   dict(base, mode="reference-eager", backend="reference", cuda_graph=False), ref_body)

    def fused_body():
        runner = eager_runner()
        times = b.time(lambda: runner.run(1), reps, warm)
        d = share(times, "eager")
        if r_ref:
            d["speedup_vs_reference_eager"] = r_ref["median_s"] / statistics.median(times)
        return times, d

    r_fused = b.item("step", f"{prefix}/fused-eager",
                     dict(base, mode="fused-eager", backend="auto", cuda_graph=False), fused_body)
    holder.clear()
    _free(dev)
    if not is_cuda:
        b.skip("step", f"{prefix}/fused-graph", "CUDA graphs need a CUDA device")
        return

    def graph_body():
        runner = cases.sdi_step(p, net, graphed=True, resample_noise=resample)[0]
        times = b.time(lambda: runner.run(1), reps, warm)
        d = share(times, "graph")
        if r_ref:
            d["speedup_vs_reference_eager"] = r_ref["median_s"] / statistics.median(times)
        if r_fused:
            d["speedup_vs_fused_eager"] = r_fused["median_s"] / statistics.median(times)
        return times, d

    b.item("step", f"{prefix}/fused-graph",
           dict(base, mode="fused-graph", backend="auto", cuda_graph=True, adam_capturable=True), graph_body)
    _free(dev)


def section_step(b: Bench) -> None:
    dev = b.device
    nets = {}
    for C, H, W in b.cfg["step_cases"]:
        case = cases.case_name(H, W, C)
        try:
            p = cases.mri_problem(1, C, H, W, dev)
        except Exception as exc:  # noqa: BLE001
            b.error("step", f"step/{case}", dict(C=C, H=H, W=W), exc)
            continue
        for net_kind in b.cfg["step_nets"]:
            if b.over_budget():
                b.skip("step", f"step/{case}/{net_kind}", "budget exhausted")
                continue
            try:
                if net_kind not in nets:
                    nets[net_kind] = cases.make_net(net_kind)
                net = nets[net_kind]
            except Exception as exc:  # noqa: BLE001
                b.error("step", f"step/{case}/{net_kind}", {}, exc)
                continue
            # the network alone (forward + backward), eager and graphed, for the non-network share
            net_only = {}
            reps, warm = b.cfg["step_reps"]
            base = dict(B=1, C=C, H=H, W=W, net=net_kind)
            for mode in ("eager", "graph") if dev.type == "cuda" else ("eager",):
                def body(mode=mode):
                    runner = cases.net_fwd_bwd(p, net, graphed=mode == "graph")
                    return b.time(lambda: runner.run(1), reps, warm), {}

                r = b.item("step", f"step/{case}/{net_kind}/net-fwd-bwd-{mode}",
                           dict(base, mode=f"net-fwd-bwd-{mode}", cuda_graph=mode == "graph"), body)
                if r:
                    net_only[mode] = r
                _free(dev)
            for resample in (False, True) if (C, H, W) in b.cfg["resample_cases"] else (False,):
                _step_group(b, p, net, net_kind, resample, net_only)
        del p
        _free(dev)


def section_batch(b: Bench) -> None:
    dev = b.device
    C, H, W = b.cfg["batch_case"]
    case = cases.case_name(H, W, C)
    reps, warm = b.cfg["batch_reps"]
    graphed = dev.type == "cuda"
    p = cases.mri_problem(1, C, H, W, dev)
    for net_kind in b.cfg["batch_nets"]:
        if b.over_budget():
            b.skip("batch", f"batch/{case}/{net_kind}", "budget exhausted")
            continue
        net = cases.make_net(net_kind)
        per_slice_b1 = None
        runs = [(B, False) for B in b.cfg["batch_sizes"]] + [(B, True) for B in b.cfg["batch_vectorize"]]
        for B, vec in runs:
            def body(B=B, vec=vec):
                runner = cases.sdi_step(p, net, graphed=graphed, B=B, vectorize=vec)[0]
                times = b.time(lambda: runner.run(1), reps, warm)
                d = dict(slice_steps_per_s=B / statistics.median(times))
                if per_slice_b1:
                    d["throughput_vs_B1"] = d["slice_steps_per_s"] / per_slice_b1
                return times, d

            name = f"batch/{case}/{net_kind}/B{B}" + ("/vmap" if vec else "")
            r = b.item("batch", name, dict(B=B, C=C, H=H, W=W, net=net_kind, vectorize=vec, cuda_graph=graphed),
                       body)
            if r and B == 1 and not vec:
                per_slice_b1 = r["slice_steps_per_s"]
            _free(dev)
        del net
    del p
    _free(dev)


SECTION_FUNCS = dict(copy=section_copy, ops=section_ops, step=section_step, levers=training_step.section,
                     batch=section_batch, anchor=anchor.section)


# ---------------------------------------------------------------------------------------------
# targets, environment, report


def evaluate_targets(results: list[dict], device_name: str) -> dict:
    """The issue's H100 targets, evaluated with this run's measurements (pass = None if unmeasured)."""
    out = {"note": f"targets are stated for an H100; evaluated here on {device_name} with the measured values"}

    for r in results:
        if "median_s" not in r:
            continue
        name, prm = r["name"], r["params"]
        if r["section"] == "step" and prm.get("mode") == "fused-graph":
            if prm.get("C") == 1:
                out[f"step_graph_speedup_vs_reference_eager[{name}]"] = cases.target_entry(
                    r.get("speedup_vs_reference_eager"), TARGETS["step_speedup"], ">=")
            out[f"non_network_share[{name}]"] = cases.target_entry(r.get("non_network_share"), TARGETS["non_network_share"], "<=")
        if r["section"] == "ops" and name.endswith("/fill/fused"):
            out[f"bandwidth_fraction[{name}]"] = cases.target_entry(r.get("frac_copy_bw"), TARGETS["bandwidth_fraction"], ">=")
    out.update(anchor.targets(results))
    return out


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


_COLUMNS = {
    "copy": [("name", "name"), ("median ms", "ms"), ("GB/s", "gb_per_s")],
    "ops": [("name", "name"), ("bytes", "p:bytes_moved"), ("median ms", "ms"), ("GB/s", "gb_per_s"),
            ("of copy BW", "pct:frac_copy_bw"), ("speedup vs ref", "speedup_vs_reference")],
    "step": [("name", "name"), ("median ms", "ms"), ("speedup vs ref eager", "speedup_vs_reference_eager"),
             ("speedup vs fused eager", "speedup_vs_fused_eager"), ("non-network ms", "ms:non_network_s"),
             ("non-network share", "pct:non_network_share")],
    "batch": [("name", "name"), ("median ms / step", "ms"), ("slice-steps/s", "slice_steps_per_s"),
              ("vs B=1", "throughput_vs_B1")],
    "levers": [("name", "name"), ("median ms", "ms"), ("speed-up vs fp32", "speedup_vs_fp32"),
               ("slices/s", "slices_per_s"), ("volume speed-up", "volume_speedup")],
    "anchor": [("name", "name"), ("wall s", "wall_s"), ("timing", "timing"), ("PSNR dB", "psnr"),
               ("mean wall s (alone)", "wall_s_alone_mean"), ("mean PSNR", "psnr_mean"), ("min PSNR", "psnr_min"),
               ("max PSNR", "psnr_max")],
}


def _cell(r: dict, key: str) -> str:
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
    for sec in SECTIONS:
        rows = [r for r in report["results"] if r["section"] == sec and "median_s" in r]
        other = [r for r in report["results"] if r["section"] == sec and "median_s" not in r]
        if not rows and not other:
            continue
        lines += [f"## {sec}", ""]
        if rows:
            cols = _COLUMNS[sec]
            lines.append("| " + " | ".join(h for h, _ in cols) + " |")
            lines.append("|" + "---|" * len(cols))
            for r in rows:
                lines.append("| " + " | ".join(_cell(r, k) for _, k in cols) + " |")
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and models (forced on CPU)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="output directory")
    ap.add_argument("--only", default=None, help=f"comma-separated sections out of {','.join(SECTIONS)}")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="soft time limit: items starting after it are skipped (default 420)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 on CPU runs, stable on shared cores; torch's default "
                         "with CUDA); 0 keeps torch's default")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override one config entry, e.g. --set fastsd_seeds=2 --set 'anchor_cases=[\"mri-256x256-1coil\"]'")
    args = ap.parse_args(argv)

    only = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(",") if s.strip())
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
    sections = {}

    def write() -> str:
        """(Re)write JSON + markdown; called after every section so a killed run leaves a report."""
        report = dict(env, quick=quick, args=vars(args), config=cfg, budget_s=args.budget_s,
                      elapsed_s=b.elapsed(), sections=sections, copy_gb_per_s=b.copy_gbps, methods=METHODS,
                      results=b.results)
        report["targets"] = evaluate_targets(b.results, env["gpu_name"] or "cpu")
        path.write_text(json.dumps(report, indent=1, default=str) + "\n")
        md = markdown(report)
        path.with_suffix(".md").write_text(md)
        return md

    for sec in SECTIONS:
        if sec not in only:
            continue
        if b.over_budget():
            b.skip(sec, sec, f"budget of {args.budget_s:g} s exhausted")
            sections[sec] = "skipped (budget)"
            continue
        t = time.perf_counter()
        try:
            SECTION_FUNCS[sec](b)
            sections[sec] = "ran"
        except Exception as exc:  # noqa: BLE001 - recorded, the next section still runs
            b.error(sec, sec, {}, exc)
            sections[sec] = f"error: {type(exc).__name__}: {exc}"
            _free(device)
        sections[sec + "_s"] = time.perf_counter() - t
        write()

    md = write()
    print()
    print(md)
    print(f"wrote {path} and {path.with_suffix('.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
