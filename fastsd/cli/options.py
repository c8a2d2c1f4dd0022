"""The command line's options: ``demo`` (the 2-D slice, or the 3-D volume with ``--3d``),
``reconstruct`` (``--task`` one of the 2-D tasks or ``mri3d``) and ``train-denoiser``.

2-D and 3-D share one parser per command so that ``--help`` shows both. Options that belong to
one of them only are marked (:func:`_only`); :func:`parse` refuses them in the other, checks the
numeric ranges and fills in the defaults that differ between 2-D and 3-D (:data:`DEFAULTS`), all
before any work.
"""
from __future__ import annotations

import argparse
import math

from fastsd._checks import check_seed
from fastsd.cli.common import Parser, UsageError
from fastsd.limits import MAX_VALUES
from fastsd.solvers.diffusion import MAX_COUNT
from fastsd.tasks import TASKS

__all__ = ["parse", "is_3d", "MAX_SIZE", "DEMO"]

MAX_SIZE = 4096  # largest 2-D --size: a 4096^2 image already needs GBs per network activation

DEMO = dict(coils=8, T=10, K=80, lr=1e-3)
"""``fastsd demo`` defaults, chosen by measurement on a 2-core CPU (see README, "Demo")."""

MAX_DEPTH = 10  # --depth: the U-Net halves the image per level, so 10 levels need sides of 2**11 and more

DEFAULTS = {  # (command, 3-D) -> defaults of the options whose default depends on them
    ("demo", False): dict(size=256, acceleration=4.0, acs=20, mask="equispaced", dc=True, precision="fp32",
                          method="sdi", **DEMO),
    ("reconstruct", False): dict(acceleration=4.0, acs=20, mask="equispaced", dc=False, precision="fp32",
                                 method="sdi"),
    ("demo", True): dict(coils=12, acceleration=8.0, mask="poisson", mode="3d"),
    ("reconstruct", True): dict(coils=12, acceleration=8.0, mask="poisson", mode="3d"),
}
MASKS = {False: ("equispaced", "random"), True: ("poisson", "gaussian")}


def _only(action: argparse.Action, three_d: bool) -> argparse.Action:
    """Mark an option as belonging to 3-D MRI only (``three_d``) or to 2-D only."""
    action.only_3d = three_d
    return action


def is_3d(args: argparse.Namespace) -> bool:
    """Whether the options ask for 3-D MRI (``demo --3d`` or ``reconstruct --task mri3d``)."""
    return bool(getattr(args, "three_d", False)) or getattr(args, "task", None) == "mri3d"


# -- parser -------------------------------------------------------------------------------------


def _add_mri_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MRI (2-D and 3-D)")
    g.add_argument("--acceleration", type=float, default=None,
                   help="undersampling factor (default 4; 3-D: 8, of the phase-encoding plane)")
    g.add_argument("--coils", type=int, default=None,
                   help="simulated birdcage coils, 1 = single coil (default: demo 8, reconstruct 1; 3-D 12)")
    g.add_argument("--mask", choices=MASKS[False] + MASKS[True], default=None,
                   help="sampling mask: 2-D equispaced (default) or random lines, 3-D poisson (default) or gaussian")
    _only(g.add_argument("--acs", type=int, default=None, help="2-D: fully sampled centre lines (default 20)"), False)
    _only(g.add_argument("--dc", action=argparse.BooleanOptionalAction, default=None,
                         help="2-D: finish with hard data consistency, the closest image whose k-space matches the "
                              "measured samples exactly (CG for several coils); default: on in the demo, else off"),
          False)
    g3 = p.add_argument_group("3-D MRI (demo --3d, reconstruct --task mri3d)")
    _only(g3.add_argument("--calib", type=int, default=None,
                          help="side of the fully sampled calibration box (default 24 at 128 phase encodes, scaled)"),
          True)
    _only(g3.add_argument("--mode", choices=("3d", "slices", "both"), default=None,
                          help="3-D SDI (default), slice-by-slice 2-D SDI after a 1-D inverse FFT along the readout, "
                               "or both"), True)


def _add_solver_options(p: argparse.ArgumentParser, methods: bool) -> None:
    g = p.add_argument_group("solver")
    if methods:
        from fastsd.cli.solving import solver_options
        from fastsd.solvers import available_solvers

        priors = ", ".join(m for m in available_solvers() if "denoiser" in solver_options(m))
        _only(g.add_argument("--method", choices=available_solvers(), default=None,
                             help=f"solver (default: sdi, the only one in 3-D); {priors} need --denoiser"), False)
        _only(g.add_argument("--compare", default=None, metavar="M1,M2",
                             help="also run these classical baselines (zero-filled, cg-sense, l1-wavelet) on the same "
                                  "measurements and store their PSNR/SSIM in metrics.json beside the method's"), False)
        _only(g.add_argument("--iterations", type=int, default=None,
                             help="non-SDI methods: the solver's iteration/step count (default: the solver's)"), False)
        _only(g.add_argument("--denoiser", default=None, metavar="CKPT",
                             help="denoiser checkpoint for the prior-based methods (write one with fastsd "
                                  "train-denoiser)"), False)
    demo = "" if methods else "; the demo: T 10, K 80, lr 1e-3; the 3-D demo on CPU: T 10, K 20, lr 3e-3"
    g.add_argument("--T", type=int, default=None, help=f"sdi: noise levels (default: the task preset{demo})")
    g.add_argument("--K", type=int, default=None, help="sdi: Adam steps per noise level (default: as --T)")
    from fastsd.solvers.sdi import PRESETS, VOLUMES

    _only(g.add_argument("--preset", choices=[p for p in PRESETS if p != "mri3d"], default=None,
                         help="sdi: T, K, lr, loss and stopping rule of a preset (default: the task's; mri-fast: "
                              "the MRI preset measured to reach the paper preset's quality with less work, see "
                              "README 'Cost and quality')"), False)
    _only(g.add_argument("--volume", choices=VOLUMES, default=None,
                         help="sdi, the slices of one scan: one network per slice (independent), one network for "
                              "all (shared), or centre-outwards warm starts (warm; the default for scan files)"), False)
    g.add_argument("--lr", type=float, default=None,
                   help="learning rate of sdi, dip, aseqdip, dmplug (Adam) and projdiff (step towards the "
                        "denoised estimate); default: as --T, or the solver's")
    net = g.add_mutually_exclusive_group()
    net.add_argument("--small", dest="small", action="store_true", default=None,
                     help="sdi: CPU-sized U-Net (width 8, 4 levels); the default on CPU")
    net.add_argument("--full", dest="small", action="store_false",
                     help="sdi: the paper's U-Net (88 M parameters in 2-D); the default on CUDA")
    g.add_argument("--width", type=int, default=None,
                   help="sdi: channels of the U-Net's first level (default: 8 with --small, 64 with --full; 3-D: 4 / "
                        "32); twice the width is 4x the work per step (README 'Cost and quality')")
    g.add_argument("--depth", type=int, default=None,
                   help=f"sdi: levels of the U-Net, 1 to {MAX_DEPTH} (default: 4 with --small, 5 with --full; 3-D: 2 / 5)")
    g.add_argument("--resample-noise", action="store_true", help="sdi: fresh noise at every inner step (paper)")
    _only(g.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                         help="2-D sdi: network arithmetic; bf16 = autocast with float32 weights, loss and operator "
                              "(default: fp32)"), False)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default="fastsd-out", help="output folder (default: ./fastsd-out)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


SIZE_HELP = "2-D: N, the image size; 3-D: D H W, resample the volume"


def _demo(sub) -> None:
    d = sub.add_parser("demo", help="reconstruct a real MRI slice from 4x-undersampled simulated 8-coil k-space "
                                    "(--3d: the MNI T1 head volume from simulated 12-coil 8x k-space)")
    d.add_argument("--3d", dest="three_d", action="store_true",
                   help="3-D MRI: the MNI ICBM152 T1 volume (needs the data3d extra) with 3-D self-diffusion")
    d.add_argument("--size", type=int, nargs="+", default=None, metavar="N",
                   help=f"{SIZE_HELP} (default 256, the slice's own; 3-D: 160 160 128 on CUDA, 32 40 32 on CPU)")
    _add_mri_options(d)
    _add_solver_options(d, methods=False)


def _reconstruct(sub) -> None:
    r = sub.add_parser("reconstruct", help="reconstruct from an image (.npy/.png), a scan (fastMRI or ISMRMRD .h5, "
                                           "BART .cfl: every slice) or, with --task mri3d, a volume "
                                           "(.nii/.nii.gz/.npy) or 3-D k-space (.npy/.h5)")
    r.add_argument("input", help=".npy or .png image, fastMRI or ISMRMRD .h5 or BART .cfl k-space, or a directory of "
                   "them (one output folder per file plus summary.json; sharded over ranks under torchrun); "
                   "--task mri3d: .nii/.nii.gz or real "
                   ".npy volume (ground truth), or complex .npy / .h5 k-space (C, D, H, W)")
    r.add_argument("--task", choices=(*TASKS, "mri3d"), default="mri", help="mri3d: 3-D MRI (default: mri)")
    r.add_argument("--size", type=int, nargs="+", default=None, metavar="N", help=f"{SIZE_HELP} (default: as given)")
    image = {"gray": dict(action="store_true", help="convert a colour image to grey"),
             "noise": dict(type=float, default=None, help="measurement noise std (default: 25/255 for denoise, else 0)"),
             "measured": dict(action="store_true", help="denoise: the input already is the noisy image"),
             "slice": dict(type=int, default=None, help="scanner files: one slice (as --slices N)"),
             "slices": dict(default=None, metavar="START:STOP",
                            help="scanner files (fastMRI/ISMRMRD .h5, BART .cfl): the slices to reconstruct as one "
                                 "scan (default: all)"),
             "coil-maps": dict(default=None, metavar="acs|espirit|FILE",
                               help="scanner files: coil maps from the ACS lines (default), ESPIRiT (sigpy), or a "
                                    ".npy / BART .cfl file (C, H, W) or (S, C, H, W)"),
             "batch-slices": dict(type=int, default=None,
                                  help="scanner files: slices per solve (default 8)"),
             "save-maps": dict(action="store_true", help="scanner files: also write coil_maps.cfl/.hdr (BART)"),
             "nproc": dict(type=int, default=None, metavar="N",
                           help="a directory: reconstruct it with N processes on this machine (as torchrun "
                                "--nproc_per_node=N, with fastsd's exit statuses)")}
    for name, kw in image.items():
        _only(r.add_argument(f"--{name}", **kw), False)
    _add_mri_options(r)
    g = r.add_argument_group("image operators")
    ops = {"keep": dict(type=float, default=0.5, help="inpaint: fraction of observed pixels"),
           "box": dict(type=int, default=0, help="inpaint: hide a centred box of this size instead"),
           "kernel": dict(choices=("gaussian", "motion"), default="gaussian", help="deblur kernel"),
           "blur-sigma": dict(type=float, default=2.0), "motion-length": dict(type=float, default=9.0),
           "motion-angle": dict(type=float, default=0.0),
           "factor": dict(type=int, default=4, help="sr: downsampling factor")}
    for name, kw in ops.items():
        _only(g.add_argument(f"--{name}", **kw), False)
    _add_solver_options(r, methods=True)


def _train(sub) -> None:
    t = sub.add_parser("train-denoiser", help="train the small denoiser prior on the bundled images (offline)")
    t.add_argument("--out", default="denoiser.pt", help="checkpoint file to write (default: ./denoiser.pt)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    t.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    t.add_argument("--width", type=int, default=32, help="conv channels (default 32)")
    t.add_argument("--depth", type=int, default=5, help="conv layers, >= 2 (default 5)")
    t.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 = gray, 3 = RGB (default 1)")
    t.add_argument("--patch", type=int, default=48, help="training patch size (default 48)")
    t.add_argument("--batch-size", type=int, default=16, help="patches per step (default 16)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and its subcommands' parsers by name."""
    p = Parser(prog="fastsd", description="Self-diffusion (SDI) and other seed solvers for imaging inverse problems.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in (_demo, _reconstruct, _train):
        add(sub)
    return p, sub.choices


# -- checks and defaults (all before any work) ----------------------------------------------------


def _check_mode(args, sub: argparse.ArgumentParser) -> None:
    """Refuse options of the other dimension; fill in the defaults of this one."""
    three_d = is_3d(args)
    where = "3-D MRI (demo --3d, reconstruct --task mri3d)" if not three_d else \
        ("--3d" if args.command == "demo" else "--task mri3d")
    for action in sub._actions:
        only = getattr(action, "only_3d", None)
        if only is not None and only != three_d and getattr(args, action.dest) != action.default:
            flag = action.option_strings[0]
            raise UsageError(f"{flag} applies to 3-D MRI only ({where})" if only else f"{flag} does not apply to {where}")
    if args.size is not None:
        if len(args.size) != (3 if three_d else 1):
            raise UsageError(f"--size takes one number (N) in 2-D and three (D H W) in 3-D, got {len(args.size)}")
        args.size = tuple(args.size) if three_d else args.size[0]
    for name, value in DEFAULTS[args.command, three_d].items():
        if name in ("T", "K", "lr") and args.preset is not None:
            continue  # --preset names its own schedule
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.mask not in MASKS[three_d]:
        raise UsageError(f"--mask {args.mask} is a {'2' if three_d else '3'}-D mask; "
                         f"{'3' if three_d else '2'}-D MRI takes {' or '.join(MASKS[three_d])}")


def _check_ranges(args) -> None:
    """Ranges of the numeric options, each error naming its option."""
    positive_ints = ("T", "K", "iterations", "steps", "width", "patch", "batch_size", "coils", "factor", "calib",
                     "nproc", "batch_slices")
    for name in positive_ints:
        v = getattr(args, name, None)
        if v is not None and not 1 <= v <= MAX_COUNT:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer of at most {MAX_COUNT:.0e}, got {v}")
    if getattr(args, "depth", None) is not None and not 1 <= args.depth <= MAX_DEPTH:
        raise UsageError(f"--depth must be an integer from 1 to {MAX_DEPTH}, got {args.depth}")
    if getattr(args, "T", None) and getattr(args, "K", None) and args.T * args.K > MAX_COUNT:
        raise UsageError(f"--T {args.T} x --K {args.K} = {args.T * args.K} steps exceeds the limit of {MAX_COUNT:.0e}")
    try:
        check_seed(args.seed)
    except ValueError as e:
        raise UsageError(f"--{e}") from None
    size = getattr(args, "size", None)
    if isinstance(size, int) and not 8 <= size <= MAX_SIZE:
        raise UsageError(f"--size must be between 8 and {MAX_SIZE}, got {size}")
    if isinstance(size, tuple) and (min(size) < 1 or math.prod(size) > MAX_VALUES):
        raise UsageError(f"--size must be positive with at most {MAX_VALUES:,} voxels, got {list(size)}")
    checks = (  # (option, attribute, test, requirement)
        ("--noise", "noise", lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
        ("--acs", "acs", lambda v: v >= 0, "an integer >= 0"),
        ("--acceleration", "acceleration", lambda v: math.isfinite(v) and v >= 1, "a number >= 1"),
        ("--box", "box", lambda v: v >= 0, "an integer >= 0"),
        ("--keep", "keep", lambda v: 0 < v <= 1, "in (0, 1]"),
        ("--blur-sigma", "blur_sigma", lambda v: math.isfinite(v) and v > 0, "a positive number"),
        ("--motion-length", "motion_length", lambda v: math.isfinite(v) and v > 0, "a positive number"),
        ("--motion-angle", "motion_angle", math.isfinite, "a finite number"),
        ("--lr", "lr", lambda v: math.isfinite(v) and v > 0, "a positive number"),
        ("--slice", "slice", lambda v: v >= 0, "an integer >= 0"),
    )
    for flag, name, ok, need in checks:
        v = getattr(args, name, None)
        if v is not None and not ok(v):
            raise UsageError(f"{flag} must be {need}, got {v}")


def parse(argv: list[str]) -> argparse.Namespace:
    """Parsed, checked options with every default filled in."""
    p, subs = parser()
    args = p.parse_args(argv)
    if args.command != "train-denoiser":
        _check_mode(args, subs[args.command])
    _check_ranges(args)
    return args
