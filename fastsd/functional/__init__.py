"""The ``torch.library.custom_op("fastsd::...")`` boundary: one module per fused-op family.
CUDA tensors run Triton kernels; everything else runs the reference in :mod:`fastsd.reference`.
Importing this package registers every ``torch.ops.fastsd`` op."""
from fastsd.functional.batchnorm import bn_relu
from fastsd.functional.fidelity import masked_fidelity, residual_loss
from fastsd.functional.mri import mri_adjoint, mri_dc, mri_fidelity, mri_forward, mri_normal
from fastsd.functional.noise import gaussian_noise, noisy_input
from fastsd.functional.upcat import upsample_concat

__all__ = ["mri_forward", "mri_adjoint", "mri_normal", "mri_fidelity", "mri_dc", "noisy_input", "gaussian_noise",
           "masked_fidelity", "residual_loss", "bn_relu", "upsample_concat"]
