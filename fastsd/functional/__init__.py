"""The ``torch.library.custom_op("fastsd::...")`` boundary: one module per fused-op family.
CUDA tensors run Triton kernels; everything else runs the reference in :mod:`fastsd.reference`."""
