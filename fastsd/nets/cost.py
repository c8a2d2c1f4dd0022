"""What one network training step costs, counted from the layer shapes (device-independent)."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["training_step_flops"]


def training_step_flops(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Floating-point operations of one forward + backward of ``net`` on an input of
    ``input_shape`` (one problem, e.g. ``(1, 2, H, W)``), as ``torch.utils.flop_counter`` counts
    them from the shapes of the matrix products and convolutions (2 per multiply-add): the forward,
    every weight gradient and the input gradients of all but the first layer (the network input
    needs none). Elementwise work, normalisation and the optimiser are not counted (a few percent
    of a U-Net's arithmetic).
    Runs on a copy of ``net`` on the CPU, so the network itself is untouched."""
    probe = copy.deepcopy(net).cpu().float().train()
    x = torch.zeros(input_shape)
    counter = FlopCounterMode(display=False)
    with counter:
        probe(x).square().sum().backward()
    return int(counter.get_total_flops())
