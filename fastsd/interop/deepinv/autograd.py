"""The autograd Functions of the fused path: each linear map of the fused op and its prox, with
backward passes that are again these Functions (so ``torch.func`` transforms and higher-order
derivatives work, as deepinv's ``torch.func.vjp`` adjoints need).

``physics`` and the fused fastsd ``op`` are non-tensor arguments; ``physics._fs_*``
(:class:`~fastsd.interop.deepinv.routing._Fused`) work on plain tensors in deepinv's layout.
"""
from __future__ import annotations

import torch

from fastsd._utils import per_problem

_ADJOINT = {"forward": "adjoint", "adjoint": "forward", "normal": "normal"}  # backward of each map


class _Linear(torch.autograd.Function):
    """One linear map of the fused op: ``'forward'`` (A), ``'adjoint'`` (A^H) or ``'normal'``
    (A^H A). Its backward is the adjoint map (A^H for A and vice versa; A^H A is self-adjoint),
    again a ``_Linear`` and so again differentiable."""

    @staticmethod
    def forward(t, physics, op, which):
        return physics._fs_apply(op, which, t)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.physics, ctx.op, ctx.which, ctx.dtype = inputs[1], inputs[2], inputs[3], inputs[0].dtype

    @staticmethod
    def backward(ctx, g):
        return _Linear.apply(g, ctx.physics, ctx.op, _ADJOINT[ctx.which]).to(ctx.dtype), None, None, None


class _Prox(torch.autograd.Function):
    """x = P (z + γ A^H y) with P = (I + γ A^H A)^{-1}: dx/dz = P, dx/dy = γ P A^H (P self-adjoint)."""

    @staticmethod
    def forward(z, y, gamma, physics, op):
        return physics._fs_prox(op, z, y, gamma)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, y, gamma, physics, op = inputs
        ctx.physics, ctx.op, ctx.gamma, ctx.z_dtype = physics, op, gamma, z.dtype
        ctx.y_meta = (y.shape, y.dtype, y.device)

    @staticmethod
    def backward(ctx, g):
        shape, y_dtype, y_device = ctx.y_meta
        zeros = torch.zeros(shape, dtype=y_dtype, device=y_device)
        pg = _Prox.apply(g, zeros, ctx.gamma, ctx.physics, ctx.op)
        gz = pg.to(ctx.z_dtype) if ctx.needs_input_grad[0] else None
        gy = None
        if ctx.needs_input_grad[1]:
            a = _Linear.apply(pg, ctx.physics, ctx.op, "forward")
            gy = (per_problem(ctx.gamma, a) * a).to(y_dtype)
        return gz, gy, None, None, None
