"""Section 'levers': the network training step with each speed lever alone and together, where the
step's time goes, and B slices of a volume on one shared network.

Every variant is the solver's own step (:meth:`fastsd.solvers.sdi.SelfDiffusion.prepare` on the
anchor's MRI problem), timed as ``run.runner.run(1)`` — a CUDA-graph replay on CUDA — so the
numbers cannot drift from what ``solve`` runs. The breakdown captures each part of one step
alone (network forward, network forward + backward, Adam, operator + loss forward + backward,
noise) in its own graph; backward = (forward + backward) − forward.
"""
from __future__ import annotations

import statistics

import torch

from benchmarks.cases import mri_case, target_entry
from fastsd.graphs.step_graph import StepGraph
from fastsd.solvers.sdi import SelfDiffusion

# name -> solver options; 'fp32' is the step as it was before these levers existed.
LEVERS = {
    "fp32": dict(precision="fp32", fused_norm=False, cudnn_benchmark=False),
    "fp32+cudnn_benchmark": dict(precision="fp32", fused_norm=False, cudnn_benchmark=True),
    "fp32+fused_norm": dict(precision="fp32", fused_norm=True, cudnn_benchmark=False),
    "fp32+fused_norm+cudnn_benchmark": dict(precision="fp32", fused_norm=True, cudnn_benchmark=True),
    "bf16": dict(precision="bf16", fused_norm=False, cudnn_benchmark=False),
    "bf16+cudnn_benchmark": dict(precision="bf16", fused_norm=False, cudnn_benchmark=True),
    "bf16+fused_norm": dict(precision="bf16", fused_norm=True, cudnn_benchmark=False),
    "bf16+fused_norm+cudnn_benchmark": dict(precision="bf16", fused_norm=True, cudnn_benchmark=True),
    "bf16+compile": dict(precision="bf16", fused_norm=False, cudnn_benchmark=False, compile=True),
    "fp32+fused_upsample": dict(precision="fp32", fused_norm=False, cudnn_benchmark=False, fused_upsample=True),
    "bf16+fused_norm+fused_upsample": dict(precision="bf16", fused_norm=True, cudnn_benchmark=False,
                                           fused_upsample=True),
}


def shared_volume(opts: dict) -> dict:
    """A lever's options for the slices of one scan on one network (``volume='shared'``): each slice
    is normalised over itself, which the fused BatchNorm (statistics over the batch) cannot do."""
    return dict(opts, fused_norm=False, volume="shared")


METHOD = ("SelfDiffusion(preset='mri').prepare(y, op) with each lever's options on the anchor's 320x320 "
          "16-coil problem; one call = run.runner.run(1) (a CUDA-graph replay on CUDA). breakdown/*: each part "
          "of the step graphed alone after warm-up steps of the same run; backward = fwd_bwd - fwd. volume/*: "
          "B1 = one slice per step (one network), B<n> = n slices per step on one shared network "
          "(volume='shared': per-slice normalisation, no fused BatchNorm); slices_per_s = B / median_s; volume_speedup = B<n> slices/s over B1.")
COLUMNS = [("name", "name"), ("median ms", "ms"), ("speed-up vs fp32", "speedup_vs_fp32"),
           ("slices/s", "slices_per_s"), ("volume speed-up", "volume_speedup")]


def prepared_run(case: dict, B: int = 1, small: bool = False, **options):
    """The solver's prepared run on ``case`` (B copies of its measurements unless the case has B)."""
    y = case["y"] if case["y"].shape[0] == B else case["y"][:1].expand(B, *case["y"].shape[1:]).contiguous()
    return SelfDiffusion(preset="mri", T=2, K=1, small=small, seed=0, **options).prepare(y, case["op"])


def breakdown_parts(prep) -> dict:
    """Zero-argument closures for the parts of ``prep``'s step (a prepared run), each to be graphed alone."""
    inner = prep.inner
    params = list(prep.net.parameters())
    x_in = inner.x_in
    out0 = inner.out.detach().clone().requires_grad_(True)
    g_out = torch.full_like(x_in, 1e-3)

    def network_fwd():
        inner.forward(x_in)

    def network_fwd_bwd():
        for q in params:
            q.grad = None
        inner.forward(x_in).backward(g_out)

    def adam():
        inner.optimizer.step()

    def operator_loss():
        out0.grad = None
        inner.loss_fn(out0).sum().backward()

    def noise():
        inner.x_in.copy_(inner.noisy())

    return dict(network_fwd=network_fwd, network_fwd_bwd=network_fwd_bwd, adam=adam, operator_loss=operator_loss,
                noise=noise)


def run(b) -> None:
    """Section 'levers': step ms per lever at the anchor's 320² 16-coil case (and a breakdown of
    the slowest and the fastest variant), plus the volume step: B slices on one shared network."""
    dev, cfg = b.device, b.cfg
    case = mri_case(cfg["lever_case"], dev)
    reps, warm = cfg["step_reps"]
    small = cfg["lever_small"]
    timed = {}
    for name, opts in LEVERS.items():
        def body(opts=opts):
            prep = prepared_run(case, small=small, **opts)
            times = b.time(lambda: prep.runner.run(1), reps, warm)
            return times, dict(step_ms=1e3 * statistics.median(times))

        r = b.item("levers", f"levers/{case['name']}/{name}", dict(case=case["name"], small=small, **opts), body)
        if r:
            timed[name] = r
        b.free()
    if not timed:
        return
    base = timed.get("fp32")
    best = min(timed, key=lambda k: timed[k]["median_s"])
    for r in timed.values():
        if base:
            r["speedup_vs_fp32"] = base["median_s"] / r["median_s"]
    b.best_lever = best
    for name in dict.fromkeys(["fp32", best]):
        prep = prepared_run(case, small=small, **LEVERS[name])
        prep.runner.run(warm)  # Adam state and cuDNN choices as in the real step
        for part, fn in breakdown_parts(prep).items():
            def body(fn=fn):
                g = StepGraph(fn, dev, use_graph=dev.type == "cuda", cudnn_benchmark=LEVERS[name]["cudnn_benchmark"])
                return b.time(lambda: g.run(1), reps, warm), {}

            b.item("levers", f"breakdown/{case['name']}/{name}/{part}", dict(case=case["name"], lever=name, part=part),
                   body)
        del prep
        b.free()
    # Volume: B slices of one scan per step on one shared network, against one slice per step.
    B = cfg["volume_B"]
    vcase = mri_case(cfg["lever_case"], dev, batch=B)
    for label, n, shared in (("B1", 1, False), (f"B{B}", B, True)):
        def body(n=n, shared=shared):
            c = vcase if n == B else dict(vcase, y=vcase["y"][:1])
            prep = prepared_run(c, B=n, small=small, **(shared_volume(LEVERS[best]) if shared else LEVERS[best]))
            times = b.time(lambda: prep.runner.run(1), reps, warm)
            return times, dict(slices_per_s=n / statistics.median(times))

        b.item("levers", f"volume/{case['name']}/{label}", dict(case=case["name"], B=n, shared_net=shared, lever=best),
               body)
        b.free()
    one, many = b.find(f"volume/{case['name']}/B1"), b.find(f"volume/{case['name']}/B{B}")
    if one and many:
        many["volume_speedup"] = many["slices_per_s"] / one["slices_per_s"]


def targets(results: list[dict]) -> dict:
    """The issue's step-time and volume targets at the anchor's 320x320 16-coil case."""
    out = {}
    steps = [r for r in results if r["name"].startswith("levers/mri-320x320-16coil/") and "median_s" in r]
    if steps:
        best = min(steps, key=lambda r: r["median_s"])
        out["step_ms[mri-320x320-16coil/unet-paper]"] = dict(target_entry(1e3 * best["median_s"], 2.0, "<="),
                                                              lever=best["name"].rsplit("/", 1)[1])
    vol = next((r for r in results if r["name"].startswith("volume/mri-320x320-16coil/B") and "volume_speedup" in r),
               None)
    if vol:
        out[f"volume_speedup[mri-320x320-16coil/B{vol['params']['B']}]"] = target_entry(vol["volume_speedup"], 1.5, ">=")
    return out
