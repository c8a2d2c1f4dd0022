"""3-D MRI: ``fastsd demo --3d`` and ``fastsd reconstruct INPUT --task mri3d``.

``fastsd demo --3d`` reconstructs the MNI ICBM152 T1 head volume that nilearn's wheel ships
(:func:`fastsd.data3d.mri_volume`) from simulated 12-coil k-space with Poisson-disc 8x sampling of
the phase-encoding plane (24x24 calibration box): on a GPU at the paper's 160x160x128 with the
paper's 3-D U-Net and the 'mri3d' preset (T=40, K=50, lr 1e-3), on CPU a 32x40x32 volume with
the CPU-sized network and T=10, K=20, lr 3e-3.

``fastsd reconstruct INPUT --task mri3d`` takes a NIfTI volume (``.nii`` / ``.nii.gz``) or a real
``.npy`` volume (the ground truth: k-space simulated as above), or measured k-space (C, D, H, W)
in a complex ``.npy`` or an ``.h5`` file with a ``kspace`` dataset: fully sampled k-space is
undersampled retrospectively, undersampled k-space is used as it is (no ground truth then); coil
maps come from the calibration box.

``--mode 3d`` (default) runs 3-D self-diffusion (:class:`~fastsd.nets.UNet3d`, preset 'mri3d');
``--mode slices`` runs 2-D self-diffusion slice by slice after a 1-D inverse FFT along the readout
(:meth:`fastsd.ops.MRI3D.slices`, all slices batched as problems of one solve); ``--mode both``
runs both. Outputs in ``--out``: ``<name>.nii.gz`` (magnitude) and ``<name>.npy`` (complex) for
the zero-filled and each reconstruction, ``slices.png`` (orthogonal central slices of truth /
zero-filled / reconstructions / errors) and ``metrics.json`` (PSNR, SSIM averaged over the slices
along D, NMSE on magnitudes; runtimes). NIfTI needs nibabel (``data`` extra), the demo volume the
``data3d`` extra (nilearn).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fastsd.cli import sanity
from fastsd.cli.common import UsageError, device
from fastsd.cli.results import ResultFolder
from fastsd.figures import volume_slices_figure
from fastsd.limits import check_float32_range, check_input_size
from fastsd.outputs import quality, to_json

__all__ = ["run"]

CPU_SHAPE = (32, 40, 32)
CPU_DEMO = dict(T=10, K=20, lr=3e-3)  # the demo's solver settings on CPU (the presets' on CUDA)


# -- data -------------------------------------------------------------------------------------


def _resample(vol: torch.Tensor, shape) -> torch.Tensor:
    """(2, D, H, W) -> (2, *shape), trilinear."""
    if shape is None or tuple(vol.shape[-3:]) == tuple(shape):
        return vol
    return torch.nn.functional.interpolate(vol[None], size=tuple(shape), mode="trilinear", align_corners=False)[0]


def _volume_input(a: np.ndarray, shape) -> torch.Tensor:
    """A real or complex (D, H, W) volume -> (1, 2, D, H, W) with max magnitude 1."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    x = torch.stack([t.real.float(), t.imag.float()]) if t.is_complex() else torch.stack([t.float(), torch.zeros_like(t, dtype=torch.float32)])
    x = _resample(x, shape)
    scale = float(x.norm(dim=0).max())
    if not scale > 0:
        raise UsageError("the volume is all zeros")
    return (x / scale)[None]


def _kspace_problem(k: torch.Tensor, args):
    """(y, op, truth or None) from measured k-space (C, D, H, W)."""
    from fastsd.data3d import calib_side, calibration_maps, phase_encoding_mask
    from fastsd.ops.mri import MRI3D, coil_combined

    C, D, H, W = k.shape
    if args.size:
        raise UsageError("--size resamples volumes, not k-space")
    hits = (k.abs() > 0).any(0).sum(0)  # (H, W): readout positions with data
    sampled = (hits > 0).float()  # the phase-encoding pattern
    if float((hits[hits > 0] < D).float().mean()) > 0.01:
        raise UsageError("the k-space sampling varies along the readout (dimension D); "
                          "--task mri3d needs whole readout lines")
    full = float(sampled.mean()) > 0.95
    calib = calib_side(H, W, args.calib)
    if full:
        mask = phase_encoding_mask(H, W, args.acceleration, calib, args.mask, args.seed)
    else:
        mask = sampled
    smaps = None if C == 1 else calibration_maps(k, mask, calib)
    op = MRI3D(mask, smaps)
    truth = coil_combined(k, smaps) if full else None
    y = (mask * k)[None]
    scale = float(op.adjoint(y).norm(dim=1).max())
    return y / scale, op, None if truth is None else truth / scale


def _load_problem(args, dev):
    """(y, op, truth, description) for the demo or the input file."""
    from fastsd.data3d import load_kspace3d, load_nifti, mri_volume, simulate_acquisition

    shape = tuple(args.size) if args.size else None
    if args.command == "demo":
        shape = shape or (CPU_SHAPE if dev.type == "cpu" else None)
        x = mri_volume(shape or (160, 160, 128))
        desc = "MNI ICBM152 2009a T1 template (nilearn)"
    else:
        path = Path(args.input)
        name = path.name.lower()
        if name.endswith(".npy"):
            check_input_size(path)  # from the header, before decoding
        if name.endswith((".nii", ".nii.gz")):
            vol, _ = load_nifti(path)
            x = _volume_input(vol, shape)
        elif name.endswith((".h5", ".hdf5")) or (name.endswith(".npy") and np.iscomplexobj(np.load(path, mmap_mode="r"))):
            y, op, truth = _kspace_problem(load_kspace3d(path), args)
            return y.to(dev), op.to(dev), None if truth is None else truth.to(dev), str(path)
        elif name.endswith(".npy"):
            a = np.load(path, allow_pickle=False)
            if a.ndim != 3:
                raise UsageError(f"{path}: a real .npy volume must have shape (D, H, W), got {a.shape}")
            check_float32_range(a, str(path))
            x = _volume_input(a, shape)
        else:
            raise UsageError(f"{path}: expected a .nii, .nii.gz, .npy or .h5 file")
        desc = str(path)
    y, op = simulate_acquisition(x, coils=args.coils, acceleration=args.acceleration, calib=args.calib,
                                 mask=args.mask, seed=args.seed)
    return y.to(dev), op.to(dev), x.to(dev), desc


# -- solve ------------------------------------------------------------------------------------


class _Progress:
    """One line per tenth of the noise levels: loss and, with a ground truth, the volume's PSNR."""

    def __init__(self, name: str, T: int, quiet: bool, truth: np.ndarray | None, to_volume):
        self.name, self.T, self.quiet, self.truth, self.to_volume = name, T, quiet, truth, to_volume
        self.t0 = time.perf_counter()

    def __call__(self, it: int, state: dict):
        from fastsd.metrics import psnr

        level = state["level"] + 1
        if self.quiet or not (level == self.T or level % max(1, self.T // 10) == 0):
            return
        q = "" if self.truth is None else f"  PSNR {psnr(_magnitude(self.to_volume(state['x'])), self.truth):.2f} dB"
        print(f"{self.name}: level {level}/{self.T}  loss {state['loss']:.4g}{q}  "
              f"{time.perf_counter() - self.t0:.1f} s", flush=True)


def _solve(args, mode: str, y, op, truth, dev):
    """Run 3-D SDI on the volume, or 2-D SDI on its readout slices; returns (volume, result)."""
    from fastsd.ops.mri import MRI3D
    from fastsd.solvers.sdi import SelfDiffusion

    small = args.small if args.small is not None else dev.type == "cpu"
    T, K, lr = args.T, args.K, args.lr
    if args.command == "demo" and dev.type == "cpu":  # a CPU-sized run of the demo
        T, K, lr = T or CPU_DEMO["T"], K or CPU_DEMO["K"], lr or CPU_DEMO["lr"]
    kw = dict(small=small, seed=args.seed, device=dev, T=T, K=K, lr=lr, resample_noise=args.resample_noise,
              width=args.width, depth=args.depth)
    ref = None if truth is None else _magnitude(truth)
    if mode == "3d":
        solver = SelfDiffusion("mri3d", **kw)
        res = solver.solve(y, op, callback=_Progress("3-D SDI", solver.config(op)["T"], args.quiet, ref, lambda v: v))
        return res.x, res
    y2, op2 = op.slices(y)
    solver = SelfDiffusion("mri", **kw)
    B = y.shape[0]
    res = solver.solve(y2, op2, callback=_Progress("2-D SDI (slices)", solver.config(op2)["T"], args.quiet, ref,
                                                   lambda v: MRI3D.from_slices(v, B)))
    return MRI3D.from_slices(res.x, B), res


# -- outputs ----------------------------------------------------------------------------------


def _magnitude(x: torch.Tensor) -> np.ndarray:
    """The first volume's magnitude (D, H, W), for metrics, NIfTI files and figures."""
    from fastsd.metrics import magnitude

    return magnitude(x.detach().float())[0].cpu().numpy()


def run(args) -> int:
    """The 3-D command: load or simulate, solve in each mode, write the result folder atomically."""
    from fastsd.data3d import save_nifti

    dev = device(args.device)
    t0 = time.perf_counter()
    path = Path(args.input) if args.command == "reconstruct" else None
    with ResultFolder(Path(args.out), args.overwrite) as folder, sanity.naming(path, folder.tmp):
        out = folder.tmp
        y, op, truth, desc = _load_problem(args, dev)
        ref = None if truth is None else _magnitude(truth)
        vols = {"zero_filled": op.zero_filled(y)}
        metrics = {"task": "mri3d", "data": desc, "volume": list(y.shape[-3:]), "coils": op.n_coils,
                   "acceleration": float(op.mask.numel() / float(op.mask.sum())), "device": str(dev), "runs": {}}
        for mode in (("3d", "slices") if args.mode == "both" else (args.mode,)):
            name = "sdi3d" if mode == "3d" else "sdi2d_slices"
            x, res = _solve(args, mode, y, op, truth, dev)
            sanity.check_result(res, y, op, f"the {name} result", x)  # non-finite or diverged: nothing written
            vols[name] = x
            info = res.info
            metrics["runs"][name] = {k: info[k] for k in ("T", "K", "lr", "iterations", "runtime_s", "setup_s",
                                                          "it_per_s", "batch", "params_per_problem", "cuda_graph",
                                                          "small", "width", "depth")}
            if dev.type == "cuda":
                metrics["runs"][name]["max_memory_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
        for name, x in vols.items():
            mag = _magnitude(x)
            save_nifti(out / f"{name}.nii.gz", mag)
            np.save(out / f"{name}.npy", torch.complex(x[0, 0], x[0, 1]).detach().cpu().numpy())
            if ref is not None:
                metrics[name] = quality(mag, ref)
        if ref is not None:
            save_nifti(out / "truth.nii.gz", ref)
        volume_slices_figure(out / "slices.png", [(n, _magnitude(x)) for n, x in vols.items()], ref)
        metrics["wall_time_s"] = time.perf_counter() - t0
        (out / "metrics.json").write_text(to_json(metrics))
    for name in vols:
        q, solved = metrics.get(name), metrics["runs"].get(name)
        line = f"{name:>13}:"
        if q:
            line += f" PSNR {q['psnr']:.2f} dB  SSIM {q['ssim']:.4f}  NMSE {q['nmse']:.4g}"
        if solved:
            line += f"  ({solved['iterations']} iterations, {solved['runtime_s']:.1f} s)"
        print(line)
    print(f"outputs in {folder.path}")
    return 0
