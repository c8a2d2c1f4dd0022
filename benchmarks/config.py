"""Sizes and repetition counts of every benchmark section (:func:`config`): paper sizes on CUDA,
small ones on CPU. ``benchmarks/run.py --set KEY=JSON`` overrides one entry."""
from __future__ import annotations

import torch

from benchmarks import cases

# The frontier section's settings shared by CPU and CUDA runs (sizes differ, below).
FRONTIER = dict(frontier_coils=8, frontier_seeds=3, frontier_tolerance_db=0.3, frontier_scan_schedule=None,
                frontier_warm_fractions=[0.1, 0.2], frontier_log=None, frontier_k_scale=1.0, frontier_fast=None,
                frontier_levers=None)

# Section 'paper': the paper's sizes and networks on CUDA (MRI: the bundled slice's native 256²; the
# paper used fastMRI 320²); on CPU scaled images, the small U-Net, fewer steps and a narrower DIP.
PAPER_CUDA = dict(paper_small=False, paper_cs1d_small=False, paper_cs1d_seeds=5, paper_cs1d_dip_iters=8000,
                  paper_mri_size=256, paper_mri_coils=8, paper_mri_TK=(40, 50), paper_mri_seeds=3,
                  paper_img_size=256, paper_img_TK=(40, 150), paper_img_seeds=3, paper_dip_width=128)
PAPER_CPU = dict(paper_small=True, paper_cs1d_small=True, paper_cs1d_seeds=5, paper_cs1d_dip_iters=1000,
                 paper_mri_size=64, paper_mri_coils=8, paper_mri_TK=(10, 25), paper_mri_seeds=3,
                 paper_img_size=64, paper_img_TK=(10, 15), paper_img_seeds=3, paper_dip_width=16)
PAPER_PARTS = ("cs1d", "mri", "images")
# sections deepinv and deepinv_dip: the same problems on every device (the DIP candidates are
# fastsd DIP (width, depth, lr))
DEEPINV = dict(deepinv_size=128, deepinv_batches=[1, 8], deepinv_dip_tasks=["inpainting", "deblur", "mri"],
               deepinv_dip_seeds=3, deepinv_dip_budget_s=20.0, deepinv_dip_every=25,
               deepinv_dip_candidates=[[128, 5, 1e-2], [64, 5, 1e-2], [32, 5, 1e-2], [32, 4, 1e-2], [32, 5, 3e-3]])


def config(device: torch.device, quick: bool) -> dict:
    """Sizes and repetition counts of every section: paper sizes on CUDA, small ones on CPU."""
    if device.type == "cuda":
        return dict(
            copy_numel=2**27,
            ops_mri=[("small", (1, 1, 256, 256)), ("fill", (16, 15, 320, 320))],
            ops_elem=[("small", (1, 2, 256, 256)), ("fill", (64, 2, 512, 512))],
            op_reps=(20, 5) if quick else (100, 10),
            step_cases=[(1, 256, 256), (15, 320, 320)],
            step_nets=list(cases.NETS),
            resample_cases=[(1, 256, 256)],
            step_reps=(10, 6) if quick else (30, 6),
            batch_case=(15, 320, 320),
            batch_nets=["unet-small"] if quick else ["unet-small", "unet-paper"],
            batch_sizes=(1, 4, 8),
            batch_vectorize=(8,),
            batch_reps=(5, 6) if quick else (10, 6),
            lever_case="mri-320x320-16coil",
            lever_small=False,
            volume_B=16,
            anchor_cases=["mri-320x320-16coil", "mri-256x256-1coil"],
            anchor_TK=(4, 10) if quick else (40, 50),
            official_seeds=3,
            fastsd_seeds=5,
            volume3d_shape=(32, 40, 32) if quick else (160, 160, 128),
            volume3d_coils=12,
            volume3d_TK=(4, 10) if quick else (40, 50),
            volume3d_seeds=1 if quick else 3,
            volume3d_lr=None,
            volume3d_small=False,
            native_sizes=[("320", 1), ("fill", 64)],  # batch of 15-coil 320² slices: 0.8 GB of spectra at 64
            **FRONTIER, frontier_size=320, frontier_small=False, frontier_slices=16, frontier_volume_depth=96,
            frontier_workers=1,
            **PAPER_CUDA, paper_parts=list(PAPER_PARTS), paper_skip=[],
            deepinv_op_reps=(100, 10),
            deepinv_max_item_s=5.0,
            deepinv_dip_size=128,
            **DEEPINV,
            max_item_s=15.0,
        )
    return dict(
        copy_numel=2**22,
        ops_mri=[("small", (1, 1, 32, 32)), ("fill", (2, 4, 64, 64))],
        ops_elem=[("small", (1, 2, 32, 32)), ("fill", (2, 2, 64, 64))],
        op_reps=(10, 2),
        step_cases=[(1, 64, 64), (4, 64, 64)],
        step_nets=["unet-small"],
        resample_cases=[(1, 64, 64)],
        step_reps=(5, 2),
        batch_case=(1, 64, 64),
        batch_nets=["unet-small"],
        batch_sizes=(1, 4, 8),
        batch_vectorize=(),
        batch_reps=(3, 1),
        lever_case="mri-32x32-2coil",
        lever_small=True,
        volume_B=2,
        anchor_cases=["mri-64x64-2coil"],
        anchor_TK=(2, 2),
        official_seeds=2,
        fastsd_seeds=2,
        volume3d_shape=(16, 32, 32),
        volume3d_coils=4,
        volume3d_TK=(2, 5),
        volume3d_seeds=2,
        volume3d_lr=3e-3,  # as fastsd demo --3d on CPU
        volume3d_small=True,
        native_sizes=[],  # CUDA only
        **FRONTIER, frontier_size=128, frontier_small=True, frontier_slices=8, frontier_volume_depth=96,
        frontier_workers=2,
        **PAPER_CPU, paper_parts=list(PAPER_PARTS), paper_skip=[],
        deepinv_op_reps=(60, 5),
        deepinv_max_item_s=6.0,
        deepinv_dip_size=64,
        **DEEPINV,
        max_item_s=2.0,
    )
