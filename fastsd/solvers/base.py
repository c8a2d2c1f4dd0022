"""What every solver shares: the result type, the registry behind ``fastsd.solve(method=...)``."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["SolveResult", "Callback", "register_solver", "get_solver", "available_solvers"]

Callback = Callable[[int, dict], "bool | None"]
"""``callback(iteration, state)``; ``state`` holds at least ``"x"`` (current estimate) and
``"loss"`` (float). Returning ``True`` stops the solver early."""


@dataclass
class SolveResult:
    x: torch.Tensor  # reconstruction in the operator's image layout
    history: dict[str, list[float]] = field(default_factory=dict)  # per-iteration traces (loss, psnr, ...)
    info: dict = field(default_factory=dict)  # configuration and timings actually used


_SOLVERS: dict[str, type] = {}


def register_solver(name: str):
    """Class decorator: make a solver reachable as ``fastsd.solve(..., method=name)``."""

    def deco(cls):
        if name in _SOLVERS:
            raise ValueError(f"solver {name!r} registered twice")
        _SOLVERS[name] = cls
        cls.method = name
        return cls

    return deco


def get_solver(name: str) -> type:
    if name not in _SOLVERS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_SOLVERS))}")
    return _SOLVERS[name]


def available_solvers() -> list[str]:
    return sorted(_SOLVERS)
