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

from fastsd.nets.unet import UNetBase, _block, init_weights, pad_to

__all__ = ["UNet3d"]


class UNet3d(UNetBase):
    """3-D U-Net (see module docstring). Any input with D, H, W >= ``2**(depth+1)`` works: after
    each upsampling the feature map is zero-padded to its skip's size.

    Args:
        in_channels, out_channels: 2 for MRI (re, im).
        width: channels of the first level (32 in the paper's 3-D network).
        depth: number of max-pool levels (5).
        out_activation: ``None`` or ``'sigmoid'``.
        seed / generator: the initialisation's random stream (``generator`` wins).

    ``UNet3d.small``: width 4, 2 levels (about 22 k parameters), for CPUs.
    """

    spatial, SMALL = "D, H, W", dict(width=4, depth=2)

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, depth: int = 5,
                 out_activation: str | None = None, seed: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(in_channels, out_channels, width, depth, out_activation)
        ch = [width * 2**i for i in range(depth + 1)]
        self.inc = _block(in_channels, ch[0], dim=3)
        self.downs = nn.ModuleList(_block(ch[i], ch[i + 1], dim=3) for i in range(depth))
        self.upsample = nn.ModuleList(nn.ConvTranspose3d(ch[i + 1], ch[i], 2, stride=2) for i in reversed(range(depth)))
        self.ups = nn.ModuleList(_block(2 * ch[i], ch[i], dim=3) for i in reversed(range(depth)))
        self.outc = nn.Conv3d(ch[0], out_channels, 1)
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        init_weights(self, generator=generator)
        with torch.no_grad():  # init_weights covers Conv*d; the transposed convs get the same N(0, 0.02²)
            for m in self.upsample:
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.02)
                m.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool3d(skips[-1], 2)))
        h = skips.pop()
        for upsample, up in zip(self.upsample, self.ups):
            skip = skips.pop()
            h = up(torch.cat([skip, pad_to(upsample(h), skip)], dim=1))
        return self.activate(self.outc(h))
