"""The one-call entry point: ``solve(y, op, method="sdi", **options)``."""
from __future__ import annotations

import inspect

import fastsd.solvers  # noqa: F401  (registers the solvers)
from fastsd.sanity import check_finite_result
from fastsd.solvers.base import SolveResult, get_solver

__all__ = ["solve"]


def solve(y, op, method: str = "sdi", **kwargs) -> SolveResult:
    """Reconstruct ``x`` from measurements ``y = op(x) (+ noise)`` with the named solver.

    Keyword arguments that the solver's ``solve`` method accepts (e.g. ``callback``, ``x_true``)
    go to that call; all others configure the solver, e.g.
    ``solve(y, op, "sdi", preset="mri", small=True, seed=0)``. Returns a
    :class:`~fastsd.solvers.base.SolveResult` (``x``, ``history``, ``info``). A result with NaN or
    Inf values raises :class:`fastsd.sanity.ResultError` (the result rides along as ``err.result``).
    """
    cls = get_solver(method)
    params = inspect.signature(cls.solve).parameters
    call_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in params and k not in ("self", "y", "op")}
    try:
        solver = cls(**kwargs)
    except TypeError as e:  # an option the solver does not know
        raise ValueError(f"method {method!r}: {e}") from None
    result = solver.solve(y, op, **call_kw)
    check_finite_result(result.x, f"the {method} result", result)
    return result
