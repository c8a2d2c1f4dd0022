"""Warm-started volumes: the slices of one scan solved from the centre outwards.

``SelfDiffusion(volume="warm")`` solves the centre slice ``c = B // 2`` with the whole noise
schedule, then slices ``c - k`` and ``c + k`` (one batch of two problems) for k = 1, 2, ..., each
starting from its inner neighbour's trained network (``c - k + 1`` resp. ``c + k - 1``), that
neighbour's x̂ and measurement scaling, and entering the schedule at level ``T - warm_levels``:
its network input is then the neighbour's result plus that level's noise, as a diffusion sampler
started from a good estimate at a lower noise level (CCDF). Each slice has its own noise stream
(seed + slice index) and a fresh Adam. Work: ``T·K + (B - 1)·warm_levels·K`` slice-steps
instead of ``B·T·K``.
"""
from __future__ import annotations

import math
import time

import torch

from fastsd._checks import check_problem
from fastsd.graphs.step_graph import BatchedNet
from fastsd.solvers.base import Callback, SolveResult
from fastsd.solvers.sdi_run import WarmStart

__all__ = ["warm_order", "warm_steps", "default_warm_levels", "solve_warm"]


def warm_order(B: int) -> list[tuple[list[int], list[int]]]:
    """The groups of a warm volume of B slices, in solve order, as (slices, their sources): first
    ``([c], [])`` for the centre ``c = B // 2``, then ``([c-k, c+k], [c-k+1, c+k-1])`` (those of
    them inside 0..B-1) for k = 1, 2, ..."""
    c = B // 2
    groups = [([c], [])]
    for k in range(1, max(c, B - 1 - c) + 1):
        pairs = [(s, s + 1) for s in (c - k,) if s >= 0] + [(s, s - 1) for s in (c + k,) if s < B]
        groups.append(([s for s, _ in pairs], [src for _, src in pairs]))
    return groups


def default_warm_levels(T: int) -> int:
    """Levels each non-centre slice of a warm volume runs unless told: the last ⌈T/5⌉."""
    return math.ceil(T / 5)


def warm_steps(B: int, T: int, K: int, warm_levels: int) -> int:
    """Inner steps a warm solve of B slices runs one after another (the two slices of a group step
    together): the centre's T·K, then warm_levels·K per further group (without the plateau rule)."""
    return T * K + (len(warm_order(B)) - 1) * warm_levels * K


def solve_warm(solver, y: torch.Tensor, op, *, x_true: torch.Tensor | None = None,
               callback: Callback | None = None) -> SolveResult:
    """``solver.solve`` for ``volume='warm'`` (see the module docstring); the result's ``info`` adds
    ``order`` (the groups) and ``slice_steps`` (network training steps summed over slices);
    ``iterations`` counts the inner steps run one after another, as the callback does. The
    callback runs after every level of every group: ``iteration`` counts the inner steps run so
    far (all groups, up to :func:`warm_steps`), ``state['slices']`` names the group's slices and
    ``state['x']`` holds their images."""
    t_start = time.perf_counter()
    y = check_problem(y, op, solver.dtype)
    if not hasattr(op, "select"):
        raise ValueError(f"volume='warm' needs an operator that can select slices (op.select); "
                         f"{type(op).__name__} cannot")
    if x_true is not None and x_true.shape[0] != y.shape[0]:
        raise ValueError(f"x_true holds {x_true.shape[0]} slices, y {y.shape[0]}")
    cfg = solver.config(op)
    first = int(cfg["T"]) - cfg["warm_levels"]
    groups = warm_order(y.shape[0])
    ops = [op.select(g) for g, _ in groups]  # fails now, not after the centre slice, if op cannot
    # The previous group's slices -> (its networks, index, x̂, scale): the sources of the next group
    # (group k starts from group k-1), so only one group's networks are held at a time.
    previous: dict[int, tuple[BatchedNet, int, torch.Tensor, torch.Tensor]] = {}
    xs, scales, results, steps_before = {}, {}, [], 0
    for (group, sources), sub_op in zip(groups, ops):
        start = None
        if sources:
            start = WarmStart(net=BatchedNet.gather([previous[s][:2] for s in sources]),
                              x_hat=torch.stack([previous[s][2] for s in sources]),
                              scale=torch.stack([previous[s][3] for s in sources]), level=first)
        truth = None if x_true is None else x_true[group]
        run = solver.prepare(y[group], sub_op, x_true=truth, start=start, seeds=[solver.seed + s for s in group])
        res = solver.run_levels(run, time.perf_counter(), first=first if sources else 0, x_true=truth,
                                callback=None if callback is None else _group_callback(callback, group, steps_before))
        steps_before += res.info["iterations"]
        previous = {s: (run.net, j, run.inner.x_hat.detach()[j], run.scale[j]) for j, s in enumerate(group)}
        for j, s in enumerate(group):
            xs[s], scales[s] = res.x[j], float(run.scale[j])
        results.append(res)
    x = torch.stack([xs[s] for s in range(y.shape[0])])
    slice_steps = sum(r.info["slice_steps"] for r in results)
    history = {"groups": [g for g, _ in groups], "level_steps": [r.history["level_steps"] for r in results]}
    if x_true is not None:
        history["psnr"] = [r.history["psnr"] for r in results]
    elapsed, setup = time.perf_counter() - t_start, sum(r.info["setup_s"] for r in results)
    info = dict(results[0].info, order=[g for g, _ in groups], slice_steps=slice_steps, batch=y.shape[0],
                iterations=steps_before, runtime_s=elapsed, it_per_s=steps_before / max(elapsed - setup, 1e-9),
                setup_s=setup, scale=[scales[s] for s in range(y.shape[0])])
    return SolveResult(x=x, history=history, info=info)


def _group_callback(callback: Callback, group: list[int], steps_before: int) -> Callback:
    """The user's callback as one group's run calls it: steps counted over the whole warm solve,
    the group's slices named."""
    def call(it: int, state: dict):
        return callback(steps_before + it, dict(state, slices=list(group)))

    return call
