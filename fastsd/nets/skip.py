"""The deep-image-prior "skip" encoder-decoder (Ulyanov et al., CVPR 2018).

Per level ``i`` (``depth`` levels, defaults 128 channels down/up and 4 skip channels):

* down: conv3 stride 2 -> BN -> LeakyReLU(0.2) -> conv3 -> BN -> LeakyReLU, then the deeper
  levels, then upsampling (bilinear, or linear in 1D) back to the level's input size;
* skip: conv1 -> BN -> LeakyReLU on the level's input (when ``skip_channels[i] > 0``);
* up: concat(skip, down) -> BN -> conv3 -> BN -> LeakyReLU -> conv1 -> BN -> LeakyReLU.

A final 1x1 conv maps to ``out_channels`` (optional sigmoid). Convs use reflection padding, so
every level needs at least 2 samples per spatial dim: inputs must be ``>= 2**(depth+1)`` wide
(:func:`max_depth` gives the deepest network a size allows). ``dim=1`` builds the same network
with 1D convolutions for vector unknowns ``(B, C, n)``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SkipNet", "max_depth"]


def max_depth(size: int) -> int:
    """Deepest SkipNet for a spatial size: the coarsest level keeps at least 2 samples."""
    return max(int(math.floor(math.log2(max(size, 1)))) - 1, 0)


def _conv(dim: int, cin: int, cout: int, k: int, stride: int = 1) -> nn.Module:
    conv = nn.Conv2d if dim == 2 else nn.Conv1d
    return conv(cin, cout, k, stride=stride, padding=k // 2, padding_mode="reflect" if k > 1 else "zeros")


def _bn(dim: int, c: int) -> nn.Module:
    return nn.BatchNorm2d(c) if dim == 2 else nn.BatchNorm1d(c)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class _Level(nn.Module):
    def __init__(self, dim: int, cin: int, down: int, up: int, skip: int, deeper: nn.Module | None, deeper_out: int):
        super().__init__()
        self.dim = dim
        self.skip = nn.Sequential(_conv(dim, cin, skip, 1), _bn(dim, skip), _act()) if skip > 0 else None
        self.down = nn.Sequential(
            _conv(dim, cin, down, 3, stride=2), _bn(dim, down), _act(),
            _conv(dim, down, down, 3), _bn(dim, down), _act(),
        )
        self.deeper = deeper
        cat = skip + (deeper_out if deeper is not None else down)
        self.up = nn.Sequential(
            _bn(dim, cat), _conv(dim, cat, up, 3), _bn(dim, up), _act(),
            _conv(dim, up, up, 1), _bn(dim, up), _act(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.down(x)
        if self.deeper is not None:
            d = self.deeper(d)
        d = F.interpolate(d, size=x.shape[2:], mode="bilinear" if self.dim == 2 else "linear", align_corners=False)
        return self.up(d if self.skip is None else torch.cat([self.skip(x), d], 1))


class SkipNet(nn.Module):
    """DIP skip network ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``.

    Args:
        in_channels, out_channels: channel counts (DIP uses 32 noise channels in).
        channels_down, channels_up, channels_skip: per-level widths (an int repeats over ``depth``).
        depth: number of levels (default 5).
        sigmoid: apply a sigmoid to the output (images in [0, 1]).
        dim: 2 for images, 1 for vectors.
    """

    def __init__(self, in_channels: int, out_channels: int, *, depth: int = 5,
                 channels_down: int | Sequence[int] = 128, channels_up: int | Sequence[int] = 128,
                 channels_skip: int | Sequence[int] = 4, sigmoid: bool = False, dim: int = 2):
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {dim!r}")
        if in_channels < 1 or out_channels < 1 or depth < 1:
            raise ValueError("in_channels, out_channels and depth must be positive")

        def per_level(v, name):
            v = [int(v)] * depth if isinstance(v, int) else [int(c) for c in v]
            if len(v) != depth:
                raise ValueError(f"{name} has {len(v)} entries; expected depth={depth}")
            return v

        down = per_level(channels_down, "channels_down")
        up = per_level(channels_up, "channels_up")
        skip = per_level(channels_skip, "channels_skip")
        if min(down) < 1 or min(up) < 1 or min(skip) < 0:
            raise ValueError("channels_down/up must be positive and channels_skip non-negative")
        self.depth, self.dim = depth, dim
        level, level_out = None, None
        for i in reversed(range(depth)):
            cin = in_channels if i == 0 else down[i - 1]
            level = _Level(dim, cin, down[i], up[i], skip[i], level, level_out)
            level_out = up[i]
        self.body = level
        self.out = _conv(dim, up[0], out_channels, 1)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.dim + 2:
            raise ValueError(f"SkipNet(dim={self.dim}) expects (B, C, {'H, W' if self.dim == 2 else 'n'}), got {tuple(x.shape)}")
        if min(x.shape[2:]) < 2 ** (self.depth + 1):
            raise ValueError(f"input {tuple(x.shape)} is too small for depth {self.depth}: each spatial size must "
                             f"be >= {2 ** (self.depth + 1)} (use depth <= {max_depth(min(x.shape[2:]))})")
        x = self.out(self.body(x))
        return torch.sigmoid(x) if self.sigmoid else x
