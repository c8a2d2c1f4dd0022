"""Stacked linear physics (``deepinv.physics.stack``, ``TensorList`` measurements) through
``to_fastsd`` and ``SDIReconstructor``, against deepinv's own stacked physics."""
import pytest
import torch
from deepinv_cases import _gen, dinv, fi

from fastsd.interop.deepinv.stack import StackedOperator
from fastsd.ops.masks import equispaced_mask
from fastsd.testing import assert_adjoint, assert_close

IMG = (1, 12, 10)  # (C, H, W): odd pairing, H != W
SDI = dict(T=2, K=25, small=True, seed=0)
TensorList = dinv.utils.TensorList


def _image_parts(cls, hw=IMG[1:]):
    """Inpainting and blur of one image, from ``cls`` = deepinv.physics or fastsd's module."""
    img = (1,) + tuple(hw)
    mask = (torch.rand(img, generator=_gen(1)) > 0.4).float()
    filt = dinv.physics.functional.gaussian_blur(sigma=(0.9, 0.7))
    return cls.Inpainting(img, mask=mask), cls.BlurFFT(img, filter=filt)


def _mri_parts(cls, hw=(8, 12)):
    """Two single-coil MRI acquisitions of one complex image (different masks)."""
    m1 = equispaced_mask(tuple(hw), 2, acs_lines=2)
    m2 = (torch.rand(hw, generator=_gen(2)) > 0.6).float()
    return cls.MRI(mask=m1, img_size=tuple(hw)), cls.MRI(mask=m2, img_size=tuple(hw))


CASES = {"image": (_image_parts, (2,) + IMG), "mri": (_mri_parts, (2, 2, 8, 12))}
SDI_HW = (32, 36)  # the smallest images SDI's small U-Net takes


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("ours", [True, False], ids=["fastsd-classes", "deepinv-classes"])
def test_stacked_operator_matches_deepinvs_stack(case, ours):
    parts, shape = CASES[case]
    ref = dinv.physics.stack(*parts(dinv.physics))
    physics = dinv.physics.stack(*parts(fi if ours else dinv.physics))
    x = torch.randn(shape, generator=_gen(3))
    y = ref.A(torch.randn(shape, generator=_gen(4)))
    op, y_fs = fi.to_fastsd(physics, y)
    assert isinstance(op, StackedOperator) and y_fs.ndim == 2 and not y_fs.is_complex()
    if ours or case == "mri":  # fused parts (deepinv's own MRI becomes fastsd's fused MRI too)
        assert not any(isinstance(o, fi.PhysicsOperator) for o in op.ops)
    # forward: the parts of A x are deepinv's A_i x (in each operator's own layout)
    got = op(x)
    _, want = fi.to_fastsd(ref, ref.A(x))
    assert_close("stacked A x", got, want)
    # adjoint: deepinv's sum of the A_i^H y_i
    assert_close("stacked A^H y", op.adjoint(y_fs), ref.A_adjoint(y))
    # an isometric packing: <A x, y> = <x, A^H y>, and ||A x - y||^2 = sum_i ||A_i x - y_i||^2
    assert_adjoint("stacked operator", op, x, y_fs)
    r = ref.A(x) - y
    want_loss = sum(float(ri.double().square().sum()) for ri in r)
    assert_close("stacked fidelity loss", op.fidelity(x, y_fs)[0].sum(), want_loss, dtype=torch.float32)


@pytest.mark.parametrize("case", CASES)
def test_sdi_reconstructor_on_stacked_physics(case):
    parts, shape = CASES[case]
    physics = dinv.physics.stack(*parts(fi, SDI_HW))
    x = torch.rand((1, shape[1]) + SDI_HW, generator=_gen(5))
    y = physics(x)
    assert isinstance(y, TensorList)
    model = fi.SDIReconstructor(**SDI)
    with torch.no_grad():
        got = model(y, physics)
    assert got.shape == x.shape and torch.isfinite(got).all()
    assert model.result_.info["iterations"] == SDI["T"] * SDI["K"]
    # it fits the data: the residual over both parts is well below that of a zero image
    res = sum(float((ai - yi).square().sum()) for ai, yi in zip(physics.A(got), y))
    assert res < 0.5 * sum(float(yi.square().sum()) for yi in y)
    # deepinv's own stacked classes (unfused image parts) run too. (The two results are not
    # compared: 50 steps from noise amplify float32 rounding differences of A, A^H by ~1e6.)
    ref = fi.SDIReconstructor(**SDI)(y, dinv.physics.stack(*parts(dinv.physics, SDI_HW)))
    assert ref.shape == x.shape and torch.isfinite(ref).all()


def test_stacked_errors():
    physics = dinv.physics.stack(*_image_parts(fi))
    x = torch.rand((1,) + IMG, generator=_gen(6))
    y = physics(x)
    with pytest.raises(ValueError, match="TensorList of 2 measurements"):
        fi.to_fastsd(physics, y[0])
    with pytest.raises(ValueError, match="TensorList of 2 measurements"):
        fi.to_fastsd(physics, TensorList([y[0]]))
    with pytest.warns(DeprecationWarning):
        mean = dinv.physics.StackedLinearPhysics(list(_image_parts(fi)), reduction="mean")
    with pytest.raises(ValueError, match="reduction='sum'"):
        fi.to_fastsd(mean, y)
    op, y_fs = fi.to_fastsd(physics, y)
    with pytest.raises(ValueError, match="stacked measurement"):
        op.check_measurement(y_fs[:, :-1])
