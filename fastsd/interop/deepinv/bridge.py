"""The reverse bridge: a deepinv physics and its measurement as a fastsd operator and measurement,
so that fastsd's solvers run on deepinv problems (fused where fastsd has an operator)."""
from __future__ import annotations

import deepinv as _dinv
import torch

from fastsd._checks import check_finite
from fastsd.interop.deepinv.mri import _complex_kspace, _mri_op
from fastsd.interop.deepinv.routing import _Fused
from fastsd.interop.deepinv.stack import stacked_to_fastsd
from fastsd.ops.base import LinearOperator


class PhysicsOperator(LinearOperator):
    """Any ``deepinv.physics.LinearPhysics`` as a fastsd :class:`~fastsd.ops.base.LinearOperator`
    (generic, unfused): A, A^H, A^H A, prox and pinv call the physics' methods."""

    def __init__(self, physics):
        super().__init__()
        if not isinstance(physics, _dinv.physics.LinearPhysics):
            raise ValueError(f"expected a deepinv LinearPhysics, got {type(physics).__name__}")
        self.physics = physics

    def forward(self, x):
        return self.physics.A(x)

    def adjoint(self, y):
        return self.physics.A_adjoint(y)

    def normal(self, x):
        return self.physics.A_adjoint_A(x)

    def check_measurement(self, y):
        return check_finite("y", y)

    def prox_l2(self, z, y, gamma, iters: int = 50):
        return self.physics.prox_l2(z, y, gamma)

    def pinv(self, y, iters: int = 50):
        return self.physics.A_dagger(y)


def to_fastsd(physics, y) -> tuple[LinearOperator, torch.Tensor]:
    """(fastsd operator, measurement in its layout) for a deepinv physics and measurement ``y``.

    The drop-in classes of this package give their fused operator where their configuration has one;
    deepinv's own ``MRI`` / ``MultiCoilMRI`` become a fused :class:`fastsd.ops.mri.MRI` (``MRI3D``
    for ``three_d``); any other linear physics (and any configuration without a fused operator)
    is wrapped in :class:`PhysicsOperator`; stacked linear physics (``deepinv.physics.stack``,
    ``y`` a ``TensorList``) become one :class:`~fastsd.interop.deepinv.stack.StackedOperator` over
    the fastsd forms of their parts. Images come back in deepinv's layout either way.
    """
    P = _dinv.physics
    if isinstance(physics, P.StackedLinearPhysics):
        return stacked_to_fastsd(physics, y, to_fastsd)
    if isinstance(physics, _Fused):
        op, _ = physics._fused_op(physics._size(y, "y"))
        if op is not None:
            return op, physics._y_in(y)
    elif type(physics) in (P.MRI, P.MultiCoilMRI):
        multi = isinstance(physics, P.MultiCoilMRI)
        op, _ = _mri_op(physics.mask, physics.coil_maps if multi else None, physics.three_d)
        if op is not None:
            return op, _complex_kspace(y, multi)
    if isinstance(physics, P.LinearPhysics):
        return PhysicsOperator(physics), y
    raise ValueError(f"fastsd solvers need a linear physics, got {type(physics).__name__}")
