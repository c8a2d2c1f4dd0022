"""Which implementation a fused op runs. Every op family is one row of :data:`FAMILIES`: its Triton
kernels module, its PyTorch reference module, whether :mod:`fastsd._native` implements it, and the
functions the custom ops dispatch to, which every one of those modules defines with the same
leading parameters (tests/kernels/test_backend.py checks the table against the modules' signatures).

CPU tensors always run the reference. CUDA tensors run, by backend (``FASTSD_BACKEND`` at import,
or :func:`use_backend`):

* ``auto`` (default): the compiled Triton kernels. The native cuFFT-callback ops are chosen only
  when asked for; ``python -m benchmarks.run --only copy,native`` times them against Triton.
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
from typing import NamedTuple

import torch

__all__ = ["Family", "FAMILIES", "implementation", "describe", "use_backend"]


class Family(NamedTuple):
    """One op family: where its implementations live and what the custom ops call on them."""

    kernels: str  # Triton launchers (imported on first CUDA use only)
    reference: str  # plain-PyTorch reference: CPU path and ground truth
    native: bool  # fastsd._native implements ``functions`` too
    functions: tuple[str, ...]  # the functions the fastsd::* custom ops dispatch to


FAMILIES: dict[str, Family] = {
    "mri": Family("fastsd.kernels.mri", "fastsd.reference.mri", True,
                  ("mri_forward", "mri_adjoint", "mri_normal", "mri_fidelity", "mri_dc")),
    "noise": Family("fastsd.kernels.noise", "fastsd.reference.noise", False, ("noisy_input", "gaussian_noise")),
    "fidelity": Family("fastsd.kernels.fidelity", "fastsd.reference.fidelity", False, ("masked_fidelity",)),
    "batchnorm": Family("fastsd.kernels.batchnorm", "fastsd.reference.batchnorm", False,
                        ("bn_relu_forward", "bn_relu_backward")),
    "upcat": Family("fastsd.kernels.upcat", "fastsd.reference.upcat", False, ("upcat_forward", "upcat_backward")),
}
NATIVE = "fastsd._native"

_BACKENDS = ("auto", "triton", "native", "reference")
_state = {"backend": "auto"}


def _check(name: str, what: str) -> str:
    if name not in _BACKENDS:
        raise ValueError(f"{what} must be one of {_BACKENDS}, got {name!r}")
    if name == "native":
        reason = importlib.import_module(NATIVE).error()
        if reason is not None:
            raise RuntimeError(f"{what}='native' needs the CUDA extension fastsd._C, which is not available "
                               f"({reason}); build it with FASTSD_BUILD_CUDA=1 (see README) or use 'triton'")
    return name


_state["backend"] = _check(os.environ.get("FASTSD_BACKEND", "auto"), "FASTSD_BACKEND")


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown op family {name!r}; FAMILIES has {sorted(FAMILIES)}")
    return FAMILIES[name]


def implementation(t: torch.Tensor, family: str):
    """The module whose functions the op family ``family`` (a key of :data:`FAMILIES`) calls on
    ``t``: the reference for CPU tensors or the ``'reference'`` backend; :mod:`fastsd._native` when
    the family has native ops and the backend and data allow it (see the module doc); else the
    Triton launchers. Modules are imported on first use, so CPU-only runs never load Triton
    kernels or the extension."""
    fam = _family(family)
    backend = _state["backend"]
    if not t.is_cuda or backend == "reference":
        return importlib.import_module(fam.reference)
    if fam.native and backend == "native":
        mod = importlib.import_module(NATIVE)
        if mod.available() and mod.supports(t):
            return mod
    return importlib.import_module(fam.kernels)


def describe(t: torch.Tensor, family: str = "mri") -> str:
    """'native', 'triton' or 'reference': what an op of ``family`` runs on ``t``."""
    mod = implementation(t, family).__name__
    return "native" if mod == NATIVE else "reference" if mod == _family(family).reference else "triton"


@contextlib.contextmanager
def use_backend(name: str):
    """Temporarily select a backend (``'auto'``, ``'triton'``, ``'native'`` or ``'reference'``)."""
    old, _state["backend"] = _state["backend"], _check(name, "backend")
    try:
        yield
    finally:
        _state["backend"] = old
