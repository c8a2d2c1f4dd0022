"""k-space sampling masks: acceleration, fully sampled centre, determinism, layout, errors."""
import numpy as np
import pytest
import torch

from fastsd.ops.masks import acceleration_of, equispaced_mask, gaussian_mask_2d, poisson_disc_mask_2d, random_mask


def _is_binary_hw(mask, shape):
    return (
        mask.shape == shape
        and mask.dtype == torch.float32
        and bool(((mask == 0) | (mask == 1)).all())
    )


def _check_seeded(mask, make):
    """``make(seed)`` gives ``mask`` again with seed 0 and another mask with seed 1."""
    assert torch.equal(mask, make(0))
    assert not torch.equal(mask, make(1))


def _is_line_mask(mask):
    return bool((mask == mask[:1]).all())  # every row equal: whole phase-encode columns


@pytest.mark.parametrize("accel", [4, 6, 8])
@pytest.mark.parametrize("width", [320, 368, 321])
def test_equispaced_acs_lines(accel, width):
    shape = (64, width)
    mask = equispaced_mask(shape, accel, acs_lines=20)
    assert _is_binary_hw(mask, shape) and _is_line_mask(mask)
    assert abs(acceleration_of(mask) / accel - 1) < 0.08
    lines = mask[0].numpy()
    pad = (width - 20 + 1) // 2
    assert lines[pad : pad + 20].all()  # 20 ACS lines around the centre column
    # outer lines are equispaced (spacing = the adjusted acceleration, up to rounding)
    outer = np.flatnonzero(lines[: pad - 1])
    assert np.ptp(np.diff(outer)) <= 1


def test_equispaced_center_fraction_and_offset():
    a = equispaced_mask((8, 320), 4, center_fraction=0.08, offset=0)
    assert int(a[0].sum()) - 26 > 0 and abs(acceleration_of(a) / 4 - 1) < 0.08
    assert a[0, 0] == 1  # offset 0: the first column is sampled
    b = equispaced_mask((8, 320), 4, center_fraction=0.08, offset=1)
    assert b[0, 0] == 0 and b[0, 1] == 1
    # default centre fraction 0.08
    assert torch.equal(equispaced_mask((8, 320), 4, seed=3), equispaced_mask((8, 320), 4, center_fraction=0.08, seed=3))


def test_equispaced_determinism():
    kw = dict(acs_lines=20, seed=1)
    assert torch.equal(equispaced_mask((16, 200), 6, **kw), equispaced_mask((16, 200), 6, **kw))
    offsets = {int(np.flatnonzero(equispaced_mask((4, 200), 6, acs_lines=20, seed=s)[0])[0]) for s in range(20)}
    assert len(offsets) > 1  # the offset is drawn from the seed


@pytest.mark.parametrize("accel", [4, 8])
def test_random_mask(accel):
    shape = (32, 4000)  # wide, so the realised rate is close to its expectation
    mask = random_mask(shape, accel, center_fraction=0.04, seed=0)
    assert _is_binary_hw(mask, shape) and _is_line_mask(mask)
    assert abs(acceleration_of(mask) / accel - 1) < 0.06
    n_low = round(4000 * 0.04)
    pad = (4000 - n_low + 1) // 2
    assert mask[0, pad : pad + n_low].all()
    _check_seeded(mask, lambda seed: random_mask(shape, accel, center_fraction=0.04, seed=seed))


@pytest.mark.parametrize("shape", [(64, 64), (48, 37)])
@pytest.mark.parametrize("accel", [4, 8])
def test_gaussian_mask_2d(shape, accel):
    mask = gaussian_mask_2d(shape, accel, seed=0, center_radius=3)
    assert _is_binary_hw(mask, shape) and not _is_line_mask(mask)
    assert int(mask.sum()) == round(shape[0] * shape[1] / accel)  # exact count
    _check_2d_centre_and_density(mask, radius=3)
    _check_seeded(mask, lambda seed: gaussian_mask_2d(shape, accel, seed=seed, center_radius=3))


@pytest.mark.parametrize("shape", [(64, 64), (40, 33)])
@pytest.mark.parametrize("accel", [4, 8])
def test_poisson_disc_mask_2d(shape, accel):
    mask = poisson_disc_mask_2d(shape, accel, seed=0, center_radius=3)
    assert _is_binary_hw(mask, shape)
    assert abs(acceleration_of(mask) / accel - 1) < 0.05
    _check_2d_centre_and_density(mask, radius=3)
    _check_seeded(mask, lambda seed: poisson_disc_mask_2d(shape, accel, seed=seed, center_radius=3))


def test_poisson_disc_spreads_samples():
    """Outside the centre no two samples touch (the minimum distance is > 1 pixel there)."""
    mask = poisson_disc_mask_2d((64, 64), 6, seed=0, center_radius=3).numpy().astype(bool)
    i, j = np.meshgrid(np.arange(64) - 32, np.arange(64) - 32, indexing="ij")
    outer = np.sqrt(i**2 + j**2) > 12
    m = mask & outer
    assert not (m[1:, :] & m[:-1, :]).any() and not (m[:, 1:] & m[:, :-1]).any()


def _check_2d_centre_and_density(mask, radius):
    H, W = mask.shape
    i, j = np.meshgrid(np.arange(H) - H // 2, np.arange(W) - W // 2, indexing="ij")
    d = np.sqrt(i**2 + j**2)
    m = mask.numpy()
    assert m[d <= radius].all()  # fully sampled centre disc
    inner = m[(d > radius) & (d < min(H, W) / 4)].mean()
    outer = m[d >= min(H, W) / 4].mean()
    assert inner > outer  # variable density


def test_mask_errors():
    with pytest.raises(ValueError, match="acceleration must be > 1"):
        equispaced_mask((8, 64), 1)
    with pytest.raises(ValueError, match="either acs_lines or center_fraction"):
        equispaced_mask((8, 64), 4, acs_lines=8, center_fraction=0.1)
    with pytest.raises(ValueError, match="centre lines"):
        equispaced_mask((8, 64), 8, acs_lines=20)
    with pytest.raises(ValueError, match="shape must be"):
        random_mask((64,), 4)
    with pytest.raises(ValueError, match="center_fraction must lie"):
        random_mask((8, 64), 4, center_fraction=1.5)
    with pytest.raises(ValueError, match="lower center_radius"):
        gaussian_mask_2d((16, 16), 8, center_radius=6)
    with pytest.raises(ValueError, match="lower center_radius"):
        poisson_disc_mask_2d((16, 16), 8, center_radius=6)


@pytest.mark.parametrize("fn", [gaussian_mask_2d, poisson_disc_mask_2d])
@pytest.mark.parametrize("shape,calib", [((40, 32), (8, 6)), ((33, 27), 5)])
def test_phase_encode_masks_with_calibration_box(fn, shape, calib):
    """(ky, kz) masks for 3-D MRI: fully sampled centred box, requested acceleration, denser centre."""
    mask = fn(shape, 8, seed=2, calib=calib)
    assert _is_binary_hw(mask, shape)
    assert abs(acceleration_of(mask) / 8 - 1) < 0.05
    cy, cx = (calib, calib) if isinstance(calib, int) else calib
    H, W = shape
    y0, x0 = (H - cy + 1) // 2, (W - cx + 1) // 2
    m = mask.numpy()
    assert m[y0 : y0 + cy, x0 : x0 + cx].all() and m.sum() > cy * cx
    assert not m[y0 - 1 : y0 + cy + 1, x0 - 1 : x0 + cx + 1].all()  # exactly the box, not more
    i, j = np.meshgrid(np.arange(H) - H // 2, np.arange(W) - W // 2, indexing="ij")
    d = np.sqrt(i**2 + j**2)
    assert m[(d > max(cy, cx)) & (d < min(H, W) / 3)].mean() > m[d >= min(H, W) / 3].mean()
    assert torch.equal(mask, fn(shape, 8, seed=2, calib=calib))
    with pytest.raises(ValueError, match="either center_radius or calib"):
        fn(shape, 8, center_radius=2, calib=calib)
    with pytest.raises(ValueError, match="lower calib"):
        fn(shape, 8, calib=(20, 20))
