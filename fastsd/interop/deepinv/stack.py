"""deepinv's stacked linear physics (``deepinv.physics.stack(A_1, ..., A_n)``, measurements a
``TensorList``) as one fastsd operator, so that fastsd's solvers run on it.

:class:`StackedOperator` is ``[A_1; ...; A_n]`` on one image: each ``A_i`` is the fastsd form of
the i-th physics (:func:`fastsd.interop.deepinv.to_fastsd`: fused where fastsd has an operator,
the physics' own methods otherwise), and its measurement is one real tensor (B, M), the per-problem
concatenation of the flattened ``y_i`` (complex ones as (re, im) pairs). The packing is an isometry,
so ``‖A x − y‖² = Σ_i ‖A_i x − y_i‖²`` and ``A^H y = Σ_i A_i^H y_i`` (deepinv's adjoint with
``reduction='sum'``).
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from fastsd._checks import check_tensor
from fastsd.ops.base import LinearOperator


def _flat(y: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> real (B, n): complex entries as (re, im) pairs."""
    return (torch.view_as_real(y) if y.is_complex() else y).reshape(y.shape[0], -1)


class StackedOperator(LinearOperator):
    """``[A_1; ...; A_n]``: ``forward`` packs the ``A_i x`` into (B, M), ``adjoint`` sums the
    ``A_i^H y_i`` of the unpacked parts.

    Args:
        ops: the fastsd operators ``A_i``, images of one shared layout.
        like: one measurement ``y_i`` per operator, in its layout (fixes each part's shape and
            whether it is complex).
    """

    def __init__(self, ops, like):
        super().__init__()
        if len(ops) != len(like) or not ops:
            raise ValueError(f"one measurement per operator: {len(ops)} operators, {len(like)} measurements")
        self.ops = nn.ModuleList(ops)
        self.shapes = [tuple(y.shape[1:]) for y in like]
        self.complex = [y.is_complex() for y in like]
        self.sizes = [_flat(y[:1]).shape[1] for y in like]

    def pack(self, ys) -> torch.Tensor:
        """The parts ``y_i`` (B, ...) as one real (B, M) tensor."""
        flat = [_flat(y) for y in ys]
        dtype = functools.reduce(torch.promote_types, [f.dtype for f in flat])
        return torch.cat([f.to(dtype) for f in flat], dim=1)

    def unpack(self, y: torch.Tensor) -> list[torch.Tensor]:
        """The parts of a packed (B, M) measurement, each in its operator's layout."""
        parts = []
        for part, shape, cplx in zip(torch.split(y, self.sizes, dim=1), self.shapes, self.complex):
            if cplx:
                part = torch.view_as_complex(part.reshape((y.shape[0],) + shape + (2,)).contiguous())
            else:
                part = part.reshape((y.shape[0],) + shape)
            parts.append(part)
        return parts

    def check_measurement(self, y, finite: bool = True):
        check_tensor("y", y, ndim=2)
        if y.is_complex() or y.shape[1] != sum(self.sizes):
            raise ValueError(f"a stacked measurement is real (B, {sum(self.sizes)}), got {tuple(y.shape)} {y.dtype}")
        return y

    def forward(self, x):
        return self.pack([op(x) for op in self.ops])

    def adjoint(self, y):
        parts = [op.adjoint(p) for op, p in zip(self.ops, self.unpack(y))]
        return sum(parts[1:], parts[0])


def stacked_to_fastsd(physics, y, to_fastsd) -> tuple[StackedOperator, torch.Tensor]:
    """(StackedOperator, packed y) for a ``deepinv.physics.StackedLinearPhysics`` and its
    ``TensorList`` measurement; ``to_fastsd`` converts each part."""
    from deepinv.utils import TensorList

    n = len(physics.physics_list)
    if not isinstance(y, (TensorList, list, tuple)) or len(y) != n:
        got = f"{type(y).__name__} of {len(y)}" if isinstance(y, (TensorList, list, tuple)) else type(y).__name__
        raise ValueError(f"a stacked physics of {n} operators needs a TensorList of {n} measurements, got {got}")
    if physics.reduction is not sum:
        raise ValueError("a stacked physics with reduction='sum' only (the other reductions are not its adjoint)")
    pairs = [to_fastsd(p, yi) for p, yi in zip(physics.physics_list, y)]
    op = StackedOperator([o for o, _ in pairs], [yi for _, yi in pairs])
    return op, op.pack([yi for _, yi in pairs])
