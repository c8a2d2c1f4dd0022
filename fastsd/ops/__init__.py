"""Linear forward operators ``y = A x`` of the imaging tasks, all on the
:class:`~fastsd.ops.base.LinearOperator` protocol (forward, adjoint, normal, fused fidelity
loss + gradient, prox_l2, pinv, project, norm). Batch dim 0 holds independent problems."""
from fastsd.ops.base import LinearOperator
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.image import (
    Blur,
    Denoise,
    Downsample,
    Inpainting,
    anisotropic_gaussian_kernel,
    gaussian_kernel,
    motion_kernel,
)
from fastsd.ops.image_masks import box_mask, random_pixel_mask
from fastsd.ops.masks import acceleration_of, equispaced_mask, gaussian_mask_2d, poisson_disc_mask_2d, random_mask
from fastsd.ops.matrix import MatrixOp, compressed_sensing_matrix, radar_steering_matrix
from fastsd.ops.mri import MRI, MRI3D, coil_combined, estimate_coil_maps

__all__ = [
    "LinearOperator", "MRI", "MRI3D", "Inpainting", "Denoise", "Blur", "Downsample", "MatrixOp",
    "equispaced_mask", "random_mask", "gaussian_mask_2d", "poisson_disc_mask_2d", "acceleration_of",
    "birdcage_maps", "estimate_coil_maps", "coil_combined", "random_pixel_mask", "box_mask", "gaussian_kernel", "anisotropic_gaussian_kernel",
    "motion_kernel", "compressed_sensing_matrix", "radar_steering_matrix",
]
