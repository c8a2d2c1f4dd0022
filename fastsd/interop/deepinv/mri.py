"""deepinv's ``MRI`` and ``MultiCoilMRI`` on fastsd's fused MRI operators (2D and ``three_d``).

Layouts (deepinv's): complex images (B, 2, *S) (re, im), S = (H, W) or (D, H, W); single-coil
k-space (B, 2, *S); multi-coil k-space (B, 2, N, *S). The fused ops compute in float32 /
complex64 (float16 / bfloat16 images are cast and results cast back).
"""
from __future__ import annotations

import deepinv as _dinv
import torch

from fastsd._checks import check_tensor
from fastsd.functional.mri import IMAGE_DTYPES
from fastsd.interop.deepinv import direct as _direct
from fastsd.interop.deepinv.routing import _Fused
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.mri import MRI as _FsMRI
from fastsd.ops.mri import MRI3D as _FsMRI3D


def _mri_op(mask, coil_maps=None, three_d: bool = False) -> tuple[_FsMRI | None, str | None]:
    """fastsd's fused MRI operator for deepinv's mask (B, 2, *S) and coil maps (B, N, *S) (None:
    single coil), S = (H, W), or (D, H, W) with ``three_d`` (then an :class:`~fastsd.ops.mri.MRI3D`),
    or (None, the reason fastsd has none)."""
    nd = 3 if three_d else 2
    dims = "D, H, W" if three_d else "H, W"
    if not isinstance(mask, torch.Tensor):
        return None, f"mask of type {type(mask).__name__}"
    if mask.is_complex():
        return None, "complex mask"
    m = mask.detach()
    if coil_maps is None and m.ndim < nd + 2:  # deepinv's single-coil mask broadcasts from the right
        m = m.reshape((1,) * (nd + 2 - m.ndim) + tuple(m.shape))
    if m.ndim != nd + 2 or m.shape[1] not in (1, 2):
        return None, f"mask of shape {tuple(mask.shape)}: fastsd's MRI takes (B, 2, {dims})"
    if not torch.equal(m[:, 0], m[:, -1]):
        return None, "the mask differs between the real and imaginary channels"
    if not bool(((m == 0) | (m == 1)).all()):
        return None, "the mask is not binary (0/1)"
    m = m[:, 0].to(torch.float32)
    smaps = None
    if coil_maps is not None:
        if coil_maps.ndim != nd + 2 or coil_maps.dtype != torch.complex64:
            return None, (f"coil maps {tuple(coil_maps.shape)} {coil_maps.dtype}: "
                          f"fastsd's MRI takes complex64 (B, N, {dims})")
        smaps = coil_maps.detach()
        smaps = smaps[0] if smaps.shape[0] == 1 else smaps
    try:
        return (_FsMRI3D if three_d else _FsMRI)((m[0] if m.shape[0] == 1 else m).contiguous(), smaps), None
    except ValueError as e:
        return None, str(e)


def _complex_kspace(y: torch.Tensor, multicoil: bool) -> torch.Tensor:
    """deepinv's k-space (B, 2, [N,] *S) as fastsd's complex64 (B, N, *S) (N = 1: single coil)."""
    k = torch.view_as_complex(y.to(torch.float32).movedim(1, -1).contiguous())
    return k if multicoil else k[:, None]


class _MRILayout(_Fused):
    """Image (B, 2, *S) real <-> fastsd float32; k-space (B, 2, [N,] *S) real <-> complex64 (B, N, *S)."""

    _PARAMS = ("mask",)
    _CONFIG = ("three_d",)
    _DIRECT = _direct.MRI
    _multicoil = False
    _native_batched_gamma = False

    def _build(self, size):
        return _mri_op(self.mask, self.coil_maps if self._multicoil else None, self.three_d)

    def _check_call(self, op, t, kind):
        if kind == "x":
            op.check_input(t)
            return
        check_tensor("k-space", t, dtypes=IMAGE_DTYPES)
        nd = op.spatial_dims
        want = nd + 2 + self._multicoil
        if t.ndim != want or t.shape[1] != 2:
            raise ValueError(f"k-space of shape {tuple(t.shape)}: expected {want} dimensions with 2 channels")
        if self._multicoil and t.shape[2] != op.n_coils:
            raise ValueError(f"k-space with {t.shape[2]} coils for {op.n_coils} coil maps")
        if any(n not in (None, s) for n, s in zip(op.img_size, t.shape[-nd:])):
            raise ValueError(f"k-space of size {tuple(t.shape[-nd:])} for an operator of size {op.img_size}")
        if op.mask.ndim == nd + 1 and op.mask.shape[0] != t.shape[0]:
            raise ValueError(f"{op.mask.shape[0]} per-problem masks for a batch of {t.shape[0]}")
        if op.smaps is not None and op.smaps.ndim == nd + 2 and op.smaps.shape[0] != t.shape[0]:
            raise ValueError(f"{op.smaps.shape[0]} per-problem coil maps for a batch of {t.shape[0]}")
        if t.device != op.mask.device:
            raise ValueError(f"k-space on {t.device}, operator on {op.mask.device}")

    def _x_in(self, x):
        return x if x.dtype in IMAGE_DTYPES else x.to(torch.float32)

    def _x_out(self, x, dtype):
        return x.to(dtype)

    def _y_in(self, y):
        return _complex_kspace(y, self._multicoil)

    def _y_out(self, k, dtype):
        return torch.view_as_real(k if self._multicoil else k[:, 0]).movedim(-1, 1).to(dtype)


class MRI(_MRILayout, _dinv.physics.MRI):
    """Single-coil Cartesian MRI ``y = M F x`` (deepinv.physics.MRI) on fastsd's fused MRI ops.

    Args as deepinv's: ``mask`` (H, W), (C, H, W), (B, C, H, W) or higher rank, ``img_size``,
    ``three_d``, ``device``. Fused for binary masks equal on both channels and float32 / float16
    / bfloat16 data, in 2D and 3D (``three_d=True``: volumes (B, 2, D, H, W) on
    :class:`fastsd.ops.mri.MRI3D`, masks broadcast as in deepinv); per-channel or non-binary
    masks, float64 data and a mask that requires grad run deepinv's code (``fastsd_path``).
    ``prox_l2`` is the closed-form k-space data consistency, ``A_dagger`` is ``A_adjoint``
    (A A^H = M).
    """

    def A_adjoint(self, y, mask=None, mag: bool = False, crop: bool = False, **kwargs):
        x = super().A_adjoint(y, mask=mask, **kwargs)
        if mag:
            x = self.rss(x, multicoil=False)
        return self.crop(x, crop=crop) if crop else x


class MultiCoilMRI(_MRILayout, _dinv.physics.MultiCoilMRI):
    """Multi-coil Cartesian MRI ``y_n = M F (s_n x)`` (deepinv.physics.MultiCoilMRI) on fastsd's
    fused MRI ops.

    Args as deepinv's: ``mask``, ``coil_maps`` complex (N, *S) or (B, N, *S) (an int N
    simulates N birdcage coils with :func:`fastsd.ops.coils.birdcage_maps`, no sigpy needed;
    in 3D the same maps on every slice), ``img_size``, ``three_d``. Fused as :class:`MRI`, 2D and
    3D, with complex64 coil maps of the full image size;
    ``prox_l2`` and ``A_dagger`` run conjugate gradients on the fused normal operator.
    ``A_adjoint(y, rss=True)`` (coil images, not a coil combination) is deepinv's code.
    """

    _multicoil = True
    _PARAMS = ("mask", "coil_maps")
    _DIRECT = _direct.MultiCoilMRI

    def __init__(self, mask=None, coil_maps=None, img_size=(320, 320), three_d: bool = False, device="cpu", **kwargs):
        if isinstance(coil_maps, int):
            shape = tuple(mask.shape[-2:]) if isinstance(mask, torch.Tensor) else tuple(img_size[-2:])
            if three_d:
                depth = mask.shape[-3] if isinstance(mask, torch.Tensor) else img_size[-3]
                coil_maps = birdcage_maps(coil_maps, shape)[:, None].expand(-1, depth, -1, -1).contiguous()
            else:
                coil_maps = birdcage_maps(coil_maps, shape)
        super().__init__(mask=mask, coil_maps=coil_maps, img_size=img_size, three_d=three_d, device=device, **kwargs)

    def A_adjoint(self, y, mask=None, coil_maps=None, rss: bool = False, crop: bool = False, **kwargs):
        if rss:  # coil images, not a coil combination: deepinv's path
            return self._parent("A_adjoint", y, mask=mask, coil_maps=coil_maps, rss=True, crop=crop)
        x = super().A_adjoint(y, mask=mask, coil_maps=coil_maps, **kwargs)
        return self.crop(x, crop=crop) if crop else x
