"""``A_dagger`` of the deepinv drop-in classes: by default deepinv's own (BlurFFT: the same
absolute cut-off on |H|; Downsampling: deepinv's least-squares solver), with fastsd's relative
threshold as an option, on noiseless and noisy measurements of a real image."""
import warnings

import pytest
import torch

try:
    import deepinv as dinv
except Exception as e:  # not installed, or a torchvision build that does not match torch
    pytest.skip(f"deepinv not usable: {type(e).__name__}: {e}", allow_module_level=True)

from fastsd.data import mri_slice
from fastsd.interop import deepinv as fi
from fastsd.ops.image import Blur
from fastsd.testing import rel_err

warnings.filterwarnings("ignore", category=UserWarning, module="deepinv")

SIZE = (1, 48, 64)  # (C, H, W): H != W


@pytest.fixture(autouse=True, params=["fused", "direct"])
def cpu_path(request, monkeypatch):
    """Both CPU paths: the fused ops (what CUDA runs) and the direct path (the CPU default)."""
    monkeypatch.setattr(fi._Fused, "cpu_path", request.param)
    return request.param


def _image():
    return mri_slice((SIZE[1], SIZE[2]))[:, :1]  # (1, 1, H, W) magnitude in [0, 1]


def _noisy(y, sigma):
    return y + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("sigma", [0.0, 0.01])
def test_blur_a_dagger(sigma, cpu_path):
    filt = dinv.physics.functional.gaussian_blur(sigma=(1.5, 1.5))
    ref = dinv.physics.BlurFFT(SIZE, filter=filt)
    y = _noisy(ref.A(_image()), sigma)
    ours = fi.BlurFFT(SIZE, filter=filt)
    got = ours.A_dagger(y)
    assert ours.fastsd_path == ("fastsd" if cpu_path == "fused" else "direct")
    assert rel_err(got, ref.A_dagger(y)) < 1e-5
    # some frequencies lie between the two cut-offs, so the two rules really differ
    h = ref.mask[0, 0, ..., 0]
    assert bool(((h > fi.DEEPINV_PINV_CUTOFF) & (h < 1e-3 * h.max())).any())
    relative = fi.BlurFFT(SIZE, filter=filt, pinv_threshold=1e-3)
    want = Blur(filt[0, 0], SIZE[1:], pinv_threshold=1e-3).pinv(y)
    assert rel_err(relative.A_dagger(y), want) < 1e-5
    assert rel_err(relative.A_dagger(y), got) > 1e-3
    # the option can be changed after construction
    relative.pinv_threshold = None
    assert rel_err(relative.A_dagger(y), got) < 1e-6


@pytest.mark.parametrize("sigma", [0.0, 0.01])
def test_downsampling_a_dagger(sigma):
    ref = dinv.physics.Downsampling(SIZE, filter="bicubic", factor=2, padding="circular")
    y = _noisy(ref.A(_image()), sigma)
    ours = fi.Downsampling(SIZE, filter="bicubic", factor=2)
    got = ours.A_dagger(y)
    assert rel_err(got, ref.A_dagger(y)) < 1e-4  # the same solver on A, A^H equal to float32 rounding
    relative = fi.Downsampling(SIZE, filter="bicubic", factor=2, pinv_threshold=1e-3)
    closed = relative.A_dagger(y)
    assert relative.fastsd_path == "fastsd"
    assert rel_err(closed, relative.fastsd_op.pinv(y)) < 1e-6
    assert rel_err(ref.A(closed), y) < 1e-4  # a consistent pseudo-inverse: A A^+ y = y (A has full row rank)
