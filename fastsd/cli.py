"""Command line: ``fastsd demo`` and ``fastsd reconstruct``.

``fastsd demo`` reconstructs the real 256x256 head MRI slice bundled with matplotlib from
simulated 4x-undersampled k-space (equispaced lines + 20 ACS lines) with self-diffusion and a
CPU-sized network, and writes PNGs (truth, zero-filled, SDI, error maps) and ``metrics.json``.

``fastsd reconstruct INPUT --task mri|inpaint|deblur|sr|denoise`` runs SDI on an image (.npy /
.png: treated as ground truth, measurements simulated with the chosen operator) or on fastMRI
k-space (.h5: the file's k-space retrospectively undersampled). ``--measured`` (denoise) takes
the input as the noisy measurement itself. ``INPUT`` may be a directory: every .npy/.png/.h5
file in it is reconstructed into ``OUT/<stem>/`` and ``OUT/summary.json`` lists them all; under
``torchrun --nproc_per_node=N -m fastsd.cli reconstruct DIR ...`` the files are sharded over
the N ranks (:mod:`fastsd.distributed`). Bad files or options exit with status 2 and a
one-line message (in a directory run, a bad file is recorded and the others go on).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2 (argparse's own convention)
        self.exit(2, f"fastsd: error: {message}\n")


class _UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


# -- progress ---------------------------------------------------------------------------------


class _Progress:
    """tqdm bar over all inner iterations when available, else one line per noise level."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.bar = total, enabled, None
        self.last = 0
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc="SDI", unit="it", file=sys.stderr)
            except ImportError:
                pass

    def __call__(self, it: int, state: dict):
        if not self.enabled:
            return None
        info = {"sigma": f"{state['sigma']:.3f}", "loss": f"{state['loss']:.4g}"}
        if "psnr" in state:
            info["psnr"] = f"{state['psnr']:.2f}"
        if self.bar is not None:
            self.bar.update(it - self.last)
            self.bar.set_postfix(info)
        else:
            print(f"SDI {it}/{self.total} " + " ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr, flush=True)
        self.last = it
        return None

    def close(self):
        if self.bar is not None:
            self.bar.close()


# -- helpers ----------------------------------------------------------------------------------


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise _UsageError(f"unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise _UsageError("--device cuda requested but no CUDA device is available")
    return dev


def _save_png(path: Path, img: np.ndarray, vmax: float | None = None, cmap: str = "gray") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:  # (C, H, W) colour image
        img = np.clip(np.moveaxis(img, 0, -1) / (vmax or 1.0), 0, 1)
        plt.imsave(path, img)
    else:
        plt.imsave(path, img, cmap=cmap, vmin=0.0, vmax=vmax if vmax is not None else float(img.max() or 1.0))


def _quality(x: np.ndarray, ref: np.ndarray) -> dict:
    from fastsd.metrics import nmse, psnr, ssim

    x2, r2 = (x, ref) if x.ndim == 3 else (x[None], ref[None])
    return {"psnr": psnr(x, ref), "ssim": ssim(x2, r2) if min(x.shape[-2:]) >= 7 else None, "nmse": nmse(x, ref)}


def _display(x: torch.Tensor, task: str) -> np.ndarray:
    """One problem's image for metrics/PNGs: magnitude for MRI, (C,H,W) or (H,W) otherwise."""
    from fastsd.metrics import magnitude

    x = x.detach().cpu()
    if task == "mri":
        return magnitude(x)[0].numpy()
    x = x[0].numpy()
    return x[0] if x.shape[0] == 1 else x


def _solver_kwargs(args, preset: str, device: torch.device) -> dict:
    small = args.small if args.small is not None else device.type == "cpu"
    kw = dict(preset=preset, small=small, seed=args.seed, device=device,
              resample_noise=args.resample_noise)
    for name in ("T", "K", "lr"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return kw


def _run_sdi(y, op, kw: dict, x_true, progress: bool):
    from fastsd.api import solve
    from fastsd.solvers.sdi import SelfDiffusion

    cfg = SelfDiffusion(**kw).config(op)
    bar = _Progress(int(cfg["T"]) * int(cfg["K"]), progress)
    try:
        return solve(y, op, "sdi", x_true=x_true, callback=bar, **kw)
    finally:
        bar.close()


def _write_outputs(out: Path, task: str, truth, baseline, recon, result, extra: dict) -> dict:
    """PNGs, recon.npy and metrics.json in ``out``; returns the metrics dict."""
    out.mkdir(parents=True, exist_ok=True)
    rec, base = _display(recon, task), _display(baseline, task)
    ref = None if truth is None else _display(truth, task)
    vmax = float(ref.max()) if ref is not None else float(max(rec.max(), 1e-12))
    _save_png(out / "reconstruction.png", rec, vmax)
    _save_png(out / "baseline.png", base, vmax)
    arr = recon.detach().cpu()[0]
    if task == "mri":
        arr = torch.complex(arr[0], arr[1])
    elif arr.shape[0] == 1:
        arr = arr[0]
    np.save(out / "reconstruction.npy", arr.numpy())
    metrics = {"task": task, **extra, "runtime_s": result.info["runtime_s"],
               "iterations": result.info["iterations"], "it_per_s": result.info["it_per_s"],
               "config": {k: v for k, v in result.info.items() if isinstance(v, (int, float, str, bool, type(None)))}}
    if ref is not None:
        _save_png(out / "truth.png", ref, vmax)
        err_max = 0.2 * vmax
        err = np.abs(rec - ref) if rec.ndim == 2 else np.abs(rec - ref).mean(0)
        _save_png(out / "error_reconstruction.png", err, err_max, cmap="inferno")
        err_b = np.abs(base - ref) if base.ndim == 2 else np.abs(base - ref).mean(0)
        _save_png(out / "error_baseline.png", err_b, err_max, cmap="inferno")
        metrics["baseline"] = _quality(base, ref)
        metrics["sdi"] = _quality(rec, ref)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _summary(metrics: dict, baseline_name: str) -> str:
    lines = [f"runtime {metrics['runtime_s']:.1f} s ({metrics['iterations']} iterations, {metrics['it_per_s']:.1f} it/s)"]
    for key, name in (("baseline", baseline_name), ("sdi", "SDI")):
        if key in metrics:
            m = metrics[key]
            ssim = "n/a" if m["ssim"] is None else f"{m['ssim']:.4f}"
            lines.append(f"{name:>12}: PSNR {m['psnr']:.2f} dB  SSIM {ssim}  NMSE {m['nmse']:.4g}")
    return "\n".join(lines)


# -- operators --------------------------------------------------------------------------------


def _mri_mask(args, shape):
    from fastsd.ops.masks import equispaced_mask, random_mask

    acs = min(args.acs, shape[1])
    if args.mask == "equispaced":
        return equispaced_mask(shape, args.acceleration, acs_lines=acs, seed=args.seed)
    return random_mask(shape, args.acceleration, center_fraction=acs / shape[1], seed=args.seed)


def _acs_maps(kspace: torch.Tensor, acs: int) -> torch.Tensor:
    """Coil maps from the fully sampled centre: low-resolution coil images over their RSS."""
    from fastsd.reference.mri import ifft2c  # centred orthonormal inverse FFT

    C, H, W = kspace.shape
    low = torch.zeros_like(kspace)
    c0 = (W - acs + 1) // 2
    win = torch.hann_window(acs + 2, periodic=False, dtype=torch.float32)[1:-1]
    low[..., c0 : c0 + acs] = kspace[..., c0 : c0 + acs] * win
    img = ifft2c(low)
    rss = img.abs().pow(2).sum(0, keepdim=True).sqrt()
    return img / rss.clamp_min(1e-6 * float(rss.max()))


def _complex_noise(y: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    n = torch.randn(y.shape + (2,), generator=g) * (sigma / math.sqrt(2))
    return y + torch.view_as_complex(n).to(y.device)


def _setup_mri(args, path: Path | None, dev):
    """(y, op, truth or None) for the MRI task."""
    from fastsd.data import load_array, load_fastmri, mri_slice, resize
    from fastsd.ops.coils import birdcage_maps
    from fastsd.ops.mri import MRI

    if path is not None and path.suffix.lower() in (".h5", ".hdf5"):
        d = load_fastmri(path, args.slice)
        k = d["kspace"]
        C, H, W = k.shape
        mask = _mri_mask(args, (H, W))
        smaps = None if C == 1 else _acs_maps(k, min(args.acs, W))
        op = MRI(mask, smaps)
        from fastsd.reference.mri import ifft2c

        coil_imgs = ifft2c(k)
        truth_c = coil_imgs[0] if smaps is None else (smaps.conj() * coil_imgs).sum(0)
        truth = torch.stack([truth_c.real, truth_c.imag])[None]
        y = mask * k[None]
        return y.to(dev), op.to(dev), truth.to(dev)
    if path is None:
        x = mri_slice(args.size)
    else:
        a = load_array(path)
        if np.iscomplexobj(a):
            if a.ndim != 2:
                raise _UsageError(f"{path}: a complex .npy must be one (H, W) image, got shape {a.shape}")
            t = torch.from_numpy(a.astype(np.complex64))
            x = torch.stack([t.real, t.imag])[None]
        else:
            from fastsd.data import _array_to_image

            img = _array_to_image(a, str(path), gray=True)
            x = torch.cat([img, torch.zeros_like(img)], dim=1)
        if args.size is not None:
            x = resize(x, args.size)
        scale = float(x.norm(dim=1).max())
        x = x / (scale if scale > 0 else 1.0)
    H, W = x.shape[-2:]
    smaps = birdcage_maps(args.coils, (H, W)) if args.coils > 1 else None
    op = MRI(_mri_mask(args, (H, W)), smaps)
    y = op(x)
    if args.noise > 0:
        y = op.mask * _complex_noise(y, args.noise, args.seed)
    return y.to(dev), op.to(dev), x.to(dev)


def _setup_image(args, path: Path, dev):
    """(y, op, truth or None) for inpaint / deblur / sr / denoise."""
    from fastsd.data import load_image
    from fastsd.ops.image import Blur, Denoise, Downsample, Inpainting, box_mask, gaussian_kernel, motion_kernel, random_pixel_mask

    x = load_image(path, size=args.size, gray=args.gray)
    H, W = x.shape[-2:]
    task = args.task
    if task == "inpaint":
        mask = box_mask((H, W), args.box) if args.box else random_pixel_mask((H, W), args.keep, seed=args.seed)
        op = Inpainting(mask)
    elif task == "deblur":
        k = gaussian_kernel(args.blur_sigma) if args.kernel == "gaussian" else motion_kernel(args.motion_length, args.motion_angle)
        op = Blur(k, (H, W))
    elif task == "sr":
        op = Downsample(args.factor, img_size=(H, W))
    else:
        op = Denoise()
    noise = args.noise if args.noise is not None else (25 / 255 if task == "denoise" else 0.0)
    if task == "denoise" and args.measured:
        return x.to(dev), op.to(dev), None
    y = op(x)
    if noise > 0:
        y = y + noise * torch.randn(y.shape, generator=torch.Generator().manual_seed(args.seed + 1000))
    return y.to(dev), op.to(dev), x.to(dev)


# -- commands ---------------------------------------------------------------------------------


def _cmd_demo(args) -> int:
    dev = _device(args.device)
    args.mask = "equispaced"
    args.noise = 0.0
    y, op, truth = _setup_mri(args, None, dev)
    kw = _solver_kwargs(args, "mri", dev)
    t0 = time.perf_counter()
    result = _run_sdi(y, op, kw, truth, not args.quiet)
    extra = {"data": "matplotlib s1045.ima.gz head MRI slice", "image_size": list(truth.shape[-2:]),
             "acceleration": args.acceleration, "acs_lines": args.acs, "coils": args.coils,
             "wall_time_s": time.perf_counter() - t0}
    metrics = _write_outputs(Path(args.out), "mri", truth, op.zero_filled(y), result.x, result, extra)
    # the README and the issue speak of zero-filled: keep that name in the JSON as well
    metrics["zero_filled"] = metrics.pop("baseline")
    (Path(args.out) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    for a, b in (("baseline.png", "zero_filled.png"), ("error_baseline.png", "error_zero_filled.png")):
        (Path(args.out) / a).replace(Path(args.out) / b)
    metrics["baseline"] = metrics["zero_filled"]
    print(_summary(metrics, "zero-filled"))
    print(f"outputs in {Path(args.out).resolve()}")
    return 0


_INPUT_SUFFIXES = (".npy", ".png", ".h5", ".hdf5")


def _input_files(src: Path) -> list[Path]:
    """The one input file, or every .npy/.png/.h5 file of a directory in sorted order."""
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in _INPUT_SUFFIXES)
        if not files:
            raise _UsageError(f"{src}: no .npy, .png or .h5 files in this directory")
        return files
    from fastsd.data import _check_file

    return [_check_file(src, _INPUT_SUFFIXES)]


def _output_dirs(files: list[Path], out: Path, from_dir: bool) -> list[Path]:
    """``out`` for a single input; ``out/<stem>`` per file of a directory (``out/<name_ext>``
    when two files share a stem)."""
    if not from_dir:
        return [out]
    stems = [p.stem for p in files]
    unique = len(set(stems)) == len(stems)
    return [out / (p.stem if unique else p.name.replace(".", "_")) for p in files]


def _reconstruct_file(args, path: Path, out: Path, dev: torch.device, progress: bool) -> dict:
    """Reconstruct one input into ``out``; returns its metrics."""
    if path.suffix.lower() in (".h5", ".hdf5") and args.task != "mri":
        raise _UsageError(f"{path}: fastMRI .h5 input needs --task mri")
    if args.task == "mri":
        if args.noise is None:
            args.noise = 0.0
        y, op, truth = _setup_mri(args, path, dev)
        preset, baseline = "mri", op.zero_filled(y)
    else:
        y, op, truth = _setup_image(args, path, dev)
        preset = "denoise" if args.task == "denoise" else "image"
        baseline = op.pinv(y)
    kw = _solver_kwargs(args, preset, dev)
    result = _run_sdi(y, op, kw, truth, progress)
    extra = {"input": str(path), "image_size": list(y.shape[-2:]) if args.task != "mri" else list(op.img_size)}
    return _write_outputs(out, args.task, truth, baseline, result.x, result, extra)


def _record(path: Path, out: Path, rank: int, metrics: dict | None, error: str | None) -> dict:
    """One line of the directory summary."""
    rec = {"input": str(path), "output": str(out), "rank": rank, "status": "ok" if error is None else "error"}
    if error is not None:
        rec["error"] = error
    else:
        rec.update(runtime_s=metrics["runtime_s"], iterations=metrics["iterations"])
        for key in ("baseline", "sdi"):
            if key in metrics:
                rec[key] = metrics[key]
    return rec


def _cmd_reconstruct(args) -> int:
    """One file, or a directory of files sharded over the ranks of a torchrun launch
    (:mod:`fastsd.distributed`): rank r takes files[r::world], writes its outputs, and rank 0
    writes ``summary.json`` with every file's record once all ranks are done."""
    from fastsd import distributed as fdist

    if args.measured and args.task != "denoise":
        raise _UsageError("--measured is only supported for --task denoise")
    src = Path(args.input)
    from_dir = src.is_dir()
    files = _input_files(src)
    outs = _output_dirs(files, Path(args.out), from_dir)
    dev = _device(args.device)
    t0 = time.perf_counter()
    ctx = fdist.init(dev.type)
    try:
        tag = f"[rank {ctx.rank}/{ctx.world_size}] " if ctx.distributed else ""
        records = []
        for i in fdist.shard(range(len(files)), ctx.rank, ctx.world_size):
            path, out = files[i], outs[i]
            try:
                metrics = _reconstruct_file(args, path, out, dev, not args.quiet and ctx.is_main)
            except (ValueError, _UsageError, ImportError, OSError) as e:
                if not from_dir:
                    raise
                msg = " ".join(str(e).split())
                print(f"{tag}fastsd: error: {msg}", file=sys.stderr)
                records.append(_record(path, out, ctx.rank, None, msg))
                continue
            records.append(_record(path, out, ctx.rank, metrics, None))
            if from_dir:
                print(f"{tag}{path.name}:")
            print(_summary(metrics, "zero-filled" if args.task == "mri" else "A^+ y"))
            print(f"{tag}outputs in {out.resolve()}")
        failed = any(r["status"] != "ok" for r in records)
        gathered = fdist.gather(records, ctx)  # waits for every rank
        if gathered is not None and from_dir:
            every = sorted((r for rs in gathered for r in rs), key=lambda r: r["input"])
            n_failed = sum(r["status"] != "ok" for r in every)
            summary = {"input_dir": str(src), "task": args.task, "world_size": ctx.world_size,
                       "backend": ctx.backend, "n_files": len(every), "n_failed": n_failed,
                       "wall_time_s": time.perf_counter() - t0, "files": every}
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
            print(f"{len(every) - n_failed}/{len(every)} files reconstructed; summary in "
                  f"{(Path(args.out) / 'summary.json').resolve()}")
            failed = n_failed > 0
        return 2 if failed else 0
    finally:
        fdist.finalize(ctx)


def _add_solver_options(p: argparse.ArgumentParser, T=None, K=None, lr=None) -> None:
    g = p.add_argument_group("solver")
    g.add_argument("--T", type=int, default=T, help="noise levels (default: the task preset's)")
    g.add_argument("--K", type=int, default=K, help="Adam steps per noise level (default: preset)")
    g.add_argument("--lr", type=float, default=lr, help="Adam learning rate (default: preset)")
    net = g.add_mutually_exclusive_group()
    net.add_argument("--small", dest="small", action="store_true", default=None,
                     help="CPU-sized U-Net (width 8, 4 levels); the default on CPU")
    net.add_argument("--full", dest="small", action="store_false", help="the paper's 88 M-parameter U-Net; the default on CUDA")
    g.add_argument("--resample-noise", action="store_true", help="fresh noise at every inner step (paper)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default="fastsd-out", help="output directory (default: ./fastsd-out)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_mri_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MRI")
    g.add_argument("--acceleration", type=float, default=4.0)
    g.add_argument("--acs", type=int, default=20, help="fully sampled centre lines (default 20)")
    g.add_argument("--coils", type=int, default=1, help="simulated birdcage coils (1 = single coil)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fastsd", description="Self-diffusion (SDI) reconstruction for imaging inverse problems.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("demo", help="reconstruct a real MRI slice from 4x-undersampled simulated k-space")
    d.add_argument("--size", type=int, default=256, help="image size (default 256, the slice's own)")
    _add_mri_options(d)
    _add_solver_options(d, T=20, K=40, lr=3e-3)

    r = sub.add_parser("reconstruct", help="reconstruct from an image (.npy/.png) or fastMRI k-space (.h5)")
    r.add_argument("input", help=".npy, .png or fastMRI .h5 file, or a directory of them (one output "
                   "folder per file plus summary.json; sharded over ranks under torchrun)")
    r.add_argument("--task", choices=("mri", "inpaint", "deblur", "sr", "denoise"), default="mri")
    r.add_argument("--size", type=int, default=None, help="resize the input image to size x size")
    r.add_argument("--gray", action="store_true", help="convert a colour image to grey")
    r.add_argument("--noise", type=float, default=None,
                   help="measurement noise std (default: 25/255 for denoise, else 0)")
    r.add_argument("--measured", action="store_true", help="denoise: the input already is the noisy image")
    _add_mri_options(r)
    r.add_argument("--mask", choices=("equispaced", "random"), default="equispaced", help="MRI sampling mask")
    r.add_argument("--slice", type=int, default=None, help="fastMRI slice (default: the middle one)")
    g = r.add_argument_group("image operators")
    g.add_argument("--keep", type=float, default=0.5, help="inpaint: fraction of observed pixels")
    g.add_argument("--box", type=int, default=0, help="inpaint: hide a centred box of this size instead")
    g.add_argument("--kernel", choices=("gaussian", "motion"), default="gaussian", help="deblur kernel")
    g.add_argument("--blur-sigma", type=float, default=2.0)
    g.add_argument("--motion-length", type=float, default=9.0)
    g.add_argument("--motion-angle", type=float, default=0.0)
    g.add_argument("--factor", type=int, default=4, help="sr: downsampling factor")
    _add_solver_options(r)
    return p


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 bad input or options)."""
    args = _parser().parse_args(argv)
    for name in ("T", "K", "size"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            print(f"fastsd: error: --{name} must be a positive integer, got {v}", file=sys.stderr)
            return 2
    try:
        return _cmd_demo(args) if args.command == "demo" else _cmd_reconstruct(args)
    except (ValueError, _UsageError, ImportError, OSError) as e:
        msg = " ".join(str(e).split())  # one line
        print(f"fastsd: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
