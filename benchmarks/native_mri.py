"""Native (cuFFT LTO callbacks, ``fastsd._C``) vs Triton vs PyTorch reference for the multi-coil
2-D MRI operators, side by side in one run: forward, adjoint, normal, fidelity and DC at 15 coils,
320², one slice (``320``) and a GPU-filling batch (``fill``).

Each op is timed through ``torch.ops.fastsd.*`` (no argument validation, no host syncs) with
``triton.testing.do_bench`` (median) after a warm-up call that builds the cuFFT plans / compiles
the kernels. Bandwidth counts the compulsory traffic (every input read once, every output written
once) plus one read and one write of the k-space spectra per FFT, against the copy bandwidth
measured in the same run. Targets: ``native_speedup_vs_triton[mri_<op>/fill]`` >= 1.5 for
fidelity, forward and adjoint. Without the extension the native rows are absent and the targets
unmeasured (value None).

    python -m benchmarks.native_mri --out gpu-out      # writes gpu-out/native_mri.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import torch

from fastsd import _backend, _native
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.masks import equispaced_mask
from fastsd.reference import mri as R
from fastsd.testing import rel_err

OPS = ("forward", "adjoint", "normal", "fidelity", "dc")
SIZES = {"320": 1, "fill": 64}  # batch of 15-coil 320² slices; 64 makes 0.8 GB of k-space spectra
TARGETS = {"mri_fidelity/fill": 1.5, "mri_forward/fill": 1.5, "mri_adjoint/fill": 1.5}
FFTS = {"forward": 1, "adjoint": 1, "normal": 2, "fidelity": 2, "dc": 2}


def problem(B: int, C: int, H: int, W: int, seed: int = 0) -> dict:
    """Random images, 4x equispaced mask with 20 ACS lines, birdcage maps, y = A x (on CUDA)."""
    g = torch.Generator().manual_seed(seed)
    mask = equispaced_mask((H, W), 4, acs_lines=20).cuda()
    smaps = birdcage_maps(C, (H, W)).to(torch.complex64).cuda()
    x = torch.randn(B, 2, H, W, generator=g).cuda()
    y = R.mri_forward(x, mask, smaps)
    return dict(x=x, y=y, mask=mask, smaps=smaps)


def traffic(op: str, B: int, C: int, H: int, W: int) -> int:
    """Bytes: compulsory traffic plus one read + one write of the spectra per FFT."""
    n = H * W
    img, spec, maps, mask = B * 2 * n * 4, B * C * n * 8, C * n * 8, n * 4
    io = {
        "forward": img + maps + mask + spec,
        "adjoint": spec + mask + maps + img,
        "normal": img + maps + mask + img,
        "fidelity": img + spec + maps + mask + img + B * 4,
        "dc": img + spec + maps + mask + img,
    }[op]
    return io + FFTS[op] * 2 * spec


def call(op: str, p: dict):
    ops, x, y, mask, smaps = torch.ops.fastsd, p["x"], p["y"], p["mask"], p["smaps"]
    return {
        "forward": lambda: ops.mri_forward(x, mask, smaps),
        "adjoint": lambda: ops.mri_adjoint(y, mask, smaps),
        "normal": lambda: ops.mri_normal(x, mask, smaps),
        "fidelity": lambda: ops.mri_fidelity(x, y, mask, smaps),
        "dc": lambda: ops.mri_dc(x, y, mask, smaps, math.inf),
    }[op]


def _flat(out) -> torch.Tensor:
    return torch.cat([t.reshape(-1).to(torch.complex128) for t in out]) if isinstance(out, tuple) else out


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy, bytes read + written per second."""
    import triton.testing

    a = torch.empty(nbytes // 4, device="cuda")
    b = torch.empty_like(a)
    ms = triton.testing.do_bench(lambda: b.copy_(a), return_mode="median")
    return 2 * nbytes / (ms * 1e-3)


def run(sizes=tuple(SIZES), ops=OPS, C: int = 15, H: int = 320, W: int = 320) -> dict:
    import triton.testing

    backends = ["reference", "triton"] + (["native"] if _native.available() else [])
    copy = copy_bandwidth()
    rows, speedups = [], {}
    for size in sizes:
        B = SIZES[size]
        p = problem(B, C, H, W)
        for op in ops:
            ms, outs = {}, {}
            for backend in backends:
                with _backend.use_backend(backend):
                    fn = call(op, p)
                    outs[backend] = fn()  # warm-up: plans, compilation
                    ms[backend] = triton.testing.do_bench(fn, return_mode="median")
                nbytes = traffic(op, B, C, H, W)
                gbps = nbytes / (ms[backend] * 1e-3) / 1e9
                err = rel_err(_flat(outs[backend]), _flat(outs["reference"])) if backend != "reference" else 0.0
                rows.append(dict(op=f"mri_{op}", size=size, backend=backend, B=B, C=C, H=H, W=W, ms=ms[backend],
                                 bytes=nbytes, gbps=gbps, frac_copy=gbps * 1e9 / copy, rel_err_vs_reference=err))
            for a, b in (("native", "triton"), ("native", "reference"), ("triton", "reference")):
                if a in ms:
                    speedups[f"{a}_speedup_vs_{b}[mri_{op}/{size}]"] = ms[b] / ms[a]
            del outs
        del p
        torch.cuda.empty_cache()
    targets = {}
    for case, threshold in TARGETS.items():
        value = speedups.get(f"native_speedup_vs_triton[{case}]")
        ok = None if value is None else value >= threshold
        targets[f"native_speedup_vs_triton[{case}]"] = dict(value=value, threshold=threshold, rule=">=", **{"pass": ok})
    return dict(copy_gbps=copy / 1e9, rows=rows, speedups=speedups, targets=targets)


def environment() -> dict:
    import triton

    return dict(
        gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
        cuda=torch.version.cuda, python=platform.python_version(), native_error=_native.error(),
        fastsd_backend_env=os.environ.get("FASTSD_BACKEND"), time=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )


def markdown(res: dict) -> str:
    lines = [f"copy bandwidth {res['copy_gbps']:.0f} GB/s", "",
             "| op | size | backend | ms | GB/s | of copy | rel err |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['op']} | {r['size']} | {r['backend']} | {r['ms']:.4f} | {r['gbps']:.0f} | "
                     f"{r['frac_copy']:.0%} | {r['rel_err_vs_reference']:.1e} |")
    lines += ["", "| target | value | threshold | pass |", "|---|---|---|---|"]
    for name, t in res["targets"].items():
        value = "—" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"| {name} | {value} | {t['rule']} {t['threshold']} | {t['pass']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu-out", help="directory for native_mri.json / .md")
    ap.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated subset of {list(SIZES)}")
    ap.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {list(OPS)}")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not torch.cuda.is_available():
        result = dict(skipped="needs a CUDA GPU")
    else:
        result = dict(environment=environment(), **run(tuple(args.sizes.split(",")), tuple(args.ops.split(","))))
        md = markdown(result)
        print(md)
        with open(os.path.join(args.out, "native_mri.md"), "w") as f:
            f.write(md + "\n")
    with open(os.path.join(args.out, "native_mri.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
