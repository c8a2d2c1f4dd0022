"""Run deepinv code, deepinv's own test suite included, on fastsd's drop-in physics.

:func:`substitute` puts :mod:`fastsd.interop.deepinv`'s ``MRI``, ``MultiCoilMRI``,
``Inpainting``, ``BlurFFT`` and ``Downsampling`` in place of deepinv's classes in
``deepinv.physics`` and the modules that define them, so every later ``dinv.physics.MRI(...)``
(and ``from deepinv.physics.mri import MRI``) builds fastsd's class. Classes that deepinv derives
from them (``DynamicMRI``, ``Upsampling``, ...) keep deepinv's originals as bases.

As a pytest plugin (``pytest -p fastsd.interop.deepinv.substitute``, or its former name
``fastsd.interop.deepinv_substitute``) it substitutes before collection and, when
``FASTSD_DEEPINV_REPORT`` names a file, writes there a JSON record per test: its outcome, the
fastsd classes it constructed, how many operator calls took the fused, the deepinv and the direct
path, and why the deepinv path ran. ``FASTSD_DEEPINV_SUBSTITUTE=0`` records
outcomes without substituting (the native run to compare against); ``FASTSD_DEEPINV_CPU_PATH``
sets the classes' ``cpu_path`` (``'direct'``, their default, or ``'fused'``).
"""
from __future__ import annotations

import json
import os

import deepinv

from fastsd.interop import deepinv as fi

CLASSES = ("MRI", "MultiCoilMRI", "Inpainting", "BlurFFT", "Downsampling")
_MODULES = ("deepinv.physics", "deepinv.physics.mri", "deepinv.physics.inpainting", "deepinv.physics.blur")

_events: list[tuple[str, str]] = []  # ("built", class), ("path", "fastsd" | "deepinv"), ("why", reason): per test


def substitute() -> None:
    """Replace deepinv's five physics classes by fastsd's (idempotent)."""
    import importlib

    for name in _MODULES:
        module = importlib.import_module(name)
        for cls in CLASSES:
            if hasattr(module, cls):
                setattr(module, cls, getattr(fi, cls))
    assert deepinv.physics.MRI is fi.MRI


def _record() -> None:
    """Count constructions and routed calls of fastsd's classes into ``_events``."""
    for cls in CLASSES:
        klass = getattr(fi, cls)
        init = klass.__init__

        def __init__(self, *args, _init=init, _name=cls, **kwargs):
            _events.append(("built", _name))
            _init(self, *args, **kwargs)

        klass.__init__ = __init__
    route = fi._Fused._route

    def _route(self, *inputs, **kwargs):
        op = route(self, *inputs, **kwargs)
        _events.append(("path", self.fastsd_path))
        if self.fallback_reason:
            _events.append(("why", f"{type(self).__name__}: {self.fallback_reason}"))
        return op

    fi._Fused._route = _route
    direct = fi._Fused._direct

    def _direct(self, *args, **kwargs):
        hit = direct(self, *args, **kwargs)
        if hit is not None:
            _events.append(("path", "direct"))
        return hit

    fi._Fused._direct = _direct


# -- pytest plugin ----------------------------------------------------------------------------

_results: dict[str, dict] = {}


def pytest_configure(config):
    if os.environ.get("FASTSD_DEEPINV_SUBSTITUTE", "1") != "0":
        substitute()
        _record()
        if os.environ.get("FASTSD_DEEPINV_CPU_PATH"):
            fi._Fused.cpu_path = os.environ["FASTSD_DEEPINV_CPU_PATH"]


def pytest_runtest_setup(item):
    _events.clear()


def pytest_runtest_logreport(report):
    r = _results.setdefault(report.nodeid, {"outcome": "passed", "built": [], "paths": {}})
    if report.failed:
        r["outcome"] = "failed"
    elif report.skipped and r["outcome"] == "passed":
        r["outcome"] = "skipped"
    if report.when == "teardown":
        r["built"] = sorted({c for kind, c in _events if kind == "built"})
        r["paths"] = {p: sum(1 for kind, q in _events if kind == "path" and q == p) for p in ("fastsd", "deepinv", "direct")}
        r["fallbacks"] = sorted({why for kind, why in _events if kind == "why"})


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("FASTSD_DEEPINV_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_results, f, indent=0, sort_keys=True)
