import nvtx
import pytest

import fastsd.profiling as prof


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(nvtx, "start_range", lambda message, **kw: seen.append(message) or message)
    monkeypatch.setattr(nvtx, "end_range", lambda rng: seen.append(f"end {rng}"))
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
