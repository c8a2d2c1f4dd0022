"""Input files at the edges: sizes checked from the header before decoding (fastsd.limits), values
beyond float32, integer images at the top of their range, malformed fastMRI files."""
import warnings

import numpy as np
import pytest
import torch

import fastsd.limits
from fastsd.data import load_fastmri, load_image, load_mri_image
from fastsd.data3d import load_kspace3d, load_nifti


def test_a_png_declaring_too_many_pixels_is_refused_from_its_header(tmp_path):
    """A 20000 x 20000 1-bit PNG is a few MB on disk but 4e8 pixels decoded."""
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(path)
    with pytest.raises(ValueError, match=r"huge.png: data of 20000 x 20000 x 1 holds 400,000,000 values, more than "
                                         r"the limit of 134,217,728"):
        load_image(path)


@pytest.mark.parametrize("suffix", [".npy", ".png", ".nii.gz", "-kspace3d.npy"])
def test_the_limit_applies_to_every_file_type(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(fastsd.limits, "MAX_VALUES", 16 * 16 - 1)
    path = tmp_path / f"a{suffix}"
    img = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    if suffix == ".npy":
        np.save(path, img)
    elif suffix == "-kspace3d.npy":
        np.save(path, np.ones((1, 16, 4, 4), np.complex64))
    elif suffix == ".png":
        import matplotlib.pyplot as plt

        plt.imsave(path, img, cmap="gray")
    else:
        import nibabel

        nibabel.save(nibabel.Nifti1Image(img[..., None], np.eye(4)), str(path))
    load = {".nii.gz": load_nifti, "-kspace3d.npy": load_kspace3d}.get(suffix, load_image)
    with pytest.raises(ValueError, match="more than the limit of 255"):
        load(path)


def test_float_values_beyond_float32_are_named_not_called_all_zeros(tmp_path):
    a = np.full((16, 16), 1e300)
    a[0, 0] = 0
    np.save(tmp_path / "big.npy", a)
    for load in (load_image, load_mri_image):
        with pytest.raises(ValueError, match="values up to 1e.300 exceed float32's range"):
            load(tmp_path / "big.npy")


@pytest.mark.parametrize("top, bits", [(255, 8), (256, 16), (65535, 16)])
def test_wide_integer_images_at_the_top_of_a_range(tmp_path, top, bits):
    """An int64 image whose maximum is exactly 255 is 8-bit (divided by 255, reaching 1), one of 256
    is 16-bit (divided by 65535)."""
    a = np.arange(256, dtype=np.int64).reshape(16, 16) * top // 255
    np.save(tmp_path / "i.npy", a)
    with pytest.warns(UserWarning, match=f"{bits}-bit intensities"):
        x = load_image(tmp_path / "i.npy")
    assert float(x.max()) == pytest.approx(top / (2**bits - 1), rel=1e-6)


def _fastmri(path, kspace=True, rss_slices=None, group=False):
    import h5py

    with h5py.File(path, "w") as f:
        if group:
            f.create_group("kspace").create_dataset("data", data=np.ones((2, 8, 8), np.complex64))
        elif kspace:
            f.create_dataset("kspace", data=np.ones((4, 2, 16, 16), np.complex64))
        if rss_slices is not None:
            f.create_dataset("reconstruction_rss", data=np.ones((rss_slices, 16, 16), np.float32))
    return path


def test_fastmri_group_instead_of_dataset_and_short_rss(tmp_path):
    with pytest.raises(ValueError, match="g.h5: 'kspace' is an HDF5 group, not a dataset"):
        load_fastmri(_fastmri(tmp_path / "g.h5", group=True))
    with pytest.raises(ValueError, match="g3.h5: 'kspace' is an HDF5 group, not a dataset"):
        load_kspace3d(_fastmri(tmp_path / "g3.h5", group=True))
    with pytest.warns(UserWarning, match=r"reconstruction_rss \(\(2, 16, 16\)\) does not hold one image per kspace "
                                         r"slice \(4\); ignored"):
        got = load_fastmri(_fastmri(tmp_path / "short.h5", rss_slices=2))
    assert got["rss"] is None and got["kspace"].shape == (2, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_fastmri(_fastmri(tmp_path / "ok.h5", rss_slices=4))["rss"].shape == (16, 16)


def test_a_2d_fastmri_file_is_not_read_as_3d_kspace(tmp_path):
    """Before, (slices, coils, H, W) was read as (coils, readout, H, W) and reconstructed silently."""
    with pytest.raises(ValueError, match=r"a 2-D fastMRI file \(it has 'reconstruction_rss'\).*use --task mri"):
        load_kspace3d(_fastmri(tmp_path / "2d.h5", rss_slices=4))
    assert load_kspace3d(_fastmri(tmp_path / "3d.h5")).shape == (4, 2, 16, 16)


def test_all_zero_3d_kspace_is_refused(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((2, 8, 8, 8), np.complex64))
    with pytest.raises(ValueError, match="z.npy: the k-space is all zeros"):
        load_kspace3d(tmp_path / "z.npy")
    assert torch.is_tensor(load_kspace3d(_save_ones(tmp_path / "o.npy")))


def _save_ones(path):
    np.save(path, np.ones((2, 8, 8, 8), np.complex64))
    return path
