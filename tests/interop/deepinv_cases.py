"""Shared set-up of the deepinv interop tests (tests/interop/test_deepinv*.py): each fastsd physics
beside deepinv's own class with the same parameters, random inputs, dense matrices. Importing it
skips the importing test module where deepinv is not usable."""
import warnings

import pytest
import torch

try:
    import deepinv as dinv
except Exception as e:  # not installed, or a torchvision build that does not match torch
    pytest.skip(f"deepinv not usable: {type(e).__name__}: {e}", allow_module_level=True)

from fastsd.interop import deepinv as fi  # noqa: E402
from fastsd.ops.masks import equispaced_mask  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning, module="deepinv")

H, W = 8, 12  # MRI image size
VOL = (3, 5, 7)  # 3D MRI volume size (D, H, W): odd, and no two alike
IMG = (3, 16, 16)  # image-operator size (C, H, W)

# both CPU paths for a test: the fused ops (what CUDA runs) and the direct path (the CPU default)
BOTH_PATHS = pytest.mark.parametrize("cpu_path", ["fused", "direct"], indirect=True)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _mri_mask(acc=2):
    return equispaced_mask((H, W), acc, acs_lines=2)


def _smaps(n=3, seed=1):
    # random maps: well conditioned on an 8x12 grid (birdcage maps are nearly singular there)
    return torch.randn(n, H, W, dtype=torch.complex64, generator=_gen(seed))


def _volume_mask(shape, seed):
    """Random 0/1 mask of ``shape`` that samples the k-space centre (so A^H A is well conditioned)."""
    m = (torch.rand(shape, generator=_gen(seed)) > 0.5).float()
    m[..., VOL[-2] // 2, VOL[-1] // 2] = 1
    return m


def _blur_filter():
    return dinv.physics.functional.gaussian_blur(sigma=(0.8, 0.8))


# name -> (fastsd physics, deepinv physics, image shape); deepinv's class with the same parameters
def _case(name):
    if name == "mri":
        m = _mri_mask()
        return fi.MRI(mask=m), dinv.physics.MRI(mask=m), (2, 2, H, W)
    if name == "mri_per_problem_mask":
        m = torch.stack([_mri_mask(2), _mri_mask(3)])[:, None]  # (B, 1, H, W)
        return fi.MRI(mask=m), dinv.physics.MRI(mask=m), (2, 2, H, W)
    if name == "multicoil":
        m, s = _mri_mask(), _smaps()
        return fi.MultiCoilMRI(mask=m, coil_maps=s), dinv.physics.MultiCoilMRI(mask=m, coil_maps=s), (2, 2, H, W)
    if name == "mri3d":  # a (D, H, W) volume mask, which deepinv's constructor stores as (1, D, H, W)
        m = _volume_mask(VOL, 31)
        return fi.MRI(mask=m, three_d=True), dinv.physics.MRI(mask=m, three_d=True), (2, 2) + VOL
    if name == "mri3d_per_problem_mask":  # (B, 1, D, H, W)
        m = _volume_mask((2, 1) + VOL, 32)
        return fi.MRI(mask=m, three_d=True), dinv.physics.MRI(mask=m, three_d=True), (2, 2) + VOL
    if name == "multicoil3d":  # a (H, W) phase-encoding mask (whole readout lines) and (N, D, H, W) maps
        m = _volume_mask(VOL[1:], 33)
        s = torch.randn((3,) + VOL, dtype=torch.complex64, generator=_gen(34))
        ours = fi.MultiCoilMRI(mask=m, coil_maps=s, three_d=True)
        return ours, dinv.physics.MultiCoilMRI(mask=m, coil_maps=s, three_d=True), (2, 2) + VOL
    if name == "inpainting":
        m = (torch.rand(IMG, generator=_gen(2)) > 0.5).float()
        return fi.Inpainting(IMG, mask=m), dinv.physics.Inpainting(IMG, mask=m), (2,) + IMG
    if name == "blur":
        f = _blur_filter()
        return fi.BlurFFT(IMG, filter=f), dinv.physics.BlurFFT(IMG, filter=f), (2,) + IMG
    if name == "sr_bicubic2":  # deepinv's own named filter: an independent check of the filter mapping
        ref = dinv.physics.Downsampling(IMG, filter="bicubic", factor=2, padding="circular")
        return fi.Downsampling(IMG, filter="bicubic", factor=2), ref, (2,) + IMG
    if name in ("sr_avg4", "sr_bicubic4"):  # fastsd's named filters, as tensors for deepinv
        filt = name[3:-1]
        ref = dinv.physics.Downsampling(IMG, filter=fi.deepinv_downsampling_filter(filt, 4), factor=4, padding="circular")
        ours = fi.Downsampling(IMG, filter="avg" if filt == "avg" else fi.deepinv_downsampling_filter(filt, 4), factor=4)
        return ours, ref, (2,) + IMG
    if name in ("sr_bilinear4", "sr_gaussian2", "sr_sinc2"):  # deepinv's named filters: any filter is fused
        filt, f = name[3:-1], int(name[-1])
        ref = dinv.physics.Downsampling(IMG, filter=filt, factor=f, padding="circular")
        return fi.Downsampling(IMG, filter=filt, factor=f), ref, (2,) + IMG
    raise KeyError(name)


MRI_CASES = ("mri", "mri_per_problem_mask", "multicoil", "mri3d", "mri3d_per_problem_mask", "multicoil3d")
CASES = [*MRI_CASES, "inpainting", "blur", "sr_bicubic2", "sr_avg4", "sr_bicubic4", "sr_bilinear4", "sr_gaussian2",
         "sr_sinc2"]


def _x(shape, seed=3, dtype=torch.float32):
    return torch.randn(shape, generator=_gen(seed), dtype=torch.float64).to(dtype)


def _dense(physics, shape, dtype=torch.float64):
    """Dense real matrix of ``physics.A`` for one problem (columns = images of the standard basis)."""
    n = int(torch.tensor(shape[1:]).prod())
    basis = torch.eye(n, dtype=torch.float32).reshape((n,) + tuple(shape[1:]))
    cols = torch.cat([physics.A(basis[i : i + 8]) for i in range(0, n, 8)])  # physics is shared over batch
    return cols.reshape(n, -1).T.to(dtype)
