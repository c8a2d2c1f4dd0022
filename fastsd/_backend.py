"""Which implementation a fused op runs: compiled Triton kernels on CUDA, the PyTorch reference
elsewhere. ``FASTSD_BACKEND=reference`` (or :func:`use_backend`) forces the reference on CUDA too,
which is how benchmarks time both paths side by side."""
from __future__ import annotations

import contextlib
import importlib
import os

import torch

_BACKENDS = ("auto", "triton", "reference")
_state = {"backend": os.environ.get("FASTSD_BACKEND", "auto")}
if _state["backend"] not in _BACKENDS:
    raise ValueError(f"FASTSD_BACKEND must be one of {_BACKENDS}, got {_state['backend']!r}")


def interpreter_enabled() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(t: torch.Tensor) -> bool:
    """Whether a fused op on ``t`` should launch Triton kernels (CUDA tensors, backend not 'reference')."""
    return t.is_cuda and _state["backend"] != "reference"


def implementation(t: torch.Tensor, kernels: str, reference):
    """The module whose functions a fused op calls on ``t``: the launchers of
    ``fastsd.kernels.<kernels>`` when :func:`use_triton` (imported on first use, so CPU-only runs
    never load Triton kernels), else ``reference`` (same function names and semantics)."""
    if use_triton(t):
        return importlib.import_module(f"fastsd.kernels.{kernels}")
    return reference


def current_backend() -> str:
    return _state["backend"]


@contextlib.contextmanager
def use_backend(name: str):
    """Temporarily select ``'auto'``, ``'triton'`` or ``'reference'`` for fused ops."""
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {name!r}")
    old, _state["backend"] = _state["backend"], name
    try:
        yield
    finally:
        _state["backend"] = old
