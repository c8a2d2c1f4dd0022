"""Progress display and PSNR traces of a solve, as solver callbacks ``callback(it, state)``.

:class:`Progress` draws a tqdm bar over the iterations (about 20 lines on stderr without tqdm);
:class:`Trace` records the PSNR against a known truth at about 100 iterations (for the curve
figure, :func:`fastsd.figures.curve_figure`) and passes the state on to a :class:`Progress`.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

__all__ = ["Progress", "Trace"]


class Progress:
    """tqdm bar over the solver's iterations when available, else about 20 lines in all."""

    def __init__(self, total: int | None, enabled: bool, name: str = "SDI"):
        self.total, self.enabled, self.bar, self.name = total, enabled, None, name
        self.last = self.printed = 0
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=name, unit="it", file=sys.stderr)
            except ImportError:
                pass

    def __call__(self, it: int, state: dict):
        if not self.enabled:
            return None
        info = {"sigma": f"{state['sigma']:.3f}"} if "sigma" in state else {}
        info["loss"] = f"{state['loss']:.4g}"
        if "psnr" in state:
            info["psnr"] = f"{state['psnr']:.2f}"
        if self.bar is not None:
            self.bar.update(it - self.last)
            self.bar.set_postfix(info)
        elif it == self.total or it - self.printed >= max((self.total or 0) // 20, 1):
            print(f"{self.name} {it}/{self.total} " + " ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr, flush=True)
            self.printed = it
        self.last = it
        return None

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Trace:
    """Solver callback: PSNR against the truth at about 100 iterations (in display space: ``show``
    maps the solver's x to an image comparable with ``truth``), the noise level where the solver
    reports one, and the progress bar."""

    def __init__(self, bar: Progress, total: int | None, truth: np.ndarray | None, show: Callable):
        self.bar, self.truth, self.show = bar, truth, show
        self.every = max((total or 0) // 100, 1)
        self.iters: list[int] = []
        self.psnr: list[float] = []

    def __call__(self, it: int, state: dict):
        if self.truth is not None and state.get("x") is not None and (it % self.every == 0 or "sigma" in state):
            from fastsd.metrics import psnr

            state = dict(state, psnr=psnr(self.show(state["x"]), self.truth))
            self.iters.append(it)
            self.psnr.append(state["psnr"])
        self.bar(it, state)
        return None
