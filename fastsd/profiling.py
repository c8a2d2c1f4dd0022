"""NVTX ranges for Nsight Systems, zero-cost unless enabled.

Enable with ``FASTSD_NVTX=1`` in the environment or :func:`enable_nvtx` at run time; that needs the
optional ``nvtx`` package (``pip install 'fastsd[profile]'``), imported only then. Ranges are
meant for solver phases, operator calls and graph replays — never inside a CUDA-graph capture
(a range pushed during capture is not replayed)."""
from __future__ import annotations

import contextlib
import functools
import os

__all__ = ["nvtx_range", "enable_nvtx", "nvtx_enabled", "annotate"]

_enabled = False
_DOMAIN = "fastsd"


def _nvtx():
    """The ``nvtx`` module, or a one-line error saying how to get it."""
    try:
        import nvtx
    except ImportError:
        raise ImportError("NVTX ranges (FASTSD_NVTX=1 or fastsd.profiling.enable_nvtx()) need the nvtx package: "
                          "pip install 'fastsd[profile]'") from None
    return nvtx


def nvtx_enabled() -> bool:
    return _enabled


def enable_nvtx(flag: bool = True) -> None:
    """Turn fastsd's NVTX ranges on or off for the whole process (on needs the ``nvtx`` package)."""
    global _enabled
    if flag:
        _nvtx()
    _enabled = bool(flag)


@contextlib.contextmanager
def _push(name: str, color: str):
    nvtx = _nvtx()
    rng = nvtx.start_range(message=name, color=color, domain=_DOMAIN)
    try:
        yield
    finally:
        nvtx.end_range(rng)


def nvtx_range(name: str, color: str = "blue"):
    """A context manager: an NVTX range when enabled, a no-op (no import, no call) otherwise."""
    return _push(name, color) if _enabled else contextlib.nullcontext()


def annotate(name: str | None = None, color: str = "green"):
    """Decorator form of :func:`nvtx_range` (the check happens per call, so it can be toggled)."""

    def deco(fn):
        label = name or fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not _enabled:
                return fn(*args, **kwargs)
            with _push(label, color):
                return fn(*args, **kwargs)

        return wrapper

    return deco


enable_nvtx(os.environ.get("FASTSD_NVTX", "0") == "1")
