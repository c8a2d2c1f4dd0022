"""NVTX ranges (:mod:`fastsd.profiling`): no-ops when disabled, push/pop pairs when enabled, and a
one-line error when asked for without the optional ``nvtx`` package. A stand-in module records
the calls, so the tests run with or without ``nvtx`` installed."""
import os
import subprocess
import sys
import types

import pytest

import fastsd.profiling as prof


@pytest.fixture
def calls(monkeypatch):
    seen = []
    fake = types.SimpleNamespace(start_range=lambda message, **kw: seen.append(message) or message,
                                 end_range=lambda rng: seen.append(f"end {rng}"))
    monkeypatch.setitem(sys.modules, "nvtx", fake)
    yield seen
    prof.enable_nvtx(False)


def test_disabled_ranges_do_not_touch_nvtx(calls):
    prof.enable_nvtx(False)
    with prof.nvtx_range("step"):
        pass
    assert prof.annotate("f")(lambda: 7)() == 7
    assert calls == []


def test_enabled_ranges_push_and_pop(calls):
    prof.enable_nvtx(True)
    with prof.nvtx_range("step"):
        calls.append("body")
    assert prof.annotate("f")(lambda: 7)() == 7
    assert calls == ["step", "body", "end step", "f", "end f"]


def test_range_closes_on_error(calls):
    prof.enable_nvtx(True)
    with pytest.raises(RuntimeError):
        with prof.nvtx_range("boom"):
            raise RuntimeError("x")
    assert calls == ["boom", "end boom"]


def test_profiling_without_nvtx_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvtx", None)  # import nvtx raises ImportError
    with pytest.raises(ImportError, match=r"need the nvtx package: pip install 'fastsd\[profile\]'") as err:
        prof.enable_nvtx(True)
    assert "\n" not in str(err.value) and not prof.nvtx_enabled()
    with prof.nvtx_range("step"):  # still disabled: nothing imported
        pass
    blocked = "import sys; sys.modules['nvtx'] = None; import fastsd.profiling"
    run = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True,
                         env={**os.environ, "FASTSD_NVTX": "1"})
    assert run.returncode != 0 and "ImportError: NVTX ranges (FASTSD_NVTX=1" in run.stderr
