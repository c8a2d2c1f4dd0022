"""Command line: ``fastsd demo [--3d]``, ``fastsd reconstruct INPUT [--task TASK]`` and
``fastsd train-denoiser``.

``fastsd demo`` reconstructs the real 256x256 head MRI slice bundled with matplotlib from
simulated 4x-undersampled 8-coil k-space (equispaced lines + 20 ACS lines) with self-diffusion
and a CPU-sized network (the paper's U-Net on a GPU), and writes ``summary.png``, ``curve.png``,
PNGs of each image and ``metrics.json``; ``fastsd demo --3d`` does the same for a 3-D head volume
(:mod:`fastsd.cli.recon3d`).

``fastsd reconstruct INPUT --task mri|inpaint|deblur|sr|denoise [--method NAME]`` runs a solver
(default SDI; any of :func:`fastsd.solvers.available_solvers`) on an image (.npy / .png: treated
as ground truth, measurements simulated with the chosen operator) or on fastMRI k-space (.h5: the
file's k-space retrospectively undersampled); ``--task mri3d`` on a volume or 3-D k-space.
``INPUT`` may be a directory: every file in it is reconstructed into ``OUT/<name>/`` and
``OUT/summary.json`` lists them all; with ``--nproc N`` or under ``torchrun --nproc_per_node=N -m
fastsd.cli reconstruct DIR ...`` the files are sharded over N ranks (:mod:`fastsd.cli.batch`).

Every error is one line (``fastsd: error: ...``) naming the file or the option, exit status 2;
Ctrl-C prints one line and exits with 130, SIGTERM with 143 (:mod:`fastsd.cli.common`). Every
command writes its results the same way (:mod:`fastsd.cli.results`).

The package: :mod:`~fastsd.cli.options` (the parser, checks and 2-D/3-D defaults),
:mod:`~fastsd.cli.common` (errors, exit statuses, device), :mod:`~fastsd.cli.solving` (solver
options, progress, denoiser priors), :mod:`~fastsd.cli.results` (result folders),
:mod:`~fastsd.cli.batch` (directory runs, sharded over ranks), :mod:`~fastsd.cli.launch` (``--nproc``),
:mod:`~fastsd.cli.recon2d` (the 2-D problems and the demo and reconstruct commands),
:mod:`~fastsd.cli.recon3d` (3-D MRI), :mod:`~fastsd.cli.train` (the denoiser prior). None imports
this module's ``main``, which imports them when called.
"""
from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 bad input or options, 130 Ctrl-C)."""
    from fastsd.cli import recon2d, recon3d, train
    from fastsd.cli.common import UsageError, run_command
    from fastsd.cli.launch import launch, without_nproc
    from fastsd.cli.options import is_3d, parse

    argv = sys.argv[1:] if argv is None else list(argv)

    def command() -> int:
        args = parse(argv)
        if args.command == "train-denoiser":
            return train.cmd_train_denoiser(args)
        if is_3d(args):
            return recon3d.run(args)
        if args.command == "reconstruct" and args.nproc is not None:
            if not Path(args.input).is_dir():
                raise UsageError(f"--nproc: {args.input} is not a directory (--nproc shards a directory's files)")
            return launch(args.nproc, without_nproc(argv))
        return recon2d.cmd_demo(args) if args.command == "demo" else recon2d.cmd_reconstruct(args)

    return run_command(command)
