"""One prepared self-diffusion solve (:meth:`fastsd.solvers.sdi.SelfDiffusion.prepare`) and where a
warm-started one begins: the state a solve's noise levels run on, and the plateau rule that may
end a level's inner loop early."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fastsd._utils import per_problem
from fastsd.graphs.step_graph import BatchedNet, SDIStep, StepGraph
from fastsd.solvers.layout import NetLayout

__all__ = ["SDIRun", "WarmStart", "PLATEAU_CHECKS"]

# Steps of a level between two checks of the plateau rule: K // PLATEAU_CHECKS (at least 1).
PLATEAU_CHECKS = 5


@dataclass
class WarmStart:
    """Where a warm-started solve begins: trained networks (one per problem), x̂ in the network
    layout and the measurement scaling (both in the scaled units those networks were trained in),
    and the first noise level to run."""

    net: BatchedNet
    x_hat: torch.Tensor
    scale: torch.Tensor
    level: int


@dataclass
class SDIRun:
    """One prepared self-diffusion solve (:meth:`SelfDiffusion.prepare`): the networks, the inner
    step and its runner, the noise schedule and the measurement scaling."""

    cfg: dict
    device: torch.device
    layout: NetLayout
    x_like: torch.Tensor
    net: BatchedNet
    scale: torch.Tensor
    sigmas: torch.Tensor
    inner: SDIStep
    runner: StepGraph
    info: dict

    def set_level(self, t: int) -> None:
        """Enter noise level ``t``: σ_t, and (noise once per level) the level's noisy input."""
        self.inner.sigma.copy_(self.sigmas[t])
        if not self.cfg["resample_noise"]:
            self.inner.step.fill_(t)
            self.inner.x_in.copy_(self.inner.noisy())

    def run_level(self, K: int, plateau: float | None) -> int:
        """Run the inner steps of the current level and return how many ran: ``K``, or fewer under
        the plateau rule (``plateau`` = the least relative fall of the mean loss between two checks,
        every ``K // PLATEAU_CHECKS`` steps; summed over the problems of the batch)."""
        if not plateau:
            self.runner.run(K)
            return K
        chunk, done, previous = max(1, K // PLATEAU_CHECKS), 0, math.inf
        while done < K:
            n = min(chunk, K - done)
            first = int(self.inner.counter)
            self.runner.run(n)
            done += n
            mean = float(self.inner.history[first:first + n].sum(1).mean())
            if mean > (1 - plateau) * previous:
                break
            previous = mean
        return done

    def current(self) -> torch.Tensor:
        """x̂ in the operator's layout, measurement scaling undone."""
        return self.layout.from_net(self.inner.x_hat.detach()) / per_problem(self.scale, self.x_like)
