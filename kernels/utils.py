"""Launch helpers shared by the kernel families: the 1-D batch grid, the accumulator dtype and
strided index layouts.

Every kernel runs on one grid scheme: :func:`batch_grid` launches ``P × cdiv(n, BLOCK)`` programs
on grid axis 0, where ``P`` counts independent problems (batch entries; for the BatchNorm
reductions, chunks of rows) and ``n`` elements belong to each (for BatchNorm, channels).
:func:`block_coords` recovers ``(problem, within-problem offsets, validity mask)``, so neither ``P``
nor ``n`` is bounded by CUDA's 65535 limit on grid axes 1 and 2. Within-problem offsets are int32
unless ``n + BLOCK`` can overflow it (``BIG``, see :func:`needs_int64`); problem and memory offsets
are always int64.

One accumulator rule: arithmetic runs in the ``ACC`` meta-parameter, which every launcher sets to
:func:`acc_type` of the data the op computes on (float64 for float64 data, else float32, as
:func:`fastsd._utils.accumulate_dtype` for the references); loads are cast to ``ACC``, stores to
the output's element type, and partial sums are ``ACC`` buffers.

Strided (B, ...) inputs are read through at most three collapsed inner dimensions
(:func:`batch_layout`): one kernel serves any rank, broadcast (stride-0) inputs are never
materialised, and the common contiguous case is a flat, division-free loop (``FLAT``).

Kernels follow one style (flash-linear-attention ``fla/ops/utils``, Liger-Kernel ``ops/utils.py``):
optional inputs are passed as ``None`` and ``HAS_...`` flags are derived from them (:func:`has`), as
``FLAT`` and ``BIG`` are from the sizes, by ``@triton.heuristics``; the strides of an absent input
are ``None`` as well, so no placeholder pointer or stride is ever passed. Outputs are contiguous,
given or allocated by :func:`output`. Modes are named ``tl.constexpr``
constants with a string table for the launcher. Names: ``i_`` program/problem ids, ``o_`` offsets,
``m_`` masks, ``p_`` pointers, ``b_`` loaded blocks.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from fastsd._utils import accumulate_dtype

__all__ = [
    "BLOCK",
    "Layout",
    "acc_type",
    "batch_grid",
    "batch_layout",
    "block_coords",
    "collapse_dims",
    "has",
    "is_big",
    "is_flat",
    "needs_int64",
    "output",
    "problem_stride",
    "real_view",
    "strided_offsets",
]

BLOCK = 1024  # elements per program; launchers take ``block`` to override it (tests use small ones)
_INT32_MAX = 2**31 - 1


def batch_grid(problems: int, n_per: int, block: int) -> tuple[int]:
    """The launch grid of ``problems × cdiv(n_per, block)`` programs that :func:`block_coords`
    takes apart; its size is also the length of a per-program partial-sum buffer."""
    return (problems * triton.cdiv(n_per, block),)


def acc_type(t: torch.Tensor):
    """``ACC`` for a kernel computing on ``t``'s data: ``tl.float64`` for float64, else
    ``tl.float32`` (complex64 k-space, half and bfloat16 activations included)."""
    return tl.float64 if accumulate_dtype(t) == torch.float64 else tl.float32


def collapse_dims(shape, *strides):
    """Merge the inner (non-batch) dims of tensors sharing ``shape`` (given by their ``strides``).

    Returns ``((D1, D2, D3), [(s1, s2, s3), ...])`` or ``None`` when more than three dims remain.
    Size-1 dims are dropped; neighbours merge when every tensor is contiguous across them.
    """
    dims = [(n, [s[i] for s in strides]) for i, n in enumerate(shape) if n != 1]
    merged: list = []
    for n, st in dims:
        if merged:
            pn, pst = merged[-1]
            if all(p == c * n for p, c in zip(pst, st)):
                merged[-1] = (pn * n, st)
                continue
        merged.append((n, st))
    if len(merged) > 3:
        return None
    merged = [(1, [0] * len(strides))] * (3 - len(merged)) + merged
    sizes = tuple(n for n, _ in merged)
    return sizes, [tuple(st[k] for _, st in merged) for k in range(len(strides))]


class Layout(NamedTuple):
    """How a kernel reads tensors of one (B, ...) shape: ``tensors`` as passed to the kernel
    (``None`` kept; contiguous copies where the dims would not collapse), the collapsed inner
    ``sizes`` (D1, D2, D3), and per tensor its strides ``(s_b, s1, s2, s3)`` (``None`` ×4 if absent)."""

    tensors: list
    sizes: tuple
    strides: list


def batch_layout(shape, *tensors: torch.Tensor | None) -> Layout:
    """The :class:`Layout` of ``tensors`` (each of ``shape`` (B, ...), any strides, or ``None``).

    More than three unmergeable inner dims (exotic permutations of rank > 4) fall back to
    contiguous copies, which always collapse to one dim."""
    present = [t for t in tensors if t is not None]
    layout = collapse_dims(shape[1:], *(t.stride()[1:] for t in present))
    if layout is None:
        present = [t.contiguous() for t in present]
        layout = collapse_dims(shape[1:], *(t.stride()[1:] for t in present))
    sizes, inner = layout
    it, out_t, out_s = iter(zip(present, inner)), [], []
    for t in tensors:
        if t is None:
            out_t.append(None)
            out_s.append((None,) * 4)
        else:
            t, st = next(it)
            out_t.append(t)
            out_s.append((t.stride(0), *st))
    return Layout(out_t, sizes, out_s)


def output(out: torch.Tensor | None, shape, dtype: torch.dtype, device,
           memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """``out`` checked to be a ``dtype`` tensor of ``shape`` on ``device``, or a new one. Without
    ``memory_format`` the kernel needs ``out`` contiguous; with it the kernel reads ``out``'s
    strides, so any layout is accepted and a new tensor takes that format."""
    shape, strided = tuple(shape), memory_format is not None
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format or torch.contiguous_format)
    if (tuple(out.shape) != shape or out.dtype != dtype or out.device != torch.device(device)
            or not (strided or out.is_contiguous())):
        name = str(dtype).removeprefix("torch.")
        raise ValueError(f"out must be a {'' if strided else 'contiguous '}{name} tensor of shape {shape} on {device}")
    return out


def problem_stride(t: torch.Tensor | None) -> int | None:
    """Stride between problems of a per-problem value of shape () or (B,): 0 when shared, ``None``
    when absent."""
    if t is None:
        return None
    return t.stride(0) if t.ndim else 0


def real_view(t: torch.Tensor) -> torch.Tensor:
    """Real view of a complex tensor with a trailing (re, im) dim; strides in real units."""
    return torch.view_as_real(t.resolve_conj())


def needs_int64(n_per: int, block: int) -> bool:
    """Whether within-problem offsets of a grid over ``n_per`` elements can overflow int32."""
    return n_per + block > _INT32_MAX


def has(arg: str):
    """Heuristic ``HAS_...``: whether the optional input ``arg`` was passed (is not ``None``)."""
    return lambda args: args[arg] is not None


def is_flat(args) -> bool:
    """Heuristic ``FLAT`` (reads ``D1``, ``D2``): the inner dims collapsed to one."""
    return args["D1"] == 1 and args["D2"] == 1


def is_big(args) -> bool:
    """Heuristic ``BIG`` (reads ``n_per``, ``BLOCK``): within-problem offsets need int64."""
    return needs_int64(args["n_per"], args["BLOCK"])


@triton.jit
def block_coords(n_per, BLOCK: tl.constexpr, BIG: tl.constexpr):
    """``(i_b, o_j, m_j)`` of this program: problem index (int64), within-problem offsets and
    their validity mask, on the 1-D grid of ``P × cdiv(n_per, BLOCK)`` programs."""
    i_p = tl.program_id(0)
    n_blocks = tl.cdiv(n_per, BLOCK)
    i_b = (i_p // n_blocks).to(tl.int64)
    i_blk = i_p % n_blocks
    if BIG:
        o_j = i_blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    else:
        o_j = i_blk * BLOCK + tl.arange(0, BLOCK)
    return i_b, o_j, o_j < n_per


@triton.jit
def strided_offsets(o_j, i_b, s_b, s1, s2, s3, D2, D3, FLAT: tl.constexpr):
    """Memory offsets (int64) of the within-problem row-major offsets ``o_j`` of problem ``i_b``
    in a tensor with collapsed inner sizes (·, D2, D3) and strides ``(s_b, s1, s2, s3)``."""
    if FLAT:
        o = i_b * s_b + o_j.to(tl.int64) * s3
    else:
        i3 = (o_j % D3).to(tl.int64)
        t = o_j // D3
        i2 = (t % D2).to(tl.int64)
        i1 = (t // D2).to(tl.int64)
        o = i_b * s_b + i1 * s1 + i2 * s2 + i3 * s3
    return o
