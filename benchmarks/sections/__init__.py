"""One module per benchmark section, in the order :mod:`benchmarks.run` runs them.

Each module has ``run(b)`` (measures through the :class:`benchmarks.harness.Bench` ``b``),
``METHOD`` (what it measures and how, copied into the report), ``COLUMNS`` (its markdown table:
header and cell key, see :func:`benchmarks.harness._cell`) and, where the issue sets targets,
``targets(results)``.
"""
from benchmarks.sections import (
    anchor,
    batch,
    copy,
    deepinv,
    deepinv_dip,
    frontier,
    levers,
    native,
    ops,
    paper,
    step,
    volume3d,
)

SECTIONS = dict(copy=copy, ops=ops, step=step, levers=levers, batch=batch, anchor=anchor, volume3d=volume3d,
                native=native, frontier=frontier, paper=paper, deepinv=deepinv, deepinv_dip=deepinv_dip)
# What a run without --only measures; volume3d (full 3-D solves, minutes on a GPU), native (needs
# the optional extension, scripts/native_gpu_check.sh), frontier (hundreds of full solves), paper
# (the paper's experiments, tens of minutes), deepinv and deepinv_dip (need deepinv: run from
# .venv-deepinv) run when named.
DEFAULT = ("copy", "ops", "step", "levers", "batch", "anchor")
