"""Is a finished reconstruction usable? One rule, shared by :func:`fastsd.solve` and the command line.

A result is refused when

* it holds a non-finite value (NaN or Inf), or
* it *diverged*: its data residual ``‖A x − y‖`` exceeds :data:`DIVERGENCE_FACTOR` (10) times
  ``‖y‖``, the residual of the all-zero image. Any reconstruction worth keeping explains the
  measurements better than no image at all; ten times worse means the iterates ran away (e.g. a
  learning rate far too large).

:func:`check_result` raises :class:`ResultError`, which carries the result (nothing computed is
lost: ``err.result``) and a one-line reason. ``fastsd.solve`` applies the non-finite test to every
solve; the command line applies both tests and reports a refused result as a failed input.
"""
from __future__ import annotations

import torch

__all__ = ["DIVERGENCE_FACTOR", "ResultError", "check_finite_result", "check_result"]

DIVERGENCE_FACTOR = 10.0


class ResultError(ValueError):
    """A solve finished but its result cannot be trusted; ``result`` holds what it returned."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


def check_finite_result(x: torch.Tensor, what: str = "the reconstruction", result=None) -> None:
    """Raise :class:`ResultError` when ``x`` holds NaN or Inf (``result`` travels with the error)."""
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ResultError(f"{what} has {bad} non-finite value(s) of {x.numel()} (NaN or Inf): the solve diverged "
                          f"or its prior returned non-finite values; lower the learning rate / step size", result)


def check_result(x: torch.Tensor, y: torch.Tensor, op, what: str = "the reconstruction", result=None,
                 factor: float = DIVERGENCE_FACTOR) -> dict:
    """The rule above for ``x`` (operator layout) against measurements ``y`` of ``op``; returns
    ``{"residual": ‖A x − y‖, "y_norm": ‖y‖}`` (largest ratio over the batch) when ``x`` passes."""
    check_finite_result(x, what, result)
    with torch.no_grad():
        r = torch.linalg.vector_norm((op(x.to(y.real.dtype)) - y).flatten(1), dim=1)
        n = torch.linalg.vector_norm(y.flatten(1), dim=1)
    ratio = r / n.clamp_min(torch.finfo(n.dtype).tiny)
    b = int(ratio.argmax())
    res, ref = float(r[b]), float(n[b])
    if not ratio[b] <= factor:
        raise ResultError(f"{what} diverged: data residual ‖A x − y‖ = {res:.4g} is {float(ratio[b]):.3g} times ‖y‖ "
                          f"= {ref:.4g} (the all-zero image's residual; the limit is {factor:g}x); lower the "
                          f"learning rate / step size", result)
    return {"residual": res, "y_norm": ref}
