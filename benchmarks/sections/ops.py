"""Section 'ops': the operator ops ``torch.ops.fastsd.{mri_forward, mri_adjoint, mri_fidelity, mri_dc,
noisy_input, masked_fidelity}`` next to their plain-PyTorch references at a small size and a
GPU-filling size, bytes counted explicitly, GB/s and fraction of the copy bandwidth; on CUDA also
the three Triton kernels of the MRI pipeline alone. (``mri_normal`` and ``gaussian_noise`` share
those ops' kernels; the network's fused layers ``bn_relu`` and ``upcat`` are timed inside the
network step by the 'levers' section.)"""
from __future__ import annotations

import statistics

import torch

from benchmarks import cases

BANDWIDTH_FRACTION = 0.70  # target: fused ops at 'fill' sizes reach this share of the copy bandwidth

METHOD = ("fused = torch.ops.fastsd.<op> (Triton on CUDA; on CPU the same reference behind the custom op), "
          "reference = fastsd.reference.<module>.<op> on the same inputs, both under no_grad. bytes_moved is "
          "the DRAM traffic of the fused pipeline: each Triton kernel reads its operands once and writes its "
          "output once, each cuFFT call counts as one read + one write of the spectra (a lower bound); "
          "io_bytes is the compulsory traffic (inputs once, outputs once). gb_per_s = bytes_moved / median_s "
          "for both implementations (so their ratio is the speed ratio); frac_copy_bw = gb_per_s / copy "
          "bandwidth. kernel_* entries time one Triton kernel of the MRI pipeline alone (exact bytes). "
          "'small' sizes stay in L2 and are launch-bound; only 'fill' sizes (operands well above L2) are "
          "held against the copy-bandwidth target.")
COLUMNS = [("name", "name"), ("bytes", "p:bytes_moved"), ("median ms", "ms"), ("GB/s", "gb_per_s"),
           ("of copy BW", "pct:frac_copy_bw"), ("speedup vs ref", "speedup_vs_reference")]


def _time_case(b, c: cases.OpCase) -> None:
    """The reference (if any), then the fused op, on the same inputs."""
    reps, warm = b.cfg["op_reps"]
    params = dict(c.params, bytes_moved=c.bytes_moved, io_bytes=c.io_bytes)

    def derived(times):
        return dict(b.bandwidth(c.bytes_moved, times), io_gb_per_s=c.io_bytes / statistics.median(times) / 1e9)

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


def _group(b, name: str, params: dict, build) -> None:
    """Time the cases ``build()`` yields; a failure to build them is recorded under ``name``."""
    if b.over_budget():
        b.skip("ops", name, "budget exhausted")
        return
    try:
        for c in build():
            _time_case(b, c)
    except Exception as exc:  # noqa: BLE001 - building the case failed
        b.error("ops", name, params, exc)
    b.free()


def run(b) -> None:
    dev = b.device
    with torch.no_grad():
        for size, (B, C, H, W) in b.cfg["ops_mri"]:
            def mri(B=B, C=C, H=H, W=W, size=size):  # lazily: the kernels' inputs after the ops are timed
                yield from cases.mri_op_cases(B, C, H, W, dev, size)
                if dev.type == "cuda" and size == "fill":
                    yield from cases.mri_kernel_cases(B, C, H, W, dev, size)

            _group(b, f"ops/mri/{size}", dict(B=B, C=C, H=H, W=W), mri)
        for size, shape in b.cfg["ops_elem"]:
            _group(b, f"ops/elementwise/{size}", dict(shape=list(shape)),
                   lambda: cases.elementwise_op_cases(shape, dev, size))


def targets(results: list[dict]) -> dict:
    return {f"bandwidth_fraction[{r['name']}]": cases.target_entry(r.get("frac_copy_bw"), BANDWIDTH_FRACTION, ">=")
            for r in results
            if r["section"] == "ops" and "median_s" in r and r["name"].endswith("/fill/fused")}
