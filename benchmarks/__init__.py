"""Benchmarks: ``python -m benchmarks.run`` (one side-by-side report per device: the harness in
:mod:`benchmarks.harness`, one module per section in :mod:`benchmarks.sections`, the problem
builders in :mod:`benchmarks.cases`)."""
