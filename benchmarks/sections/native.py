"""Section 'native': the native MRI ops (cuFFT LTO callbacks, ``fastsd._C``) next to the Triton
kernels and the PyTorch reference, side by side on the same inputs: forward, adjoint, normal,
fidelity and DC, 15 coils, 320², one slice and a GPU-filling batch. CUDA only; without the
extension the native rows are absent and its targets unmeasured."""
from __future__ import annotations

import statistics

import torch

from benchmarks import cases
from fastsd import _backend, _native
from fastsd.testing import rel_err

OPS = ("forward", "adjoint", "normal", "fidelity", "dc")
FFTS = {"forward": 1, "adjoint": 1, "normal": 2, "fidelity": 2, "dc": 2}
TARGETS = ("mri_fidelity/fill", "mri_forward/fill", "mri_adjoint/fill")  # native over Triton >= 1.5
SPEEDUP_TARGET = 1.5

METHOD = ("Each op through torch.ops.fastsd.<op> (no validation, no host syncs) under fastsd._backend.use_backend("
          "'reference' | 'triton' | 'native'), after one warm-up call (cuFFT plans, NVRTC callbacks, Triton "
          "compilation). Inputs: benchmarks.cases.mri_problem (random images, 4x equispaced mask with 20 ACS lines, "
          "15 birdcage maps, y = A x). "
          "bytes_moved = compulsory traffic (inputs once, outputs once) + one read and one write of the spectra per "
          "FFT; frac_copy_bw against the copy section. rel_err = against the reference's output.")
COLUMNS = [("name", "name"), ("median ms", "ms"), ("GB/s", "gb_per_s"), ("of copy BW", "pct:frac_copy_bw"),
           ("rel err", "rel_err_vs_reference"), ("vs Triton", "speedup_vs_triton"),
           ("vs ref", "speedup_vs_reference")]


def traffic(op: str, B: int, C: int, H: int, W: int) -> int:
    """Compulsory traffic (:func:`benchmarks.cases.mri_bytes`' ``io_bytes``) plus one read and one
    write of the spectra per FFT: what a callback implementation cannot avoid."""
    return cases.mri_bytes(op, B, C, H, W, coil_maps=True)["io_bytes"] + FFTS[op] * 2 * (B * C * H * W * 8)


def run(b) -> None:
    if b.device.type != "cuda":
        b.skip("native", "native", "needs a CUDA GPU")
        return
    backends = ["reference", "triton"]
    if _native.available():
        backends.append("native")
    else:
        b.skip("native", "native/extension", f"fastsd._C not available: {_native.error()}")
    reps, warm = b.cfg["op_reps"]
    C, H, W = 15, 320, 320
    for size, B in b.cfg["native_sizes"]:
        calls = cases.mri_op_calls(cases.mri_problem(B, C, H, W, b.device))
        for op in OPS:
            fn, reference = calls[op]
            nbytes = traffic(op, B, C, H, W)
            with torch.no_grad():
                want = reference()
            timed = {}
            for backend in backends:
                def body(backend=backend, fn=fn, want=want, nbytes=nbytes, timed=timed):
                    with torch.no_grad(), _backend.use_backend(backend):
                        err = rel_err(fn(), want)
                        times = b.time(fn, reps, warm)
                    med = statistics.median(times)
                    d = dict(b.bandwidth(nbytes, times), rel_err_vs_reference=err)
                    for other in ("triton", "reference"):
                        if other in timed and other != backend:
                            d[f"speedup_vs_{other}"] = timed[other] / med
                    return times, d

                r = b.item("native", f"native/mri_{op}/{size}/{backend}",
                           dict(op=f"mri_{op}", backend=backend, B=B, C=C, H=H, W=W, bytes_moved=nbytes), body)
                if r:
                    timed[backend] = r["median_s"]
            del want
        del calls
        b.free()


def targets(results: list[dict]) -> dict:
    """The issue's native-over-Triton speed-ups at the GPU-filling size (None: not measured)."""
    out = {}
    for case in TARGETS:
        op, size = case.split("/")
        r = next((r for r in results if r["name"] == f"native/{op}/{size}/native" and "speedup_vs_triton" in r), None)
        out[f"native_speedup_vs_triton[{case}]"] = cases.target_entry(r and r["speedup_vs_triton"], SPEEDUP_TARGET,
                                                                      ">=")
    return out
