"""Fixtures of the deepinv interop tests."""
import pytest


@pytest.fixture(params=["fused"])
def cpu_path(request, monkeypatch):
    """The CPU path of the deepinv drop-in classes, for the modules that ask for it
    (``pytestmark = pytest.mark.usefixtures("cpu_path")``): on CPU tensors the classes take the
    direct path by default (test_deepinv_direct.py); these tests check the fused path, which CUDA
    takes, unless a test asks for both (``deepinv_cases.BOTH_PATHS``)."""
    from fastsd.interop import deepinv as fi

    monkeypatch.setattr(fi._Fused, "cpu_path", request.param)
    return request.param
