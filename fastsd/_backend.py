"""Which implementation a fused op runs. CPU tensors always run the PyTorch reference. CUDA
tensors run, by backend (``FASTSD_BACKEND`` at import, or :func:`use_backend`):

* ``auto`` (default): the compiled Triton kernels. The native cuFFT-callback ops are not chosen
  automatically until a GPU benchmark shows them correct and faster (``python -m benchmarks.run --only copy,native``).
* ``triton``: the Triton kernels.
* ``native``: the native ops of :mod:`fastsd._native` where the op family has them (2-D MRI), the
  optional extension ``fastsd._C`` is built and the data is supported; an error if the extension
  is missing (ops and shapes without a native implementation still run Triton).
* ``reference``: the PyTorch reference, which is how benchmarks time the paths side by side.

:func:`describe` says which one an op on a given tensor runs."""
from __future__ import annotations

import contextlib
import importlib
import os

import torch

_BACKENDS = ("auto", "triton", "native", "reference")
_state = {"backend": "auto"}


def _check(name: str, what: str) -> str:
    if name not in _BACKENDS:
        raise ValueError(f"{what} must be one of {_BACKENDS}, got {name!r}")
    if name == "native":
        reason = importlib.import_module("fastsd._native").error()
        if reason is not None:
            raise RuntimeError(f"{what}='native' needs the CUDA extension fastsd._C, which is not available "
                               f"({reason}); build it with FASTSD_BUILD_CUDA=1 (see README) or use 'triton'")
    return name


_state["backend"] = _check(os.environ.get("FASTSD_BACKEND", "auto"), "FASTSD_BACKEND")


def implementation(t: torch.Tensor, kernels: str, reference, native: bool = False):
    """The module whose functions a fused op calls on ``t``: ``reference`` for CPU tensors or the
    ``'reference'`` backend; :mod:`fastsd._native` when ``native`` (the op family has native ops)
    and the backend and data allow it (see the module doc); else the launchers of
    ``fastsd.kernels.<kernels>``. Modules are imported on first use, so CPU-only runs never load
    Triton kernels or the extension. All have the same function names and semantics."""
    backend = _state["backend"]
    if not t.is_cuda or backend == "reference":
        return reference
    if native and backend == "native":
        mod = importlib.import_module("fastsd._native")
        if mod.available() and mod.supports(t):
            return mod
    return importlib.import_module(f"fastsd.kernels.{kernels}")


def describe(t: torch.Tensor, kernels: str = "mri_dc", native: bool = True) -> str:
    """'native', 'triton' or 'reference': what an op of the family ``kernels`` runs on ``t``."""
    mod = implementation(t, kernels, None, native)
    if mod is None:
        return "reference"
    return "native" if mod.__name__ == "fastsd._native" else "triton"


@contextlib.contextmanager
def use_backend(name: str):
    """Temporarily select a backend (``'auto'``, ``'triton'``, ``'native'`` or ``'reference'``)."""
    old, _state["backend"] = _state["backend"], _check(name, "backend")
    try:
        yield
    finally:
        _state["backend"] = old
