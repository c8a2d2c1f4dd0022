"""Set-up for the pytest-benchmark suites (``python -m pytest benchmarks -q --benchmark-only``).

They are not part of the main test run (``testpaths = ["tests"]`` in pyproject.toml). Importing
:mod:`benchmarks.cases` first clears ``TRITON_INTERPRET`` on GPU machines, so the kernels compile.
On CPU, torch runs single-threaded: small shapes on shared cores time far more stably that way.
"""
import pytest
import torch

from benchmarks import cases

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def device():
    return cases.default_device()


@pytest.fixture
def bench(benchmark, device):
    """``bench(fn, rounds=None, warmup=None)``: time ``fn`` with pytest-benchmark's pedantic mode,
    one call per round, synchronising CUDA after each call so the round covers the GPU work."""

    def run(fn, rounds=None, warmup=None):
        if device.type == "cuda":
            def call():
                fn()
                torch.cuda.synchronize(device)
        else:
            call = fn
        rounds = rounds or (30 if device.type == "cuda" else 5)
        warmup = warmup if warmup is not None else (5 if device.type == "cuda" else 1)
        return benchmark.pedantic(call, rounds=rounds, warmup_rounds=warmup, iterations=1)

    return run
