"""Early stopping for seed-optimising solvers (DIP, aSeqDIP, DMPlug) that over-fit noise if run too long."""
from __future__ import annotations

from collections import deque

import torch

from fastsd._utils import per_problem

__all__ = ["ESWMV"]


class ESWMV:
    """Early stopping by windowed moving variance (ES-WMV), per problem of the batch.

    ``update(x)`` appends the current output; once ``window`` outputs are stored it computes
    ``VAR = mean_w ‖x_w − mean(x)‖² / numel`` per problem and remembers the output with the lowest
    VAR seen so far (``best``, taken at the end of that window). ``update`` returns True when every
    problem has gone ``patience`` updates without a new minimum.
    """

    def __init__(self, window: int = 100, patience: int = 1000):
        if int(window) != window or window < 2:
            raise ValueError(f"window must be an integer >= 2, got {window!r}")
        if int(patience) != patience or patience < 1:
            raise ValueError(f"patience must be a positive integer, got {patience!r}")
        self.window, self.patience = int(window), int(patience)
        self.buf: deque = deque(maxlen=self.window)
        self.best = None  # (B, ...) output at the lowest variance
        self.best_var = None  # (B,)
        self.best_iter = None  # (B,) update index of the best output
        self.since_best = None  # (B,)
        self.count = 0

    def update(self, x: torch.Tensor) -> bool:
        x = x.detach()
        self.buf.append(x.clone())
        self.count += 1
        if len(self.buf) < self.window:
            return False
        stack = torch.stack(tuple(self.buf))  # (W, B, ...)
        var = (stack - stack.mean(0)).pow(2).reshape(self.window, x.shape[0], -1).mean(2).mean(0)
        if self.best is None:
            self.best, self.best_var = x.clone(), var
            self.best_iter = torch.full_like(var, self.count - 1)
            self.since_best = torch.zeros_like(var)
            return False
        better = var < self.best_var
        self.best = torch.where(per_problem(better, x), x, self.best)
        self.best_var = torch.where(better, var, self.best_var)
        self.best_iter = torch.where(better, torch.full_like(var, self.count - 1), self.best_iter)
        self.since_best = torch.where(better, torch.zeros_like(var), self.since_best + 1)
        return bool((self.since_best >= self.patience).all())
