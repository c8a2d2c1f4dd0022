"""Side-by-side benchmark of fastsd on whatever device exists, in one run.

Usage::

    python -m benchmarks.run [--quick] [--out DIR] [--only copy,ops,step,levers,batch,anchor,volume3d,paper]
                             [--budget-s 420] [--threads N] [--set KEY=JSON ...]

Sections (:mod:`benchmarks.sections`, one module each; each one failing is recorded and the rest
still run; once ``--budget-s`` seconds have passed the remaining items are skipped and recorded):

1. ``copy``  — device copy bandwidth (``dst.copy_(src)``, 2 × nbytes per copy): the ceiling.
2. ``ops``   — the operator ops ``torch.ops.fastsd.{mri_forward, mri_adjoint, mri_fidelity,
   mri_dc, noisy_input, masked_fidelity}`` next to their plain-PyTorch references at a small size
   and at a GPU-filling size, with bytes counted explicitly, GB/s and fraction of the copy
   bandwidth; on CUDA also the three Triton kernels of the MRI pipeline alone. The network's fused
   layers (``bn_relu``, ``upcat``) are timed inside the network step, in ``levers``.
3. ``step``  — one SDI inner step: eager with the reference backend, eager fused, fused + CUDA
   graph; MRI single-coil 256² and 15-coil 320²; paper U-Net and small preset; plus the network's
   forward + backward alone, whose time subtracted from the step's is the non-network work.
4. ``levers`` — the network training step with each speed lever alone and together (precision,
   fused BatchNorm+ReLU, cuDNN autotuning), a breakdown of the step, and B slices of a volume on one
   shared network.
5. ``batch`` — throughput of B independent problems (BatchedNet) for B in (1, 4, 8).
6. ``anchor`` — full solves: the official SDI loop against fastsd's default and fastest path on
   the same measurements, several seeds, wall time and PSNR.
7. ``volume3d`` — 3-D MRI on the bundled head volume: zero-filled, 3-D SDI and slice-by-slice 2-D
   SDI, PSNR/SSIM, wall time (and peak memory on CUDA) per seed. Runs only when named in ``--only``.
8. ``paper`` — the SDI paper's first experiments (1-D CS, MRI 4x/6x with the w/o-ε ablation, natural
   images) beside CG-SENSE, L1-wavelet, zero-filled and DIP: one table of the paper's number next to
   fastsd's over seeds, with the size and device of each row. Runs only when named in ``--only``.

Results go to ``DIR/<YYYY-MM-DD>-<device>.json`` (default ``benchmarks/results``) with a markdown
table next to it (also printed). CUDA timings use :func:`triton.testing.do_bench`; CPU timings
``time.perf_counter`` (:mod:`benchmarks.harness`). On CPU ``--quick`` is forced (small sizes, no
CUDA graphs) and the fused ops dispatch to the reference, so "fused" there measures the custom-op
path only. ``--set KEY=JSON`` overrides one entry of :func:`benchmarks.config.config`.
"""
import sys

from benchmarks.harness import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__.split("\n\n")[0]))
