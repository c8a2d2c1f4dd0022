"""Fused network layers: train-mode BatchNorm + ReLU in one op (:func:`fastsd.functional.bn_relu`)
and the U-Net decoder's upsample + pad + concat in one op (:func:`fastsd.functional.upsample_concat`).

:func:`fuse_bn_relu` rewrites a network in place, replacing each ``BatchNorm2d`` directly followed
by a ``ReLU`` inside an ``nn.Sequential`` by :class:`BatchNormReLU` and the ReLU by ``Identity``;
:func:`fuse_upsample_concat` replaces each :class:`~fastsd.nets.unet.UpsampleConcat` by
:class:`FusedUpsampleConcat`; :func:`fuse_layers` does both. Parameter and buffer names are
unchanged, so state dicts, the paper initialisation and
:class:`~fastsd.graphs.step_graph.BatchedNet` see the same network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsd.functional.batchnorm import bn_relu
from fastsd.functional.upcat import upsample_concat
from fastsd.nets.unet import UpsampleConcat

__all__ = ["BatchNormReLU", "FusedUpsampleConcat", "fuse_bn_relu", "fuse_upsample_concat", "fuse_layers"]


class BatchNormReLU(nn.BatchNorm2d):
    """``ReLU(BatchNorm2d(x))``; with batch statistics (training, or no running statistics) it
    runs the fused op, otherwise the unfused PyTorch path with the running statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        batch_stats = self.training or self.running_mean is None
        if not batch_stats:
            return F.relu(F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                       False, 0.0, self.eps))
        weight = self.weight if self.affine else x.new_ones(self.num_features, dtype=torch.float32)
        bias = self.bias if self.affine else x.new_zeros(self.num_features, dtype=torch.float32)
        if not (self.training and self.track_running_stats and self.running_mean is not None):
            return bn_relu(x, weight, bias, self.eps)
        y, (mean, var) = bn_relu(x, weight, bias, self.eps, return_stats=True)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            n = x.numel() // x.shape[1]
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
            self.running_var.lerp_((var * n / max(n - 1, 1)).to(self.running_var.dtype), momentum)
        return y


def fuse_bn_relu(net: nn.Module) -> nn.Module:
    """Replace every (BatchNorm2d, ReLU) pair of consecutive ``nn.Sequential`` entries of ``net``
    by (:class:`BatchNormReLU`, ``Identity``), keeping weights and buffers; returns ``net``."""
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            bn, act = seq._modules[a], seq._modules[b]
            if type(bn) is nn.BatchNorm2d and type(act) is nn.ReLU:
                fused = BatchNormReLU(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                                      device=_device(bn), dtype=_dtype(bn))
                fused.load_state_dict(bn.state_dict())
                fused.train(bn.training)
                seq._modules[a], seq._modules[b] = fused, nn.Identity()
    return net


class FusedUpsampleConcat(UpsampleConcat):
    """:class:`~fastsd.nets.unet.UpsampleConcat` as one fused op."""

    def forward(self, skip: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return upsample_concat(skip, h)


def fuse_upsample_concat(net: nn.Module) -> nn.Module:
    """Replace every :class:`~fastsd.nets.unet.UpsampleConcat` submodule of ``net`` by
    :class:`FusedUpsampleConcat`; returns ``net``."""
    for m in list(net.modules()):
        for name, child in list(m.named_children()):
            if type(child) is UpsampleConcat:
                setattr(m, name, FusedUpsampleConcat())
    return net


def fuse_layers(net: nn.Module) -> nn.Module:
    """Every fused layer of this module: :func:`fuse_bn_relu` then :func:`fuse_upsample_concat`."""
    return fuse_upsample_concat(fuse_bn_relu(net))


def _device(m: nn.Module):
    t = next(iter(m.state_dict().values()), None)
    return None if t is None else t.device


def _dtype(m: nn.Module):
    p = next(m.parameters(), None)
    return None if p is None else p.dtype
