"""fastsd's solvers as a ``deepinv.models.Reconstructor``."""
from __future__ import annotations

import torch
from deepinv.models import Reconstructor as _Reconstructor

from fastsd.interop.deepinv.bridge import to_fastsd


class SDIReconstructor(_Reconstructor):
    """Self-diffusion (or another fastsd solver) as a ``deepinv.models.Reconstructor``.

    ``SDIReconstructor(**options)(y, physics)`` runs ``fastsd.solve(y, op, method, **options)``
    on the fastsd form of ``physics`` (:func:`to_fastsd`) and returns the reconstruction in
    deepinv's image layout. Options are those of the solver (for SDI: ``preset``, ``T``, ``K``,
    ``lr``, ``small``, ``seed``, ``device``, ...). The last :class:`~fastsd.solvers.base.SolveResult`
    is kept in ``result_``. Solvers train networks, so gradients are enabled inside even when the
    caller runs under ``torch.no_grad()``.
    """

    def __init__(self, method: str = "sdi", **options):
        super().__init__()
        from fastsd.solvers.base import get_solver

        get_solver(method)  # fail early on an unknown method
        self.method, self.options = method, dict(options)
        self.result_ = None

    def forward(self, y, physics, **kwargs) -> torch.Tensor:
        """The reconstruction from ``y`` (a tensor, or a ``TensorList`` for stacked physics)."""
        from fastsd.api import solve

        op, y_fs = to_fastsd(physics, y)
        with torch.enable_grad():
            self.result_ = solve(y_fs.detach(), op, self.method, **self.options, **kwargs)
        return self.result_.x

    def extra_repr(self) -> str:
        return f"method={self.method!r}, " + ", ".join(f"{k}={v!r}" for k, v in self.options.items())
