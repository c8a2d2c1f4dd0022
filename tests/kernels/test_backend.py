"""Kernel-or-reference selection (:mod:`fastsd._backend`): the op-family table against the modules
it names (signatures only, so a renamed launcher or a wrong family key fails on CPU too), CPU
tensors always run the reference, ``use_backend('reference')`` and ``FASTSD_BACKEND=reference``
force it on CUDA, unknown names fail. The native backend's selection is tested in
tests/kernels/test_native_mri.py."""
import ast
import importlib
import inspect
import pathlib

import pytest
import torch

from fastsd import _backend
from fastsd.reference import fidelity as ref

FUNCTIONAL = pathlib.Path(_backend.__file__).parent / "functional"
DISPATCHED = [(fam, fn) for fam, spec in _backend.FAMILIES.items() for fn in spec.functions]


def _params(fn) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("family,name", DISPATCHED, ids=lambda v: v)
def test_every_implementation_defines_the_dispatched_function(family, name):
    """The reference's parameters are the contract: the Triton launcher (and the native op) take
    the same ones first, with the same defaults; what they add (``out``, ``block``) has defaults."""
    spec = _backend.FAMILIES[family]
    modules = [spec.kernels] + ([_backend.NATIVE] if spec.native else [])
    contract = _params(getattr(importlib.import_module(spec.reference), name))
    for mod_name in modules:
        mod = importlib.import_module(mod_name)
        assert callable(getattr(mod, name, None)), f"{mod_name} does not define {name}"
        got = _params(getattr(mod, name))
        assert got[:len(contract)] == contract, f"{mod_name}.{name}{got} does not start with {contract}"
        extra = [p for p, _, default in got[len(contract):] if default is inspect.Parameter.empty]
        assert not extra, f"{mod_name}.{name}: parameters beyond the reference's need defaults: {extra}"


def test_functional_modules_dispatch_by_table_keys():
    """Every ``implementation(t, "<family>").<function>`` in fastsd/functional names a family of the
    table and one of its functions; every function of the table is dispatched (no stale rows)."""
    seen = set()
    for path in sorted(FUNCTIONAL.glob("*.py")):
        tree = ast.parse(path.read_text())
        for attr in ast.walk(tree):
            call = getattr(attr, "value", None)
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "implementation"):
                continue
            where = f"{path.name}:{call.lineno}"
            assert isinstance(attr, ast.Attribute), f"{where}: call a function of the module at once"
            assert len(call.args) == 2 and isinstance(call.args[1], ast.Constant), \
                f"{where}: implementation(t, family) takes a literal family key"
            key = call.args[1].value
            assert key in _backend.FAMILIES, f"{where}: unknown family {key!r}"
            assert attr.attr in _backend.FAMILIES[key].functions, f"{where}: {attr.attr} is not in family {key!r}"
            seen.add((key, attr.attr))
    assert seen == set(DISPATCHED)


def test_unknown_family_fails_on_any_device():
    with pytest.raises(ValueError, match="unknown op family 'mri_dc'"):
        _backend.implementation(torch.zeros(1), "mri_dc")


def test_cpu_runs_reference():
    assert _backend.implementation(torch.zeros(1), "fidelity") is ref
    with _backend.use_backend("auto"):
        assert _backend.implementation(torch.zeros(1), "fidelity") is ref
    assert _backend.describe(torch.zeros(1), "fidelity") == "reference"


@pytest.mark.gpu
def test_cuda_runs_kernels_unless_reference_is_forced():
    t = torch.zeros(1, device="cuda")
    assert _backend.implementation(t, "fidelity").__name__ == "fastsd.kernels.fidelity"
    with _backend.use_backend("reference"):
        assert _backend.implementation(t, "fidelity") is ref
    assert _backend.implementation(t, "fidelity") is not ref


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
