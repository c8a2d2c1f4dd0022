"""The self-diffusion denoiser networks.

:class:`UNet` is the paper's 2D U-Net: ``depth`` max-pool levels with channels
``width * (1, 2, 4, ..., 2**(depth-1), 2**(depth-1))`` plus a bottleneck block, every block two
(conv3x3 + BatchNorm + ReLU), bilinear x2 upsampling (``align_corners=True``) concatenated with
the skip, and a 1x1 output conv. At ``width=64, depth=5, in=out=2`` it has about 88 M parameters.
BatchNorm is meant to stay in train mode (batch 1 makes it instance-norm-like).

:class:`ConvNet1d` is a small 1D network for operators on vectors (1D compressed sensing, radar
steering matrices), the counterpart of the official code's ``SimpleNet1D``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsd._utils import pad_to

__all__ = ["UNet", "ConvNet1d", "UpsampleConcat", "SampleNorm", "NORMS", "init_weights", "pad_to"]


def init_weights(net: nn.Module, std: float = 0.02, generator: torch.Generator | None = None) -> nn.Module:
    """Paper initialisation: conv/linear weights N(0, std²), biases 0, BatchNorm weights N(1, std²)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=generator) * std)
                m.bias.zero_()
    return net


class UpsampleConcat(nn.Module):
    """The decoder join ``cat([skip, pad_to(upsample2x(h), skip)], dim=1)`` (bilinear,
    ``align_corners=True``). A module without parameters, so
    :func:`fastsd.nets.fused.fuse_upsample_concat` can swap in the fused op."""

    def forward(self, skip: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
        return torch.cat([skip, pad_to(h, skip)], dim=1)


def _check_activation(out_activation: str | None) -> str | None:
    if out_activation not in (None, "sigmoid"):
        raise ValueError(f"out_activation must be None or 'sigmoid', got {out_activation!r}")
    return out_activation


def _activate(out: torch.Tensor, out_activation: str | None) -> torch.Tensor:
    return torch.sigmoid(out) if out_activation == "sigmoid" else out


class SampleNorm(nn.modules.batchnorm._BatchNorm):
    """Per-sample normalisation with BatchNorm's affine parameters: each sample of the batch is
    normalised over its own spatial positions (``F.instance_norm``). At batch 1 it computes exactly
    what train-mode BatchNorm computes, so a batch of B slices through one network normalises each
    slice as a one-slice run would. Parameter names and initialisation are BatchNorm's."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 3:
            raise ValueError(f"SampleNorm needs input (B, C, ...), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, use_input_stats=True, eps=self.eps)


NORMS = ("batch", "sample", "none")
"""Normalisation layers of the U-Nets: 'batch' (train-mode BatchNorm, the paper's), 'sample'
(:class:`SampleNorm`: per-sample statistics, equal to 'batch' at batch 1) or 'none'."""
_CONV = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d), 3: (nn.Conv3d, nn.BatchNorm3d)}


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm


def _norm_layer(norm: str, dim: int, channels: int) -> nn.Module:
    if norm == "batch":
        return _CONV[dim][1](channels)
    return SampleNorm(channels, track_running_stats=False) if norm == "sample" else nn.Identity()


def per_sample_norm(net: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``net`` (in place) by a :class:`SampleNorm` holding the
    same affine parameters, so each sample of a batch is normalised over itself; returns ``net``."""
    for m in list(net.modules()):
        for name, child in list(m.named_children()):
            if type(child) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
                norm = SampleNorm(child.num_features, child.eps, affine=child.affine, track_running_stats=False)
                if child.affine:
                    norm.weight, norm.bias = child.weight, child.bias
                setattr(m, name, norm)
    return net


def _block(cin: int, cout: int, mid: int | None = None, dim: int = 2, norm: str = "batch") -> nn.Sequential:
    """Two (conv3 + normalisation + ReLU) over ``dim`` spatial dims."""
    conv = _CONV[dim][0]
    mid = mid or cout
    return nn.Sequential(
        conv(cin, mid, 3, padding=1), _norm_layer(norm, dim, mid), nn.ReLU(inplace=True),
        conv(mid, cout, 3, padding=1), _norm_layer(norm, dim, cout), nn.ReLU(inplace=True),
    )


class UNetBase(nn.Module):
    """What the 2-D and 3-D U-Nets share: argument checks, the smallest input, the output activation."""

    spatial: str  # names of the spatial dims, e.g. "H, W"

    def __init__(self, in_channels: int, out_channels: int, width: int, depth: int, out_activation: str | None):
        super().__init__()
        if in_channels < 1 or out_channels < 1 or width < 1 or depth < 1:
            raise ValueError("in_channels, out_channels, width and depth must be positive")
        self.depth, self.out_activation = depth, _check_activation(out_activation)

    @classmethod
    def small(cls, in_channels: int, out_channels: int, **kw) -> UNetBase:
        """A CPU-sized network (the class's ``SMALL`` width and depth)."""
        return cls(in_channels, out_channels, **{**cls.SMALL, **kw})

    def min_size(self) -> int:
        """Smallest spatial size accepted (the deepest level needs 2 per dim for batch statistics)."""
        return 2 ** (self.depth + 1)

    def check_input(self, x: torch.Tensor) -> None:
        dims = self.spatial.count(",") + 1
        if x.ndim != 2 + dims or min(x.shape[-dims:]) < self.min_size():
            raise ValueError(
                f"{type(self).__name__}(depth={self.depth}) needs input (B, C, {self.spatial}) with "
                f"{self.spatial} >= {self.min_size()}, got {tuple(x.shape)}")

    def activate(self, out: torch.Tensor) -> torch.Tensor:
        return _activate(out, self.out_activation)


class UNet(UNetBase):
    """The paper's U-Net (see module docstring). Any input size of at least ``2**(depth+1)`` works:
    after each upsampling the feature map is zero-padded to its skip's size. ``UNet.small``: width 8,
    4 levels (about 0.35 M parameters), for CPUs. ``norm`` picks the normalisation layer
    (:data:`NORMS`; the paper's is 'batch')."""

    spatial, SMALL = "H, W", dict(width=8, depth=4)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 64,
        depth: int = 5,
        out_activation: str | None = None,
        seed: int | None = None,
        norm: str = "batch",
    ):
        super().__init__(in_channels, out_channels, width, depth, out_activation)
        self.norm = check_norm(norm)
        ch = [width * 2 ** min(i, depth - 1) for i in range(depth + 1)]
        self.inc = _block(in_channels, ch[0], norm=norm)
        self.downs = nn.ModuleList(_block(ch[i], ch[i + 1], norm=norm) for i in range(depth))
        self.bottleneck = _block(ch[depth], ch[depth], norm=norm)
        # Decoder level i joins the upsampled deeper map (channels ``up``) with skip i.
        self.ups = nn.ModuleList()
        up = ch[depth]
        for i in reversed(range(depth)):
            cin, cout = up + ch[i], ch[max(i - 1, 0)]
            self.ups.append(_block(cin, cout, mid=cin // 2, norm=norm))
            up = cout
        self.join = UpsampleConcat()
        self.outc = nn.Conv2d(up, out_channels, 1)
        init_weights(self, generator=None if seed is None else torch.Generator().manual_seed(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        h = self.bottleneck(skips.pop())
        for up in self.ups:
            h = up(self.join(skips.pop(), h))
        return self.activate(self.outc(h))


class ConvNet1d(nn.Module):
    """1D denoiser for vector unknowns: (conv3 + BN + ReLU) x2 then a 1x1 conv, input (B, C, n)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, out_activation: str | None = None,
                 seed: int | None = None):
        super().__init__()
        self.out_activation = _check_activation(out_activation)
        self.body = _block(in_channels, width, dim=1)
        self.final = nn.Conv1d(width, out_channels, 1)
        init_weights(self, generator=None if seed is None else torch.Generator().manual_seed(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"ConvNet1d needs input (B, C, n), got {tuple(x.shape)}")
        return _activate(self.final(self.body(x)), self.out_activation)
