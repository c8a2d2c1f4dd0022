"""The self-diffusion network for 3-D MRI (the official code's ``ExtraDeep3DUNet``).

:class:`UNet3d` is a U-Net on volumes (B, C, D, H, W): ``depth`` max-pool levels with channels
``width * (1, 2, 4, ..., 2**depth)`` (32 -> 1024 at the defaults, half the 2-D widths), every block
two (conv3x3x3 + BatchNorm3d + ReLU), no bottleneck block, transposed-conv x2 upsampling
(``ConvTranspose3d(c, c/2, 2, stride 2)``) concatenated with the skip, and a 1x1x1 output conv.
At ``width=32, depth=5, in=out=2`` it has about 90 M parameters. Same initialisation as the 2-D
:class:`~fastsd.nets.UNet` (:func:`~fastsd.nets.unet.init_weights`, transposed convs included);
BatchNorm is meant to stay in train mode (batch 1 makes it instance-norm-like).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsd.nets.unet import init_weights, pad_to

__all__ = ["UNet3d"]


def _block3(cin: int, cout: int) -> nn.Sequential:
    """Two (conv3x3x3 + BatchNorm3d + ReLU)."""
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
    )


class UNet3d(nn.Module):
    """3-D U-Net (see module docstring). Any input with D, H, W >= ``2**(depth+1)`` works: after
    each upsampling the feature map is zero-padded to its skip's size.

    Args:
        in_channels, out_channels: 2 for MRI (re, im).
        width: channels of the first level (32 in the paper's 3-D network).
        depth: number of max-pool levels (5).
        out_activation: ``None`` or ``'sigmoid'``.
        seed / generator: the initialisation's random stream (``generator`` wins).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, depth: int = 5,
                 out_activation: str | None = None, seed: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        if in_channels < 1 or out_channels < 1 or width < 1 or depth < 1:
            raise ValueError("in_channels, out_channels, width and depth must be positive")
        if out_activation not in (None, "sigmoid"):
            raise ValueError(f"out_activation must be None or 'sigmoid', got {out_activation!r}")
        self.depth, self.out_activation = depth, out_activation
        ch = [width * 2**i for i in range(depth + 1)]
        self.inc = _block3(in_channels, ch[0])
        self.downs = nn.ModuleList(_block3(ch[i], ch[i + 1]) for i in range(depth))
        self.upsample = nn.ModuleList(nn.ConvTranspose3d(ch[i + 1], ch[i], 2, stride=2) for i in reversed(range(depth)))
        self.ups = nn.ModuleList(_block3(2 * ch[i], ch[i]) for i in reversed(range(depth)))
        self.outc = nn.Conv3d(ch[0], out_channels, 1)
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        init_weights(self, generator=generator)
        with torch.no_grad():  # init_weights covers Conv*d; the transposed convs get the same N(0, 0.02²)
            for m in self.upsample:
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.02)
                m.bias.zero_()

    @classmethod
    def small(cls, in_channels: int, out_channels: int, width: int = 4, depth: int = 2, **kw) -> UNet3d:
        """A CPU-sized 3-D U-Net (width 4, 2 levels: about 22 k parameters)."""
        return cls(in_channels, out_channels, width=width, depth=depth, **kw)

    def min_size(self) -> int:
        """Smallest D, H, W accepted (the deepest level needs 2 per dimension for train-mode BatchNorm)."""
        return 2 ** (self.depth + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or min(x.shape[-3:]) < self.min_size():
            raise ValueError(
                f"UNet3d(depth={self.depth}) needs input (B, C, D, H, W) with D, H, W >= {self.min_size()}, "
                f"got {tuple(x.shape)}")
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool3d(skips[-1], 2)))
        h = skips.pop()
        for upsample, up in zip(self.upsample, self.ups):
            skip = skips.pop()
            h = up(torch.cat([skip, pad_to(upsample(h), skip)], dim=1))
        out = self.outc(h)
        return torch.sigmoid(out) if self.out_activation == "sigmoid" else out
