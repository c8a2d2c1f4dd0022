"""``A_dagger`` of the deepinv drop-in classes: by default deepinv's own (BlurFFT: the same
absolute cut-off on |H|; Downsampling: deepinv's least-squares solver), with fastsd's relative
threshold as an option, on noiseless and noisy measurements of a real image."""
import pytest
import torch
from deepinv_cases import BOTH_PATHS, dinv, fi

from fastsd.data import mri_slice
from fastsd.ops.image import Blur
from fastsd.testing import assert_close, rel_err

SIZE = (1, 48, 64)  # (C, H, W): H != W


pytestmark = [pytest.mark.usefixtures("cpu_path"), BOTH_PATHS]  # every test on both CPU paths (conftest.py)


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
    assert_close("A_dagger", got, ref.A_dagger(y))
    # some frequencies lie between the two cut-offs, so the two rules really differ
    h = ref.mask[0, 0, ..., 0]
    assert bool(((h > fi.DEEPINV_PINV_CUTOFF) & (h < 1e-3 * h.max())).any())
    relative = fi.BlurFFT(SIZE, filter=filt, pinv_threshold=1e-3)
    want = Blur(filt[0, 0], SIZE[1:], pinv_threshold=1e-3).pinv(y)
    assert_close("A_dagger, relative threshold", relative.A_dagger(y), want)
    assert rel_err(relative.A_dagger(y), got) > 1e-3
    # the option can be changed after construction
    relative.pinv_threshold = None
    assert_close("A_dagger, threshold reset to None", relative.A_dagger(y), got, factor=0.1)


@pytest.mark.parametrize("sigma", [0.0, 0.01])
def test_downsampling_a_dagger(sigma):
    ref = dinv.physics.Downsampling(SIZE, filter="bicubic", factor=2, padding="circular")
    y = _noisy(ref.A(_image()), sigma)
    ours = fi.Downsampling(SIZE, filter="bicubic", factor=2)
    got = ours.A_dagger(y)
    assert_close("A_dagger", got, ref.A_dagger(y), factor=10)  # the same solver on A, A^H equal to float32 rounding
    relative = fi.Downsampling(SIZE, filter="bicubic", factor=2, pinv_threshold=1e-3)
    closed = relative.A_dagger(y)
    assert relative.fastsd_path == "fastsd"
    assert_close("A_dagger, closed form", closed, relative.fastsd_op.pinv(y), factor=0.1)
    assert_close("A A^+ y", ref.A(closed), y, factor=10)  # a consistent pseudo-inverse: A A^+ y = y (A has full row rank)
