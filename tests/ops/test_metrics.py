"""PSNR / SSIM / NMSE against scikit-image and direct formulas."""
import numpy as np
import pytest
import torch

from fastsd.metrics import magnitude, nmse, psnr, ssim

skm = pytest.importorskip("skimage.metrics")


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    t = rng.random((3, 41, 37))
    x = t + 0.1 * rng.standard_normal(t.shape)
    return x, t


def test_psnr_matches_skimage(pair):
    x, t = pair
    assert psnr(x[0], t[0]) == pytest.approx(skm.peak_signal_noise_ratio(t[0], x[0], data_range=t[0].max()), abs=1e-10)
    assert psnr(x, t, data_range=2.0) == pytest.approx(skm.peak_signal_noise_ratio(t, x, data_range=2.0), abs=1e-10)
    assert psnr(t, t) == float("inf")


def test_ssim_fastmri_style_equals_skimage_uniform_window(pair):
    x, t = pair
    ref = np.mean([skm.structural_similarity(t[i], x[i], data_range=t.max()) for i in range(3)])
    assert ssim(x, t) == pytest.approx(ref, abs=1e-10)
    ref0 = skm.structural_similarity(t[0], x[0], data_range=t[0].max())
    assert ssim(torch.from_numpy(x[0]), torch.from_numpy(t[0])) == pytest.approx(ref0, abs=1e-10)
    assert ssim(t[0], t[0]) == pytest.approx(1.0)


def test_ssim_skimage_style_delegates(pair):
    x, t = pair
    ref = skm.structural_similarity(t[1], x[1], data_range=t[1].max() - t[1].min(),
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    got = ssim(x[1], t[1], style="skimage", gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert got == pytest.approx(ref, abs=1e-12)


def test_nmse_and_magnitude(pair):
    x, t = pair
    assert nmse(x, t) == pytest.approx(np.linalg.norm(x - t) ** 2 / np.linalg.norm(t) ** 2)
    z = torch.randn(2, 5, 6, dtype=torch.complex64)
    two = torch.stack([z.real, z.imag], dim=1)
    assert torch.allclose(magnitude(two), z.abs())
    assert torch.allclose(magnitude(z), z.abs())


def test_errors(pair):
    x, t = pair
    with pytest.raises(ValueError, match="does not match"):
        psnr(x[0], t)
    with pytest.raises(ValueError, match="magnitude"):
        nmse(x[0] + 1j, t[0])
    with pytest.raises(ValueError, match="style"):
        ssim(x, t, style="matlab")
    with pytest.raises(ValueError, match="window"):
        ssim(x[:, :5, :5], t[:, :5, :5])
    with pytest.raises(ValueError, match="2-channel"):
        magnitude(torch.zeros(1, 3, 4, 4))
