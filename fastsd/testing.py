"""Helpers for comparing fused kernels with their references (used by the test suite)."""
from __future__ import annotations

import numpy as np
import torch

from fastsd.ops.base import LinearOperator, batch_dot

__all__ = ["TOLERANCE", "rel_err", "assert_close", "assert_adjoint", "assert_graphed_as_eager", "poisoned_like", "complex_randn", "centred_dft", "assert_same_network", "MaskOp"]

# Relative-error tolerance per input dtype for kernel-vs-reference comparisons.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.complex128: 1e-12,
    torch.float32: 1e-5,
    torch.complex64: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}


def rel_err(out, ref) -> float:
    """‖out − ref‖ / ‖ref‖ in float64 (complex-safe); NaN anywhere in ``out`` gives NaN. Tuples of
    tensors (an op's several outputs, e.g. loss and gradient) count as one vector of all their entries."""
    out, ref = _joined(out).detach().cpu(), _joined(ref).detach().cpu()
    out = out.to(torch.complex128 if out.is_complex() else torch.float64)
    ref = ref.to(torch.complex128 if ref.is_complex() else torch.float64)
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-300))


def assert_close(name: str, got, want, *, dtype: torch.dtype | None = None, factor: float = 1) -> None:
    """Assert ``rel_err(got, want) <= factor * TOLERANCE[dtype]`` (``dtype``: that of ``got``, the
    first tensor of a tuple; Python numbers count as float64), with equal shapes. A failure names the
    output ``name`` and gives the relative and the largest absolute error and the first index that is
    off by more than the tolerance times ``want``'s largest magnitude (or is NaN where ``want`` is not)."""
    got, want = _tensor(got), _tensor(want)
    first = got[0] if isinstance(got, tuple) else got
    dtype = first.dtype if dtype is None else dtype
    limit = factor * TOLERANCE[dtype]
    g, w = _joined(got).detach().cpu(), _joined(want).detach().cpu()
    assert g.shape == w.shape, f"{name}: shape {tuple(g.shape)}, expected {tuple(w.shape)}"
    err = rel_err(got, want)
    if err <= limit:
        return
    wide = torch.complex128 if g.is_complex() or w.is_complex() else torch.float64
    diff = (g.to(wide) - w.to(wide)).abs().nan_to_num(float("inf"))  # a NaN is off by any amount
    if not diff.numel():
        raise AssertionError(f"{name}: relative error {err:.3g} on empty tensors")
    off = (diff > limit * float(w.to(wide).abs().max())).nonzero()
    worst = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    first = tuple(int(i) for i in off[0]) if len(off) else None
    raise AssertionError(f"{name}: relative error {err:.3g} > {limit:.3g} ({str(dtype).removeprefix('torch.')} "
                         f"tolerance x {factor}); max abs error {float(diff.max()):.3g} at {worst}; "
                         f"first index off by more than the tolerance: {first}")


def assert_adjoint(name: str, op, x: torch.Tensor, y: torch.Tensor, *, factor: float = 1) -> None:
    """Assert ``Re⟨A x, y⟩ = ⟨x, Aᴴ y⟩`` for each problem of the batch, relative to ``‖A x‖ ‖y‖``,
    within ``factor * TOLERANCE[x.dtype]`` (``op``: a :class:`LinearOperator`)."""
    ax = op(x)
    lhs, rhs = batch_dot(ax, y).double(), batch_dot(x, op.adjoint(y)).double()
    scale = ax.flatten(1).norm(dim=1).double() * y.flatten(1).norm(dim=1).double()
    err = float(((lhs - rhs).abs() / scale).max())
    limit = factor * TOLERANCE[x.dtype]
    assert err <= limit, f"{name}: adjoint mismatch {err:.3g} > {limit:.3g} (<A x, y> vs <x, A^H y>, per problem)"


def assert_graphed_as_eager(solver_cls, y: torch.Tensor, op, **kw) -> None:
    """A CUDA-graphed solve (``solver_cls(use_graph=True, **kw)``) returns the eager loop's result and
    loss history; two eager solves agreeing bit for bit is checked first, as the premise (``kw``
    should give a network whose CUDA kernels are deterministic)."""
    eager = solver_cls(use_graph=False, **kw).solve(y, op)
    again = solver_cls(use_graph=False, **kw).solve(y, op)
    graphed = solver_cls(use_graph=True, **kw).solve(y, op)
    assert graphed.info["cuda_graph"] and not eager.info["cuda_graph"]
    assert torch.equal(again.x, eager.x), "the premise: the eager loop is deterministic"
    assert_close("x", graphed.x, eager.x)
    assert_close("loss history", torch.tensor(graphed.history["loss"]), torch.tensor(eager.history["loss"]))


def _tensor(t):
    """Python numbers as float64 tensors, so scalars (norms, sums) compare like outputs."""
    return torch.as_tensor(t, dtype=torch.float64) if isinstance(t, (int, float)) else t


def _joined(t) -> torch.Tensor:
    if isinstance(t, tuple):
        return torch.cat([v.detach().cpu().reshape(-1).to(torch.complex128) for v in t])
    return t


def poisoned_like(t: torch.Tensor) -> torch.Tensor:
    """An output buffer filled with NaN, so a kernel that skips an element is caught."""
    return torch.full_like(t, float("nan"))


def complex_randn(*shape, gen: torch.Generator, device=None) -> torch.Tensor:
    """Complex normal sample (independent real and imaginary parts) drawn on the CPU from ``gen``,
    so every device sees the same values."""
    return torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)).to(device)


def centred_dft(n: int) -> np.ndarray:
    """Matrix of fastMRI's centred orthonormal DFT, ``D[u, i] = exp(-2πi (u - n//2)(i - n//2) / n) / √n``:
    the dense, convention-independent check of the MRI operators."""
    u = np.arange(n) - n // 2
    return np.exp(-2j * np.pi * np.outer(u, u) / n) / np.sqrt(n)


def assert_same_network(net: torch.nn.Module, fused: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> None:
    """``fused`` (a network with fused layers swapped in) computes what ``net`` computes in train
    mode: output and weight gradients of ``sum(out²)``, in float32 or under bf16 autocast."""
    outs = []
    for m in (net, fused):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = m(x)
        out.float().square().sum().backward()
        outs.append((out.float(), [p.grad for p in m.parameters()]))
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    assert rel_err(outs[1][0], outs[0][0]) < tol
    scale = max(float(g.norm()) for g in outs[0][1])
    for g1, g0 in zip(outs[1][1], outs[0][1]):  # conv biases before a BatchNorm have zero gradient: rounding only
        assert rel_err(g1, g0) < 10 * tol or float((g1 - g0).norm()) < tol * scale


class MaskOp(LinearOperator):
    """y = m * x with a mask broadcast over (B, C, H, W): a tiny operator independent of the fused
    ones, for testing solvers and the step engine against hand-written loops."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x):
        return self.mask * x

    def adjoint(self, y):
        return self.mask * y
