"""deepinv interop, the other direction: fastsd's solvers as a deepinv ``Reconstructor``
(:class:`fastsd.interop.deepinv.SDIReconstructor`), deepinv physics as fastsd operators
(:func:`fastsd.interop.deepinv.to_fastsd`) and a deepinv evaluation loop over fastsd's solvers.
Skipped when deepinv cannot be imported (by deepinv_cases)."""
import pytest
import torch
from deepinv_cases import _case, _gen, _x, dinv, fi

from fastsd.api import solve
from fastsd.ops.image import Inpainting as FsInpainting
from fastsd.ops.masks import equispaced_mask
from fastsd.ops.mri import MRI as FsMRI
from fastsd.ops.mri import MRI3D as FsMRI3D
from fastsd.testing import assert_close

pytestmark = pytest.mark.usefixtures("cpu_path")  # the fused path (conftest.py)

# -- Reconstructor --------------------------------------------------------------------------

SDI = dict(T=2, K=2, small=True, seed=0)


def test_reconstructor_mri_is_fastsd_solve():
    n = 32  # the small U-Net pools 4 times
    mask = equispaced_mask((n, n), 2, acs_lines=4)
    x = _x((1, 2, n, n), 18)
    physics = fi.MRI(mask=mask)
    y = physics(x)
    model = fi.SDIReconstructor(**SDI)
    assert isinstance(model, dinv.models.Reconstructor)
    with torch.no_grad():  # deepinv evaluation loops run without gradients; SDI trains inside anyway
        got = model(y, physics)
    op = FsMRI(mask)
    want = solve(physics._y_in(y), op, "sdi", **SDI).x
    assert got.shape == x.shape and torch.isfinite(got).all()
    assert_close("SDIReconstructor vs fastsd.solve", got, want, factor=0.1)  # the same computation
    assert model.result_.info["preset"] == "mri" and model.result_.info["iterations"] == 4
    # deepinv's own MRI physics becomes the same fused fastsd operator
    got2 = fi.SDIReconstructor(**SDI)(y, dinv.physics.MRI(mask=mask))
    assert_close("SDIReconstructor on deepinv's MRI vs fastsd.solve", got2, want, factor=0.1)
    op2, _ = fi.to_fastsd(dinv.physics.MultiCoilMRI(mask=mask, coil_maps=torch.ones(2, n, n, dtype=torch.complex64)),
                          torch.zeros(1, 2, 2, n, n))
    assert isinstance(op2, FsMRI) and op2.n_coils == 2


@pytest.mark.parametrize("name", ["mri3d", "multicoil3d"])
def test_to_fastsd_three_d(name):
    """deepinv's own 3D MRI physics, and fastsd's, become a fused fastsd MRI3D and its k-space."""
    ours, ref, shape = _case(name)
    y = ref.A(_x(shape, 35))
    for phys in (ours, ref):
        op, k = fi.to_fastsd(phys, y)
        assert isinstance(op, FsMRI3D)
        assert_close(f"adjoint of to_fastsd({type(phys).__module__.split('.')[0]} {type(phys).__name__})", op.adjoint(k),
                     ref.A_adjoint(y))


def test_reconstructor_generic_physics():
    shape = (1, 1, 32, 32)
    mask = (torch.rand(shape[1:], generator=_gen(19)) > 0.4).float()
    x = _x(shape, 20).abs()
    physics = dinv.physics.Inpainting(shape[1:], mask=mask)  # deepinv's class: the unfused adapter
    y = physics(x)
    op, y_fs = fi.to_fastsd(physics, y)
    assert isinstance(op, fi.PhysicsOperator) and y_fs is y
    got = fi.SDIReconstructor(preset="image", **SDI)(y, physics)
    want = solve(y, FsInpainting(mask), "sdi", preset="image", **SDI).x
    assert got.shape == shape
    assert_close("SDIReconstructor on PhysicsOperator vs fastsd.solve", got, want, factor=10)
    with pytest.raises(ValueError, match="unknown method"):
        fi.SDIReconstructor(method="nope")



# -- a deepinv evaluation loop --------------------------------------------------------------


class _Recording(fi.SDIReconstructor):
    """SDIReconstructor that keeps what deepinv's loop gave it (batches, masks) and returned."""

    def forward(self, y, physics, **kwargs):
        out = super().forward(y, physics, **kwargs)
        self.calls.append((y.detach().clone(), physics.mask.detach().clone(), out.detach().clone()))
        return out


@pytest.mark.parametrize("method, options", [("sdi", SDI), ("dip", dict(iterations=3, depth=3, width=8, seed=0))])
def test_deepinv_evaluation_loop(method, options):
    """``deepinv.test`` (deepinv's own evaluation loop) over a small dataset in batches of 2, with
    a fresh random mask per batch from deepinv's generator: every batch is solved by
    ``fastsd.solve(..., method)`` on the fused operator, as a direct call gives."""
    n, batch = 32, 2
    x = torch.stack([_x((2, n, n), 30 + i) for i in range(4)])
    loader = torch.utils.data.DataLoader(list(x), batch_size=batch)  # a dataset of images x
    gen = dinv.physics.generator.RandomMaskGenerator((n, n), acceleration=2, center_fraction=0.25, rng=_gen(0))
    physics = fi.MRI(img_size=(2, n, n))
    model = _Recording(method=method, **options)
    model.calls = []
    metrics = dinv.test(model, loader, physics, metrics=dinv.metric.PSNR(), online_measurements=True,
                        physics_generator=gen, verbose=False, show_progress_bar=False)
    assert "PSNR" in metrics and torch.isfinite(torch.tensor(metrics["PSNR"]))
    assert len(model.calls) == 2 and physics.fastsd_path == "fastsd"
    masks = [m for _, m, _ in model.calls]
    assert all(m.shape[0] == batch for m in masks) and not torch.equal(masks[0], masks[1])
    for y, mask, got in model.calls:
        assert got.shape == (batch, 2, n, n)
        op = FsMRI(mask[:, 0])  # per-problem masks
        want = solve(torch.view_as_complex(y.movedim(1, -1).contiguous())[:, None], op, method, **options).x
        assert_close(f"{method} in deepinv.test vs fastsd.solve", got, want, factor=0.1)
