"""What the command line refuses about one input, before and after its solve.

Before (one line, exit status 2): options that the input makes meaningless (``--coils`` and
``--noise`` describe a *simulated* acquisition, so they are refused for a fastMRI ``.h5`` file,
which holds measured k-space), a measurement that observes nothing (``--keep`` so small that the
random mask holds no pixel), and blur kernels larger than the image (``--blur-sigma``,
``--motion-length``), and images below SDI's U-Net's smallest size (refused naming ``--size``
rather than padded: padding would change the problem the network sees). After: a result that :func:`fastsd.sanity.check_result` rejects (non-finite,
or data residual more than 10x that of the all-zero image) is a failed input, exit status 1 (a
failed entry in a directory run's summary), never written as a result.

:func:`naming` puts the input file (or, for an output error without one, the output folder) into
every error raised while one input is processed, so each message names what it is about.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

from fastsd.cli.common import UsageError, one_line

__all__ = ["naming", "check_measured_kspace_options", "check_image_options", "check_network_size", "check_observed",
           "check_result"]


@contextmanager
def naming(path: Path | None, folder: Path):
    """Errors inside the block name ``path`` (their type kept); an ``OSError`` without a file name
    (e.g. a full disk while writing) names ``folder``, where the results were being written."""
    try:
        yield
    except OSError as e:
        if e.filename is None and not isinstance(e, FileNotFoundError):
            raise OSError(e.errno, f"writing results in {folder}: {e.strerror or one_line(e)}") from None
        raise
    except (ValueError, UsageError) as e:
        if path is not None and str(path) not in str(e):
            e.args = (f"{path}: {one_line(e)}",) + e.args[1:]
        raise


def check_measured_kspace_options(args, path: Path, n_coils: int) -> None:
    """``--coils`` and ``--noise`` simulate an acquisition; a fastMRI file is measured k-space."""
    for flag, value in (("--coils", args.coils), ("--noise", args.noise)):
        if value is not None:
            raise UsageError(f"{flag} {value} applies to simulated k-space; {path} holds measured k-space "
                             f"({n_coils} coil(s), its own noise): drop {flag}")


def check_image_options(args, H: int, W: int) -> None:
    """Operator options against the image size, before the operator is built."""
    if args.task == "inpaint" and not args.box and args.keep * H * W < 1:
        raise UsageError(f"--keep {args.keep:g} observes no pixel of the {H}x{W} image (expected {args.keep * H * W:.2g} "
                         f"pixels); use --keep {1 / (H * W):.2g} or more")
    if args.task == "deblur":
        side = 2 * math.ceil(3 * args.blur_sigma) + 1 if args.kernel == "gaussian" \
            else 2 * math.ceil((args.motion_length - 1) / 2) + 1
        flag = "--blur-sigma" if args.kernel == "gaussian" else "--motion-length"
        value = args.blur_sigma if args.kernel == "gaussian" else args.motion_length
        if side > min(H, W):
            raise UsageError(f"{flag} {value:g} needs a {side}x{side} kernel, larger than the {H}x{W} image")


def check_network_size(args, H: int, W: int, small: bool) -> None:
    """SDI's U-Net has a smallest image side (32 for the CPU network, 64 for the paper's): refused
    naming the image and the ``--size`` that resizes it (the other methods take 8x8 and up)."""
    from fastsd.solvers.sdi import SelfDiffusion

    need = SelfDiffusion(small=small, depth=args.depth).min_image_size(2)
    if args.method == "sdi" and min(H, W) < need:
        net = ("CPU-sized (--small)" if small else "paper's (--full)") + (f" {args.depth}-level" if args.depth else "")
        raise UsageError(f"the {H}x{W} image is smaller than the {net} U-Net's minimum of {need}x{need}: pass "
                         f"--size {need} (or more) to resize it, or use another --method")


def check_observed(args, op, H: int, W: int) -> None:
    """The random inpainting mask must keep at least one pixel."""
    mask = getattr(op, "mask", None)
    if args.task == "inpaint" and mask is not None and not bool(mask.any()):
        raise UsageError(f"--keep {args.keep:g} observes no pixel of the {H}x{W} image; raise --keep")


def check_result(result, y, op, what: str, x=None) -> None:
    """The solver's output (``x``, default ``result.x``, in ``op``'s image layout) against
    :func:`fastsd.sanity.check_result`; raises ``ResultError``, else records the data residual."""
    from fastsd.sanity import check_result as check

    info = check(result.x if x is None else x, y, op, what, result)
    result.info["data_residual"] = info["residual"]
