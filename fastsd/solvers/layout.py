"""Operator image layout <-> real network layout, shared by every solver.

Operators work on images ``(B, n)``, ``(B, C, n)``, ``(B, C, H, W)`` or ``(B, C, D, H, W)``, real or
complex; networks see real tensors with a channel dim: ``(B, n)`` vectors gain one channel and
each complex channel becomes a (re, im) pair of real channels (the convention of the SDI code).
The conversion is a linear isometry, so losses, gradients and projections carry over unchanged.
"""
from __future__ import annotations

import torch

__all__ = ["NetLayout", "to_net", "from_net"]


def to_net(x: torch.Tensor) -> torch.Tensor:
    """Image -> real network layout (a view where possible)."""
    if x.ndim == 2:
        x = x.unsqueeze(1)
    if x.is_complex():
        x = torch.view_as_real(x).movedim(-1, 2).flatten(1, 2)
    return x


def from_net(u: torch.Tensor, image_shape, image_dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`to_net` for images of per-problem shape ``image_shape`` and dtype ``image_dtype``."""
    shape = (u.shape[0],) + tuple(image_shape)
    if image_dtype.is_complex:
        u = u.unflatten(1, (u.shape[1] // 2, 2)).movedim(2, -1).to(image_dtype.to_real()).contiguous()
        return torch.view_as_complex(u).reshape(shape)
    return u.reshape(shape).to(image_dtype)


class NetLayout:
    """The layout of one operator's images (taken from ``like``, e.g. ``op.adjoint(y)``).

    ``net_shape`` is the network-layout shape of ``like``; ``spatial_dims`` (1, 2 or 3) picks the
    network family.
    """

    def __init__(self, like: torch.Tensor):
        if like.ndim not in (2, 3, 4, 5):
            raise ValueError(f"images must be (B, n), (B, C, n), (B, C, H, W) or (B, C, D, H, W); "
                             f"got shape {tuple(like.shape)}")
        self.image_shape, self.image_dtype = tuple(like.shape[1:]), like.dtype
        self.net_shape = tuple(to_net(like).shape)
        self.spatial_dims = len(self.net_shape) - 2

    def to_net(self, x: torch.Tensor) -> torch.Tensor:
        return to_net(x)

    def from_net(self, u: torch.Tensor) -> torch.Tensor:
        """Network layout -> the image layout and dtype of ``like``."""
        return from_net(u, self.image_shape, self.image_dtype)
