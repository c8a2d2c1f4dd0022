"""Section 'volume3d': 3-D MRI on the bundled head volume, the way ``fastsd demo --3d --mode both``
runs it: the MNI T1 volume (:func:`fastsd.data3d.mri_volume`), simulated multi-coil k-space with
Poisson-disc phase-encoding sampling (:func:`fastsd.data3d.simulate_acquisition`), then the
zero-filled volume, 3-D SDI (preset 'mri3d') and slice-by-slice 2-D SDI (preset 'mri' on
:meth:`fastsd.ops.MRI3D.slices`, all slices batched as problems of one solve). Each seed is one
``fastsd demo --3d --seed s`` (its mask and its solver seed); quality per seed and over seeds."""
from __future__ import annotations

import time

import torch

from benchmarks.cases import seed_summary, sync
from fastsd.data3d import mri_volume, simulate_acquisition
from fastsd.metrics import magnitude, psnr, ssim
from fastsd.ops.mri import MRI3D
from fastsd.solvers.sdi import SelfDiffusion

METHODS = ("zero-filled", "sdi3d", "sdi2d-slices")

METHOD = ("The MNI T1 volume (fastsd.data3d.mri_volume) at volume3d_shape, volume3d_coils birdcage coils, "
          "Poisson-disc 8x sampling of the phase-encoding plane; seed s = the mask of simulate_acquisition(seed=s) "
          "and the solver seed, as fastsd demo --3d --seed s. zero-filled = op.zero_filled(y); sdi3d = "
          "SelfDiffusion('mri3d').solve(y, op); sdi2d-slices = SelfDiffusion('mri').solve(*op.slices(y)) mapped "
          "back with MRI3D.from_slices; T, K = volume3d_TK, lr = volume3d_lr (None: the preset's), CPU-sized "
          "networks when volume3d_small. wall_s = perf_counter around the solve (synchronised), after one untimed "
          "T=1, K=2 warm-up solve per method; max_memory_gb = torch.cuda.max_memory_allocated during it (CUDA). "
          "PSNR (data range = max of the truth) and SSIM (7x7 uniform window, mean over the slices along D) of the "
          "magnitude volume against the truth's, as fastsd demo --3d reports them. Summary rows: mean/min/max "
          "over the seeds.")
COLUMNS = [("name", "name"), ("wall s", "wall_s"), ("PSNR dB", "psnr"), ("SSIM", "ssim"), ("peak GB", "max_memory_gb"),
           ("mean wall s", "wall_s_mean"), ("mean PSNR", "psnr_mean"), ("min PSNR", "psnr_min"),
           ("max PSNR", "psnr_max"), ("mean SSIM", "ssim_mean")]


def reconstruct(method: str, y: torch.Tensor, op: MRI3D, seed: int, T: int, K: int, lr, small: bool) -> tuple:
    """The volume (1, 2, D, H, W) of ``method`` and its solver info (None for zero-filled)."""
    if method == "zero-filled":
        with torch.no_grad():
            return op.zero_filled(y), None
    kw = dict(T=T, K=K, lr=lr, small=small, seed=seed, device=y.device)
    if method == "sdi3d":
        res = SelfDiffusion("mri3d", **kw).solve(y, op)
        return res.x, res.info
    y2, op2 = op.slices(y)
    res = SelfDiffusion("mri", **kw).solve(y2, op2)
    return MRI3D.from_slices(res.x, y.shape[0]), res.info


def _timed(method: str, y, op, seed: int, cfg: dict) -> dict:
    """One reconstruction: wall time, peak memory on CUDA, solver info."""
    dev = y.device
    T, K = cfg["volume3d_TK"]
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    x, info = reconstruct(method, y, op, seed, T, K, cfg["volume3d_lr"], cfg["volume3d_small"])
    sync(dev)
    out = dict(x=x, wall_s=time.perf_counter() - t0)
    if dev.type == "cuda":
        out["max_memory_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
    if info is not None:
        out.update({k: info[k] for k in ("iterations", "it_per_s", "setup_s", "batch", "params_per_problem",
                                         "cuda_graph")})
    return out


def run(b) -> None:
    cfg, dev = b.cfg, b.device
    shape, coils = tuple(cfg["volume3d_shape"]), cfg["volume3d_coils"]
    T, K = cfg["volume3d_TK"]
    case = f"mri3d-{'x'.join(map(str, shape))}-{coils}coil"
    x_true = mri_volume(shape).to(dev)
    ref = magnitude(x_true)[0].cpu().numpy()
    seed0 = simulate_acquisition(x_true, coils=coils, seed=0)
    for method in METHODS[1:]:  # warm-up (cuDNN/cuFFT/Triton), untimed
        reconstruct(method, *seed0, 0, 1, 2, cfg["volume3d_lr"], cfg["volume3d_small"])
    b.free()
    runs = {m: [] for m in METHODS}
    for seed in range(cfg["volume3d_seeds"]):
        y, op = seed0 if seed == 0 else simulate_acquisition(x_true, coils=coils, seed=seed)
        for method in METHODS:
            def body(method=method, y=y, op=op, seed=seed):
                r = _timed(method, y, op, seed, cfg)
                mag = magnitude(r.pop("x").detach().float())[0].cpu().numpy()
                r.update(psnr=psnr(mag, ref), ssim=ssim(mag, ref))
                return [r["wall_s"]], r

            params = dict(case=case, method=method, shape=list(shape), coils=coils, T=T, K=K, seed=seed,
                          acceleration=float(op.mask.numel() / float(op.mask.sum())))
            rec = b.item("volume3d", f"volume3d/{case}/{method}/seed{seed}", params, body)
            if rec:
                runs[method].append(dict(rec, seed=seed))
            b.free()
    for method, rs in runs.items():
        if rs:
            b.add("volume3d", f"volume3d/{case}/{method}", dict(case=case, method=method, T=T, K=K, summary=True),
                  [r["wall_s"] for r in rs], **seed_summary(rs, ("wall_s", "psnr", "ssim", "max_memory_gb")))
