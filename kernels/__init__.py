"""Triton kernels, one module per fused op (installed as ``fastsd.kernels``); the grid, layout and
heuristics helpers they share live in :mod:`fastsd.kernels.utils`.

Modules import Triton at import time; set ``TRITON_INTERPRET=1`` before importing them to run
the kernels on CPU tensors in Triton's interpreter."""
