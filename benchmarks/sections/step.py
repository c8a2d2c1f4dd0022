"""Section 'step': one SDI inner step, eager with the reference backend, eager fused, and fused +
CUDA graph, on MRI problems with the configured networks; plus the network's forward + backward
alone, whose time subtracted from the step's is the non-network work."""
from __future__ import annotations

import statistics

from benchmarks import cases
from fastsd._backend import use_backend

STEP_SPEEDUP = 8.0  # target: graphed single-coil step vs the eager reference step
NON_NETWORK_SHARE = 0.15  # target: share of a graphed step spent outside the network

METHOD = ("One SDI inner step as the solver builds it for MRI (x_in = x_hat + sigma*eps fixed for the noise "
          "level unless resample_noise; U-Net forward; loss sqrt(||M(FSx-y)||^2) + 1e-4 TV through the fused "
          "fidelity op; backward; Adam lr 1e-3). reference-eager: eager with use_backend('reference'); "
          "fused-eager: eager with the fused ops; fused-graph: StepGraph (CUDA graph replay, fused capturable "
          "Adam; the eager steps use the default foreach Adam). "
          "net-fwd-bwd-*: the same BatchedNet forward on a fixed input plus backward with a fixed upstream "
          "gradient, no operator/loss/noise/optimizer, eager or graphed. non_network_s = step median - "
          "net-fwd-bwd median of the same execution mode (eager for eager steps, graph for the graphed "
          "step); non_network_share = non_network_s / step median.")
COLUMNS = [("name", "name"), ("median ms", "ms"), ("speedup vs ref eager", "speedup_vs_reference_eager"),
           ("speedup vs fused eager", "speedup_vs_fused_eager"), ("non-network ms", "ms:non_network_s"),
           ("non-network share", "pct:non_network_share")]


def _group(b, p: dict, net, net_kind: str, resample: bool, net_only: dict) -> None:
    """reference-eager, fused-eager, fused-graph (CUDA) for one (case, net, resample) + shares."""
    reps, warm = b.cfg["step_reps"]
    prefix = f"step/{cases.case_name(p['H'], p['W'], p['C'])}/{net_kind}" + ("/resample" if resample else "")
    base = dict(B=1, C=p["C"], H=p["H"], W=p["W"], net=net_kind,
                params_per_problem=sum(q.numel() for q in net.parameters()), resample_noise=resample)

    def derived(times, mode, **baselines):
        d = {}
        ref = net_only.get(mode)
        if ref is not None:
            nn_s = statistics.median(times) - ref["median_s"]
            d.update(non_network_s=nn_s, non_network_share=nn_s / statistics.median(times))
        for key, r in baselines.items():
            if r:
                d[f"speedup_vs_{key}"] = r["median_s"] / statistics.median(times)
        return d

    holder = {}  # one eager runner for the reference and the fused eager step

    def eager_runner():
        if "eager" not in holder:
            holder["eager"] = cases.sdi_step(p, net, graphed=False, resample_noise=resample)[0]
        return holder["eager"]

    def ref_body():
        runner = eager_runner()
        with use_backend("reference"):
            times = b.time(lambda: runner.run(1), reps, warm)
        return times, derived(times, "eager")

    r_ref = b.item("step", f"{prefix}/reference-eager",
                   dict(base, mode="reference-eager", backend="reference", cuda_graph=False), ref_body)

    def fused_body():
        runner = eager_runner()
        times = b.time(lambda: runner.run(1), reps, warm)
        return times, derived(times, "eager", reference_eager=r_ref)

    r_fused = b.item("step", f"{prefix}/fused-eager",
                     dict(base, mode="fused-eager", backend="auto", cuda_graph=False), fused_body)
    holder.clear()
    b.free()
    if b.device.type != "cuda":
        b.skip("step", f"{prefix}/fused-graph", "CUDA graphs need a CUDA device")
        return

    def graph_body():
        runner = cases.sdi_step(p, net, graphed=True, resample_noise=resample)[0]
        times = b.time(lambda: runner.run(1), reps, warm)
        return times, derived(times, "graph", reference_eager=r_ref, fused_eager=r_fused)

    b.item("step", f"{prefix}/fused-graph",
           dict(base, mode="fused-graph", backend="auto", cuda_graph=True, adam_capturable=True), graph_body)
    b.free()


def _net_only(b, p: dict, net, base: dict, prefix: str) -> dict:
    """The network alone (forward + backward), eager and (CUDA) graphed: mode -> record."""
    reps, warm = b.cfg["step_reps"]
    out = {}
    for mode in ("eager", "graph") if b.device.type == "cuda" else ("eager",):
        def body(mode=mode):
            runner = cases.net_fwd_bwd(p, net, graphed=mode == "graph")
            return b.time(lambda: runner.run(1), reps, warm), {}

        r = b.item("step", f"{prefix}/net-fwd-bwd-{mode}",
                   dict(base, mode=f"net-fwd-bwd-{mode}", cuda_graph=mode == "graph"), body)
        if r:
            out[mode] = r
        b.free()
    return out


def run(b) -> None:
    nets = {}
    for C, H, W in b.cfg["step_cases"]:
        case = cases.case_name(H, W, C)
        try:
            p = cases.mri_problem(1, C, H, W, b.device)
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
            except Exception as exc:  # noqa: BLE001
                b.error("step", f"step/{case}/{net_kind}", {}, exc)
                continue
            net = nets[net_kind]
            net_only = _net_only(b, p, net, dict(B=1, C=C, H=H, W=W, net=net_kind), f"step/{case}/{net_kind}")
            for resample in (False, True) if (C, H, W) in b.cfg["resample_cases"] else (False,):
                _group(b, p, net, net_kind, resample, net_only)
        p = None
        b.free()


def targets(results: list[dict]) -> dict:
    out = {}
    for r in results:
        if r["section"] != "step" or "median_s" not in r or r["params"].get("mode") != "fused-graph":
            continue
        name = r["name"]
        if r["params"].get("C") == 1:
            out[f"step_graph_speedup_vs_reference_eager[{name}]"] = cases.target_entry(
                r.get("speedup_vs_reference_eager"), STEP_SPEEDUP, ">=")
        out[f"non_network_share[{name}]"] = cases.target_entry(r.get("non_network_share"), NON_NETWORK_SHARE, "<=")
    return out
