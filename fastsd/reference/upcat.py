"""Reference of the U-Net decoder join: ``cat([skip, pad_to(upsample2x(h), skip)], dim=1)``.

``upsample2x`` is bilinear ×2 with ``align_corners=True``; ``pad_to`` zero-pads the (2h, 2w) map to
the skip's (H, W), ``(H − 2h) // 2`` rows above and the rest below (columns alike). ``skip``
(N, Cs, H, W) and ``h`` (N, Ch, h, w) share a dtype; the interpolation runs in float32 (float64 for
float64 inputs) and is rounded once. The output (N, Cs + Ch, H, W) has ``skip``'s memory format
(:func:`memory_format`), the backward's ``grad_h`` that of the incoming gradient; ``grad_skip`` is
the incoming gradient's first Cs channels and needs no op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastsd._utils import accumulate_dtype, memory_format, pad_to

__all__ = ["upcat_forward", "upcat_backward", "memory_format"]


def upcat_forward(skip: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """(N, Cs + Ch, H, W): ``skip`` then ``h`` upsampled ×2 and zero-padded to (H, W)."""
    N, Cs, H, W = skip.shape
    out = torch.empty((N, Cs + h.shape[1], H, W), dtype=skip.dtype, device=skip.device,
                      memory_format=memory_format(skip))
    up = F.interpolate(h.to(accumulate_dtype(h)), scale_factor=2, mode="bilinear", align_corners=True)
    out[:, :Cs] = skip
    out[:, Cs:] = pad_to(up, skip)
    return out


def upcat_backward(dout: torch.Tensor, skip_channels: int, height: int, width: int) -> torch.Tensor:
    """``grad_h`` (N, Ch, height, width) for the incoming gradient ``dout`` (N, Cs + Ch, H, W):
    the up-channels cropped to the upsampled window (adjoint of the padding), then the adjoint of
    the upsampling (PyTorch's own ``upsample_bilinear2d_backward``)."""
    N, C, H, W = dout.shape
    top, left = (H - 2 * height) // 2, (W - 2 * width) // 2
    g = dout[:, skip_channels:, top:top + 2 * height, left:left + 2 * width].to(accumulate_dtype(dout))
    gh = torch.ops.aten.upsample_bilinear2d_backward(
        g, [2 * height, 2 * width], [N, C - skip_channels, height, width], True, None, None)
    return torch.empty(gh.shape, dtype=dout.dtype, device=dout.device, memory_format=memory_format(dout)).copy_(gh)
