"""Plain-PyTorch reference of every fused op: the CPU implementation of each custom op and the
ground truth the Triton kernels are tested against."""
