"""Cartesian k-space sampling masks (fastMRI semantics), deterministic for a given seed.

All functions return float32 (H,W) tensors of 0/1 in the centred k-space layout of
:class:`fastsd.ops.mri.MRI`. 1D masks select phase-encode lines along W (the column dimension, as
in fastMRI) and are broadcast over H; 2D masks select individual k-space points.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["equispaced_mask", "random_mask", "gaussian_mask_2d", "poisson_disc_mask_2d", "acceleration_of"]


def _shape2(shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) with positive sizes, got {shape}")
    return shape


def _check_accel(acceleration) -> float:
    if not acceleration > 1:
        raise ValueError(f"acceleration must be > 1, got {acceleration}")
    return float(acceleration)


def _center_lines(num_cols: int, num_low: int) -> np.ndarray:
    """fastMRI's fully sampled centre: ``num_low`` columns starting at (num_cols - num_low + 1) // 2."""
    mask = np.zeros(num_cols, dtype=bool)
    pad = (num_cols - num_low + 1) // 2
    mask[pad : pad + num_low] = True
    return mask


def _lines_to_2d(lines: np.ndarray, H: int) -> torch.Tensor:
    return torch.from_numpy(np.broadcast_to(lines.astype(np.float32), (H, lines.size)).copy())


def _num_low(num_cols: int, acs_lines, center_fraction) -> int:
    if acs_lines is not None and center_fraction is not None:
        raise ValueError("give either acs_lines or center_fraction, not both")
    if acs_lines is None:
        frac = 0.08 if center_fraction is None else center_fraction
        if not 0 <= frac <= 1:
            raise ValueError(f"center_fraction must lie in [0, 1], got {frac}")
        return int(round(num_cols * frac))
    if not 0 <= acs_lines <= num_cols:
        raise ValueError(f"acs_lines must lie in [0, {num_cols}], got {acs_lines}")
    return int(acs_lines)


def acceleration_of(mask: torch.Tensor) -> float:
    """Actual acceleration: number of k-space locations over number sampled."""
    return mask.numel() / float(mask.sum())


def equispaced_mask(shape, acceleration, acs_lines=None, center_fraction=None, offset=None, seed=0) -> torch.Tensor:
    """Equispaced phase-encode lines plus a fully sampled centre (fastMRI ``EquispacedMaskFractionFunc``).

    The centre holds ``acs_lines`` columns (or ``round(W * center_fraction)``; default fraction 0.08).
    The outer lines are spaced by the adjusted acceleration
    ``a (n_low − W) / (n_low a − W)`` so that the total sampling rate is ≈ 1/a, starting at
    ``offset`` (drawn from ``seed`` when ``None``, as fastMRI draws it at random).
    """
    H, W = _shape2(shape)
    a = _check_accel(acceleration)
    n_low = _num_low(W, acs_lines, center_fraction)
    if n_low * a >= W:
        raise ValueError(f"{n_low} centre lines already give acceleration <= {acceleration} for width {W}")
    adjusted = a * (n_low - W) / (n_low * a - W)
    if offset is None:
        offset = int(np.random.default_rng(seed).integers(0, max(1, round(adjusted))))
    if not 0 <= offset < W:
        raise ValueError(f"offset must lie in [0, {W}), got {offset}")
    lines = np.zeros(W, dtype=bool)
    lines[np.around(np.arange(offset, W - 1, adjusted)).astype(np.int64)] = True
    return _lines_to_2d(lines | _center_lines(W, n_low), H)


def random_mask(shape, acceleration, center_fraction=0.08, seed=0) -> torch.Tensor:
    """Random phase-encode lines plus a fully sampled centre (fastMRI ``RandomMaskFunc``).

    Each outer column is kept with probability ``(W/a − n_low) / (W − n_low)``, which makes the
    expected acceleration ``a``. Same probabilities as fastMRI; the random stream is numpy's
    ``default_rng(seed)``.
    """
    H, W = _shape2(shape)
    a = _check_accel(acceleration)
    n_low = _num_low(W, None, center_fraction)
    if n_low * a >= W:
        raise ValueError(f"center_fraction {center_fraction} already gives acceleration <= {acceleration}")
    prob = (W / a - n_low) / (W - n_low)
    lines = np.random.default_rng(seed).uniform(size=W) < prob
    return _lines_to_2d(lines | _center_lines(W, n_low), H)


def _radius_grid(H: int, W: int) -> np.ndarray:
    """Distance of each pixel from the k-space centre (H//2, W//2), in pixels."""
    i = np.arange(H)[:, None] - H // 2
    j = np.arange(W)[None, :] - W // 2
    return np.sqrt(i * i + j * j)


def _centre_region(H: int, W: int, center_radius, calib, acceleration: float) -> tuple[np.ndarray, int]:
    """The fully sampled calibration region (a disc of ``center_radius`` pixels, default 4 % of
    min(H, W), or a centred ``calib`` box) and the total number of samples for ``acceleration``."""
    if calib is not None:
        if center_radius is not None:
            raise ValueError("give either center_radius or calib, not both")
        cy, cx = (calib, calib) if np.ndim(calib) == 0 else tuple(calib)
        if not (0 <= int(cy) <= H and 0 <= int(cx) <= W) or int(cy) != cy or int(cx) != cx:
            raise ValueError(f"calib must be a box (cy, cx) of integers within {(H, W)}, got {calib}")
        centre = np.outer(_center_lines(H, int(cy)), _center_lines(W, int(cx)))
        what = f"calibration box {int(cy)}x{int(cx)}"
        hint = "calib"
    else:
        r = 0.04 * min(H, W) if center_radius is None else float(center_radius)
        if r < 0:
            raise ValueError(f"center_radius must be >= 0, got {center_radius}")
        centre = _radius_grid(H, W) <= r
        what, hint = f"centre disc of radius {r:g}", "center_radius"
    target = int(round(H * W / acceleration))
    if centre.sum() > target:
        raise ValueError(
            f"the {what} holds {int(centre.sum())} points, more than the "
            f"{target} allowed by acceleration {acceleration}; lower {hint}"
        )
    return centre, target


def gaussian_mask_2d(shape, acceleration, seed=0, center_radius=None, sigma=0.25, calib=None) -> torch.Tensor:
    """Variable-density 2D random mask: a fully sampled centre disc (radius ``center_radius``
    pixels, default 4 % of min(H, W)) or calibration box ``calib = (cy, cx)`` plus points drawn
    without replacement with probability ∝ ``exp(−d² / (2 (sigma·min(H, W))²))``; exactly
    ``round(H W / acceleration)`` points in total. Over the (ky, kz) phase-encoding plane it is
    the mask of a 3-D acquisition (:class:`~fastsd.ops.mri.MRI3D`)."""
    H, W = _shape2(shape)
    a = _check_accel(acceleration)
    centre, target = _centre_region(H, W, center_radius, calib, a)
    s = sigma * min(H, W)
    weight = np.exp(-_radius_grid(H, W) ** 2 / (2 * s * s)).ravel()
    free = np.flatnonzero(~centre.ravel())
    p = weight[free] / weight[free].sum()
    rng = np.random.default_rng(seed)
    pick = rng.choice(free, size=target - int(centre.sum()), replace=False, p=p)
    mask = centre.ravel().copy()
    mask[pick] = True
    return torch.from_numpy(mask.reshape(H, W).astype(np.float32))


def _dart_throw(order: np.ndarray, radius: np.ndarray, blocked0: np.ndarray) -> np.ndarray:
    """Visit pixels in ``order``; accept one if not blocked, then block the disc of its radius."""
    H, W = blocked0.shape
    blocked = blocked0.copy()
    accepted = np.zeros_like(blocked0)
    for flat in order:
        i, j = divmod(int(flat), W)
        if blocked[i, j]:
            continue
        accepted[i, j] = True
        r = radius[i, j]
        k = int(np.ceil(r))
        i0, i1, j0, j1 = max(i - k, 0), min(i + k + 1, H), max(j - k, 0), min(j + k + 1, W)
        di = np.arange(i0, i1)[:, None] - i
        dj = np.arange(j0, j1)[None, :] - j
        blocked[i0:i1, j0:j1] |= di * di + dj * dj < r * r
    return accepted


def poisson_disc_mask_2d(shape, acceleration, seed=0, center_radius=None, density_slope=2.0, iters=14,
                         calib=None) -> torch.Tensor:
    """Variable-density Poisson-disc-like 2D mask by dart throwing (over the (ky, kz) plane: the
    paper's 3-D sampling for :class:`~fastsd.ops.mri.MRI3D`).

    Pixels are visited in a seeded random order and accepted when no accepted point lies within
    the minimum distance ``r0 (1 + density_slope · d / d_max)`` of an accepted one (``d`` = distance
    from the centre), so samples are spread evenly and thin out towards the edges. ``r0`` is found
    by bisection so that, with the fully sampled centre (disc of ``center_radius`` or box
    ``calib = (cy, cx)``), the acceleration is ≈ ``acceleration``.
    """
    H, W = _shape2(shape)
    a = _check_accel(acceleration)
    centre, target = _centre_region(H, W, center_radius, calib, a)
    d = _radius_grid(H, W)
    profile = 1.0 + density_slope * d / max(d.max(), 1e-12)
    order = np.random.default_rng(seed).permutation(H * W)
    lo, hi = 0.0, float(max(H, W))
    best = None
    for _ in range(iters):
        r0 = 0.5 * (lo + hi)
        pts = _dart_throw(order, r0 * profile, centre) | centre
        n = int(pts.sum())
        if best is None or abs(n - target) < abs(int(best.sum()) - target):
            best = pts
        if n == target:
            break
        if n > target:
            lo = r0
        else:
            hi = r0
    return torch.from_numpy(best.astype(np.float32))
