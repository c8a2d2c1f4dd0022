"""Image-domain masks for :class:`fastsd.ops.image.Inpainting`: random pixels and boxes.

All functions return float32 tensors of 0/1 (1 = observed pixel), deterministic for a given seed;
the k-space masks of the MRI operators live beside them in :mod:`fastsd.ops.masks`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["random_pixel_mask", "box_mask"]


def random_pixel_mask(shape: Sequence[int], keep_fraction: float, seed: int = 0) -> torch.Tensor:
    """Float32 {0,1} mask of ``shape`` (e.g. (H, W)) with exactly round(keep_fraction · numel)
    ones at uniformly random positions (reproducible from ``seed``)."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    gen = torch.Generator().manual_seed(int(seed))
    mask = torch.zeros(n)
    mask[torch.randperm(n, generator=gen)[: round(keep_fraction * n)]] = 1.0
    return mask.reshape(shape)


def box_mask(shape: Sequence[int], box_size, center=None) -> torch.Tensor:
    """Float32 {0,1} mask of ``shape`` (…, H, W) that is 0 inside a box of ``box_size``
    (int or (h, w)) centred at ``center`` (row, col; default the image centre) and 1 elsewhere;
    the box is clipped to the image."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must end with (H, W), got {shape}")
    H, W = shape[-2:]
    bh, bw = (box_size, box_size) if isinstance(box_size, int) else tuple(box_size)
    cy, cx = (H // 2, W // 2) if center is None else tuple(center)
    mask = torch.ones(shape)
    top, left = max(cy - bh // 2, 0), max(cx - bw // 2, 0)
    mask[..., top : max(cy - bh // 2 + bh, 0), left : max(cx - bw // 2 + bw, 0)] = 0.0
    return mask
