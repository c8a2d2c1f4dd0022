"""Section 'deepinv': per-call cost of fastsd's drop-in deepinv physics against deepinv's own
classes (same constructor arguments, same inputs), op by op. Needs deepinv (run from
``.venv-deepinv``: ``python -m benchmarks.run --only deepinv``)."""
from __future__ import annotations

import statistics
import time

import torch

from benchmarks.cases import sync, target_entry
from fastsd.testing import rel_err

CLASSES = ("Inpainting", "MRI", "MultiCoilMRI", "BlurFFT", "Downsampling")
OPS = ("A", "A_adjoint", "A_adjoint_A", "prox_l2", "A_dagger")
COILS = 8
GAMMA = 0.5

METHOD = ("For each class, batch B in deepinv_batches and op: fastsd.interop.deepinv.<class> and "
          "deepinv.physics.<class> built with the same arguments (128 x 128 float32 by default, deepinv_size): "
          "Inpainting of 3-channel images with a random 50 % pixel mask; MRI with a 4x equispaced column mask plus "
          "16 centre columns; MultiCoilMRI with that mask and 8 random complex64 coil maps; BlurFFT with "
          "deepinv's gaussian_blur(sigma=2) on 3 channels; Downsampling with filter='bicubic', factor 2, circular "
          "padding. Inputs: x uniform (B, C, H, W), y = deepinv's A of another uniform image, prox_l2 at "
          "gamma = 0.5; ops that the class lacks are left out (A_dagger of MultiCoilMRI and Downsampling and "
          "prox_l2 of MultiCoilMRI are deepinv's iterative solvers: included). Timing: deepinv_op_reps[1] "
          "warm-up calls of each (one where a call takes over a tenth of deepinv_max_item_s), then pairs of calls (deepinv's, then fastsd's, each timed alone with "
          "perf_counter, device synchronised; fewer pairs for slow ops so that an item stays within about "
          "deepinv_max_item_s). deepinv_ms / fastsd_ms: medians of the calls; *_min_ms: their minima; speedup: "
          "the median over the pairs of deepinv's time / fastsd's time (each pair ran back to back, so it shares the "
          "machine's load); speedup_min: deepinv's minimum / fastsd's minimum, the cost of each without interference "
          "(on a shared or throttled CPU, where a call can be descheduled for longer than it runs, the figure the "
          "targets use); rel_err: ||fastsd - deepinv|| / ||deepinv|| of the outputs; path: "
          "physics.fastsd_path after fastsd's call ('direct' on CPU, 'fastsd' = fused ops, 'deepinv' = deepinv's "
          "own code). One torch thread on CPU.")
COLUMNS = [("name", "name"), ("path", "path"), ("deepinv ms", "deepinv_ms"), ("fastsd ms", "fastsd_ms"),
           ("deepinv min ms", "deepinv_min_ms"), ("fastsd min ms", "fastsd_min_ms"), ("speedup", "speedup"), ("speedup (min)", "speedup_min"),
           ("pairs", "pairs"), ("rel err", "rel_err")]


def build(module, name: str, size: int, device):
    """``module.<name>`` (deepinv.physics or fastsd.interop.deepinv) for the benchmark problem and
    the image shape (without batch) it takes."""
    import deepinv as dinv

    g = torch.Generator().manual_seed(0)
    col = torch.zeros(size, size)
    col[:, ::4] = 1
    col[:, size // 2 - 8: size // 2 + 8] = 1
    if name == "Inpainting":
        mask = (torch.rand(3, size, size, generator=g) > 0.5).float()
        return module.Inpainting(img_size=(3, size, size), mask=mask, device=device), (3, size, size)
    if name == "MRI":
        return module.MRI(mask=col, img_size=(size, size), device=device), (2, size, size)
    if name == "MultiCoilMRI":
        maps = torch.randn(COILS, size, size, dtype=torch.complex64, generator=g)
        return module.MultiCoilMRI(mask=col, coil_maps=maps, img_size=(size, size), device=device), (2, size, size)
    if name == "BlurFFT":
        filt = dinv.physics.functional.gaussian_blur(sigma=(2.0, 2.0))
        return module.BlurFFT(img_size=(3, size, size), filter=filt, device=device), (3, size, size)
    if name == "Downsampling":
        return module.Downsampling(img_size=(3, size, size), filter="bicubic", factor=2, padding="circular",
                                   device=device), (3, size, size)
    raise KeyError(name)


def _calls(physics, x, y, z) -> dict:
    calls = dict(A=lambda: physics.A(x), A_adjoint=lambda: physics.A_adjoint(y),
                 A_adjoint_A=lambda: physics.A_adjoint_A(x), prox_l2=lambda: physics.prox_l2(z, y, GAMMA),
                 A_dagger=lambda: physics.A_dagger(y))
    return {op: fn for op, fn in calls.items() if hasattr(physics, op)}


def _pairs(b, ref, ours, reps: int, warmup: int) -> tuple[list[float], list[float]]:
    """Per-call seconds of deepinv's and fastsd's call, alternating."""
    dev = b.device

    def timed(fn):
        sync(dev)
        t = time.perf_counter()
        fn()
        sync(dev)
        return time.perf_counter() - t

    one = timed(ref) + timed(ours)  # the first warm-up pair; slow ops (iterative solvers) get no more
    for _ in range(warmup - 1 if one < 0.1 * b.cfg["deepinv_max_item_s"] else 0):
        ref(), ours()
    reps = int(max(3, min(reps, b.cfg["deepinv_max_item_s"] / max(one, 1e-9))))
    times = [(timed(ref), timed(ours)) for _ in range(reps)]
    return [t for t, _ in times], [t for _, t in times]


def run(b) -> None:
    import warnings

    import deepinv as dinv

    from fastsd.interop import deepinv as fi

    warnings.filterwarnings("ignore", category=UserWarning, module="deepinv")
    dev, size = b.device, b.cfg["deepinv_size"]
    reps, warmup = b.cfg["deepinv_op_reps"]
    for name in CLASSES:
        ref, shape = build(dinv.physics, name, size, dev)
        ours, _ = build(fi, name, size, dev)
        for B in b.cfg["deepinv_batches"]:
            g = torch.Generator().manual_seed(B)
            x, z, x2 = (torch.rand((B,) + shape, generator=g).to(dev) for _ in range(3))
            with torch.no_grad():
                y = ref.A(x2)
            want, got = _calls(ref, x, y, z), _calls(ours, x, y, z)
            for op in OPS:
                if op not in want:
                    continue

                def body(op=op):
                    with torch.no_grad():
                        t_ref, t_ours = _pairs(b, want[op], got[op], reps, warmup)
                        err = rel_err(got[op](), want[op]())
                    ratios = [r / o for r, o in zip(t_ref, t_ours)]
                    return t_ours, dict(deepinv_ms=1e3 * statistics.median(t_ref), fastsd_ms=1e3 * statistics.median(t_ours),
                                        deepinv_min_ms=1e3 * min(t_ref), fastsd_min_ms=1e3 * min(t_ours),
                                        speedup=statistics.median(ratios), speedup_min=min(t_ref) / min(t_ours),
                                        pairs=len(ratios), rel_err=err,
                                        path=ours.fastsd_path, deepinv_times_s=t_ref)

                params = dict(cls=name, op=op, batch=B, shape=list((B,) + shape), device=dev.type,
                              coils=COILS if name == "MultiCoilMRI" else None)
                b.item("deepinv", f"deepinv/{name}/{op}/{dev.type}/B{B}", params, body)
        b.free()


def targets(results: list[dict]) -> dict:
    """fastsd's class at least as fast as deepinv's, per class, op, device and batch (ratio of the
    minima on CPU, of the medians on CUDA, where the timer is not descheduled)."""
    def value(r):
        return r.get("speedup_min") if r["params"]["device"] == "cpu" else r.get("speedup")

    return {f"deepinv_op_speedup[{r['name'].split('/', 1)[1]}]": target_entry(value(r), 1.0, ">=")
            for r in results if r["section"] == "deepinv" and "median_s" in r}
