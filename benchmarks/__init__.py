"""Benchmarks: ``python -m benchmarks.run`` (one side-by-side report per device: the harness in
:mod:`benchmarks.harness`, one module per section in :mod:`benchmarks.sections`) and the
pytest-benchmark suites ``python -m pytest benchmarks -q --benchmark-only``. Problem builders shared
by both live in :mod:`benchmarks.cases`."""
