"""Which implementation a fused op runs: compiled Triton kernels on CUDA, the PyTorch reference
elsewhere. ``FASTSD_BACKEND=reference`` (or :func:`use_backend`) forces the reference on CUDA too,
which is how benchmarks time both paths side by side."""
from __future__ import annotations

import contextlib
import importlib
import os

import torch

_BACKENDS = ("auto", "reference")
_state = {"backend": os.environ.get("FASTSD_BACKEND", "auto")}
if _state["backend"] not in _BACKENDS:
    raise ValueError(f"FASTSD_BACKEND must be one of {_BACKENDS}, got {_state['backend']!r}")


def implementation(t: torch.Tensor, kernels: str, reference):
    """The module whose functions a fused op calls on ``t``: the launchers of
    ``fastsd.kernels.<kernels>`` for CUDA tensors unless the backend is ``'reference'`` (imported
    on first use, so CPU-only runs never load Triton kernels), else ``reference`` (same function
    names and semantics)."""
    if t.is_cuda and _state["backend"] != "reference":
        return importlib.import_module(f"fastsd.kernels.{kernels}")
    return reference


@contextlib.contextmanager
def use_backend(name: str):
    """Temporarily select ``'auto'`` or ``'reference'`` for fused ops."""
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {name!r}")
    old, _state["backend"] = _state["backend"], name
    try:
        yield
    finally:
        _state["backend"] = old
