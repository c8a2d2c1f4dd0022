"""3-D data: volume fitting, simulated acquisitions, k-space readers, calibration maps, NIfTI
round trip and the MNI template (the last two need the data3d extra and are skipped without it)."""
import numpy as np
import pytest
import torch

from fastsd.data3d import calibration_maps, default_calib, fit_volume, load_kspace3d, simulate_acquisition
from fastsd.ops import MRI3D, acceleration_of, birdcage_maps
from fastsd.reference.mri import fftnc
from fastsd.testing import assert_close


def _ellipsoid(shape=(30, 40, 20), radii=(10, 8, 6), centre=(12, 22, 9)):
    g = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    d = sum(((g[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    return (d <= 1).astype(np.float32) * 3.0


def test_fit_volume_crops_pads_and_resamples():
    out = fit_volume(_ellipsoid(), (16, 16, 12))
    assert out.shape == (16, 16, 12) and out.dtype == torch.float32 and float(out.max()) == pytest.approx(1.0)
    nz = torch.nonzero(out > 0.5)
    centre = nz.float().mean(0)
    assert torch.allclose(centre, torch.tensor([7.5, 7.5, 5.5]), atol=1.0)  # object centred
    extent = nz.max(0).values - nz.min(0).values + 1
    assert extent[0] > extent[2]  # proportions kept (radii 10 : 6)
    with pytest.raises(ValueError, match="shape must be"):
        fit_volume(_ellipsoid(), (16, 16))
    with pytest.raises(ValueError, match="positive values"):
        fit_volume(np.zeros((4, 4, 4)), (4, 4, 4))


def test_simulated_acquisition():
    x = torch.randn(1, 2, 6, 20, 16, generator=torch.Generator().manual_seed(0))
    y, op = simulate_acquisition(x, coils=4, acceleration=4, seed=1)
    assert isinstance(op, MRI3D) and op.n_coils == 4 and op.mask.shape == (1, 20, 16)
    assert abs(acceleration_of(op.mask) / 4 - 1) < 0.05
    c = default_calib(20, 16)
    y0, x0 = (20 - c + 1) // 2, (16 - c + 1) // 2
    assert c == 3 and op.mask[0, y0:y0 + c, x0:x0 + c].all()
    assert_close("sum of |S|^2", op.smaps.abs().square().sum(0), torch.ones(6, 20, 16))
    assert torch.equal(y, op(x)) and default_calib(160, 128) == 24
    _, single = simulate_acquisition(x, coils=1, acceleration=3, calib=4, mask="gaussian")
    assert single.single_coil and abs(acceleration_of(single.mask) / 3 - 1) < 0.05
    with pytest.raises(ValueError, match="mask must be"):
        simulate_acquisition(x, mask="radial")
    with pytest.raises(ValueError, match="volume"):
        simulate_acquisition(x[:, :, 0])


def test_kspace_reader_and_calibration_maps(tmp_path):
    D, H, W = 4, 24, 20
    maps = birdcage_maps(4, (D, H, W))
    img = torch.from_numpy(_ellipsoid((D, H, W), (6, 14, 12), (2, 12, 10))).to(torch.complex64) + 0.1
    k = fftnc(maps * img, 3)
    np.save(tmp_path / "k.npy", k.numpy())
    got = load_kspace3d(tmp_path / "k.npy")
    assert got.shape == (4, D, H, W) and torch.equal(got, k)
    est = calibration_maps(got, torch.ones(H, W), 12)
    assert_close("sum of |S|^2", est.abs().square().sum(0), torch.ones(D, H, W))
    # the estimate matches the true maps up to one common phase per voxel where the object is
    inner = img.real > 1
    ratio = (est.conj() * maps).sum(0)
    assert float(ratio.abs()[inner].mean()) > 0.95
    np.save(tmp_path / "real.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="must be complex"):
        load_kspace3d(tmp_path / "real.npy")
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.complex64))
    with pytest.raises(ValueError, match=r"shape \(C, D, H, W\)"):
        load_kspace3d(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="no such file"):
        load_kspace3d(tmp_path / "missing.npy")


def test_nifti_round_trip(tmp_path):
    pytest.importorskip("nibabel")
    from fastsd.data3d import load_nifti, save_nifti

    vol = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    save_nifti(tmp_path / "v.nii.gz", vol)
    got, affine = load_nifti(tmp_path / "v.nii.gz")
    assert np.array_equal(got, vol) and affine.shape == (4, 4)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        load_nifti(tmp_path / "junk.nii.gz")
    save_nifti(tmp_path / "flat.nii", vol[..., 0])
    with pytest.raises(ValueError, match="3-D volume"):
        load_nifti(tmp_path / "flat.nii")


def test_mni_template_volume():
    pytest.importorskip("nibabel")
    from fastsd.data3d import mni_t1_path, mri_volume

    try:
        mni_t1_path()
    except ImportError:
        pytest.skip("nilearn is not installed (data3d extra)")
    x = mri_volume((20, 20, 16), phase="smooth")
    assert x.shape == (1, 2, 20, 20, 16) and x.dtype == torch.float32
    mag = x[0].norm(dim=0)
    assert float(mag.max()) == pytest.approx(1.0, abs=1e-5) and float(x[0, 1].abs().max()) > 0.1
    assert float(mag[10, 10, 8]) > 0.2 and float(mag[0, 0, 0]) < 0.05  # brain in the centre, air in the corner
