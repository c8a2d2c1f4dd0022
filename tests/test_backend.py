"""Kernel-or-reference selection (:mod:`fastsd._backend`): CPU tensors always run the reference,
``use_backend('reference')`` and ``FASTSD_BACKEND=reference`` force it on CUDA, unknown names fail.
The native backend's selection is tested in tests/test_native_mri.py."""

import pytest
import torch

from fastsd import _backend
from fastsd.reference import fidelity as ref


def test_cpu_runs_reference():
    assert _backend.implementation(torch.zeros(1), "fidelity", ref) is ref
    with _backend.use_backend("auto"):
        assert _backend.implementation(torch.zeros(1), "fidelity", ref) is ref


@pytest.mark.gpu
def test_cuda_runs_kernels_unless_reference_is_forced():
    t = torch.zeros(1, device="cuda")
    assert _backend.implementation(t, "fidelity", ref).__name__ == "fastsd.kernels.fidelity"
    with _backend.use_backend("reference"):
        assert _backend.implementation(t, "fidelity", ref) is ref
    assert _backend.implementation(t, "fidelity", ref) is not ref


def test_use_backend_restores_and_rejects_unknown_names():
    before = dict(_backend._state)
    with _backend.use_backend("reference"):
        assert _backend._state["backend"] == "reference"
    assert _backend._state == before
    with pytest.raises(ValueError, match="backend must be one of"):
        with _backend.use_backend("cuda"):
            pass


@pytest.mark.parametrize("name,ok", [("reference", True), ("auto", True), ("triton", True), ("cuda", False)])
def test_environment_variable(backend_from_env, name, ok):
    if ok:
        assert backend_from_env(name)._state["backend"] == name
    else:
        with pytest.raises(ValueError, match="FASTSD_BACKEND must be one of"):
            backend_from_env(name)
