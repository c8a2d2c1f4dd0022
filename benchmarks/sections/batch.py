"""Section 'batch': throughput of B independent problems (one network each, BatchedNet) on one
MRI case, one inner step per call, for each configured B (and vmapped on CUDA)."""
from __future__ import annotations

import statistics

from benchmarks import cases

METHOD = ("B independent problems (one network copy each, BatchedNet) on the MRI case, one inner step "
          "per call (graphed on CUDA, eager on CPU); slice_steps_per_s = B / median_s.")
COLUMNS = [("name", "name"), ("median ms / step", "ms"), ("slice-steps/s", "slice_steps_per_s"),
           ("vs B=1", "throughput_vs_B1")]


def _net(b, p: dict, case: str, net_kind: str) -> None:
    C, H, W = b.cfg["batch_case"]
    reps, warm = b.cfg["batch_reps"]
    graphed = b.device.type == "cuda"
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
        r = b.item("batch", name, dict(B=B, C=C, H=H, W=W, net=net_kind, vectorize=vec, cuda_graph=graphed), body)
        if r and B == 1 and not vec:
            per_slice_b1 = r["slice_steps_per_s"]
        b.free()


def run(b) -> None:
    C, H, W = b.cfg["batch_case"]
    case = cases.case_name(H, W, C)
    p = cases.mri_problem(1, C, H, W, b.device)
    for net_kind in b.cfg["batch_nets"]:
        if b.over_budget():
            b.skip("batch", f"batch/{case}/{net_kind}", "budget exhausted")
            continue
        _net(b, p, case, net_kind)
        b.free()
