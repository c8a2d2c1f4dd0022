"""The imaging tasks of the command line as library functions: what each task means (:data:`TASKS`),
how its measurements are simulated from a ground truth or taken from measured k-space, and how
its images are shown.

Images follow the solvers' layout: (1, C, H, W) real, complex MRI images as (1, 2, H, W) (real,
imaginary). :func:`display` turns one into the array that metrics and figures use: the magnitude
(H, W) for complex tasks, (H, W) grey or (C, H, W) colour otherwise. Simulated noise is drawn from
a generator seeded with ``seed + 1000`` (independent of the solver's ``seed``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Task", "TASKS", "display", "mri_mask", "complex_noise", "simulate_mri", "kspace_problem",
           "image_operator", "simulate_image"]


def zero_filled(op, y):
    """The MRI baseline: zero-filled (coil-combined) reconstruction A^H y."""
    return op.zero_filled(y)


def pinv(op, y):
    """The image-task baseline: the pseudo-inverse A^+ y."""
    return op.pinv(y)


@dataclass(frozen=True)
class Task:
    """What a task name means: the SDI preset, how the baseline is formed and named, whether
    images are complex (shown as |x|), and the measurement noise std when none is given."""

    preset: str
    baseline: Callable
    baseline_name: str
    complex: bool = False
    noise: float = 0.0


_IMAGE_TASK = dict(preset="image", baseline=pinv, baseline_name="A^+ y")
TASKS: dict[str, Task] = {
    "mri": Task("mri", zero_filled, "zero-filled", complex=True),
    "inpaint": Task(**_IMAGE_TASK),
    "deblur": Task(**_IMAGE_TASK),
    "sr": Task(**_IMAGE_TASK),
    "denoise": Task(**dict(_IMAGE_TASK, preset="denoise", noise=25 / 255)),
}
"""The tasks by name (``fastsd reconstruct --task NAME``)."""


def display(x: torch.Tensor, task: Task) -> np.ndarray:
    """One problem's image for metrics/PNGs: magnitude for complex tasks, (C,H,W) or (H,W) otherwise."""
    from fastsd.metrics import magnitude

    x = x.detach().cpu()
    if task.complex:
        return magnitude(x[:1])[0].numpy()
    x = x[0].to(torch.float32).numpy()
    return x[0] if x.shape[0] == 1 else x


# -- MRI ----------------------------------------------------------------------------------------


def mri_mask(shape: tuple[int, int], kind: str = "equispaced", acceleration: float = 4.0, acs: int = 20,
             seed: int = 0) -> torch.Tensor:
    """A 1-D Cartesian mask (H, W) over the columns: 'equispaced' or 'random' lines at
    ``acceleration`` with ``acs`` fully sampled centre lines (at most W)."""
    from fastsd.ops.masks import equispaced_mask, random_mask

    acs = min(acs, shape[1])
    if kind == "equispaced":
        return equispaced_mask(shape, acceleration, acs_lines=acs, seed=seed)
    if kind == "random":
        return random_mask(shape, acceleration, center_fraction=acs / shape[1], seed=seed)
    raise ValueError(f"mask kind must be 'equispaced' or 'random', got {kind!r}")


def complex_noise(y: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """``y`` plus complex Gaussian noise of standard deviation ``sigma`` (σ/√2 per real component)."""
    g = torch.Generator().manual_seed(seed + 1000)
    n = torch.randn(y.shape + (2,), generator=g) * (sigma / math.sqrt(2))
    return y + torch.view_as_complex(n).to(y.device)


def simulate_mri(x: torch.Tensor, mask: torch.Tensor, coils: int = 1, noise: float = 0.0, seed: int = 0):
    """``(y, op)``: k-space of the complex image ``x`` (1, 2, H, W) under ``mask`` with ``coils``
    simulated birdcage coils (1 = single coil), plus complex noise of std ``noise`` on the sampled
    entries."""
    from fastsd.ops.coils import birdcage_maps
    from fastsd.ops.mri import MRI

    H, W = x.shape[-2:]
    op = MRI(mask, birdcage_maps(coils, (H, W)) if coils > 1 else None)
    y = op(x)
    if noise > 0:
        y = op.mask * complex_noise(y, noise, seed)
    return y, op


def kspace_problem(kspace: torch.Tensor, mask: torch.Tensor, acs: int):
    """``(y, op, truth)`` from fully sampled multi-coil k-space (C, H, W), undersampled
    retrospectively with ``mask``: coil maps from the ``acs`` centre columns
    (:func:`fastsd.ops.mri.estimate_coil_maps`; none for one coil), and the truth the coil
    combination of the fully sampled coil images."""
    from fastsd.ops.mri import MRI, coil_combined, estimate_coil_maps

    C, H, W = kspace.shape
    smaps = None if C == 1 else estimate_coil_maps(kspace, min(acs, W))
    return mask * kspace[None], MRI(mask, smaps), coil_combined(kspace, smaps)


# -- image tasks --------------------------------------------------------------------------------


def image_operator(task: str, shape: tuple[int, int], keep: float = 0.5, box: int = 0, kernel: str = "gaussian",
                   blur_sigma: float = 2.0, motion_length: float = 9.0, motion_angle: float = 0.0, factor: int = 4,
                   seed: int = 0):
    """The operator of an image task on (H, W) images: 'inpaint' (a random ``keep`` fraction of
    pixels, or a centred hidden ``box``), 'deblur' (Gaussian ``blur_sigma`` or motion kernel), 'sr'
    (``factor`` x downsampling) or 'denoise' (identity)."""
    from fastsd.ops.image import (
        Blur,
        Denoise,
        Downsample,
        Inpainting,
        box_mask,
        gaussian_kernel,
        motion_kernel,
        random_pixel_mask,
    )

    if task == "inpaint":
        return Inpainting(box_mask(shape, box) if box else random_pixel_mask(shape, keep, seed=seed))
    if task == "deblur":
        k = gaussian_kernel(blur_sigma) if kernel == "gaussian" else motion_kernel(motion_length, motion_angle)
        return Blur(k, shape)
    if task == "sr":
        return Downsample(factor, img_size=shape)
    if task == "denoise":
        return Denoise()
    raise ValueError(f"unknown image task {task!r}; expected inpaint, deblur, sr or denoise")


def simulate_image(op, x: torch.Tensor, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Measurements ``A x`` plus real Gaussian noise of std ``noise``."""
    y = op(x)
    if noise > 0:
        y = y + noise * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1000))
    return y
