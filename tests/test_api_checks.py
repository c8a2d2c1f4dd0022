"""``fastsd.solve`` on awkward input, for every solver: a ``y`` that requires grad, an empty batch,
no operator, and ``dtype`` either honoured (result in that precision) or rejected by name."""
import pytest
import torch

import fastsd
from fastsd.ops import MRI, equispaced_mask
from fastsd.ops.image import Inpainting, random_pixel_mask
from fastsd.solvers import available_solvers


def _denoiser(x, sigma):
    return x / (1 + float(sigma) ** 2)


OPTIONS = {
    "sdi": dict(T=1, K=2, small=True, width=4, depth=2),
    "dip": dict(iterations=2, depth=2, width=8),
    "aseqdip": dict(iterations=2, depth=2, width=8),
    "ddgm": dict(iterations=2, denoiser=_denoiser),
    "dps": dict(steps=2, denoiser=_denoiser),
    "projdiff": dict(steps=2, denoiser=_denoiser),
    "dmplug": dict(iterations=2, denoiser=_denoiser),
    "unfolding": dict(steps=2, denoiser=_denoiser),
    "zero-filled": {},
    "cg-sense": dict(iterations=3),
    "l1-wavelet": dict(iterations=3),
}
METHODS = available_solvers()


def test_every_solver_is_covered():
    assert sorted(OPTIONS) == METHODS


def _mri(size=16):
    x = torch.rand(1, 2, size, size, generator=torch.Generator().manual_seed(0))
    op = MRI(equispaced_mask((size, size), 4, acs_lines=2))
    return op, op(x)


def _inpainting(size=16, dtype=torch.float32):
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0), dtype=dtype)
    op = Inpainting(random_pixel_mask((size, size), 0.5, seed=0).to(dtype))
    return op, op(x)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("make", [_mri, _inpainting], ids=["mri", "inpainting"])
def test_y_that_requires_grad_is_data(method, make):
    """Before, SDI + MRI failed ('backward through the graph a second time')."""
    op, y = make()
    plain = fastsd.solve(y, op, method, seed=0, device="cpu", **OPTIONS[method]).x
    leaf = y.clone().requires_grad_(True)
    x = fastsd.solve(leaf, op, method, seed=0, device="cpu", **OPTIONS[method]).x
    assert not x.requires_grad and leaf.grad is None
    torch.testing.assert_close(x, plain, rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("make", [_mri, _inpainting], ids=["mri", "inpainting"])
def test_empty_batch_and_missing_operator_are_named(method, make):
    op, y = make()
    with pytest.raises(ValueError, match="dim 0 holds the problems and needs at least one"):
        fastsd.solve(y[:0], op, method, **OPTIONS[method])
    with pytest.raises(ValueError, match="op must be a fastsd operator .* got NoneType"):
        fastsd.solve(y, None, method, **OPTIONS[method])
    with pytest.raises(ValueError, match="y must be a torch.Tensor"):
        fastsd.solve(y.tolist(), op, method, **OPTIONS[method])


@pytest.mark.parametrize("method", METHODS)
def test_float64_is_honoured_where_the_operator_computes_in_it(method):
    op, y = _inpainting()  # float32 measurement, an operator that also computes in float64
    res = fastsd.solve(y, op, method, seed=0, device="cpu", dtype=torch.float64, **OPTIONS[method])
    assert res.x.dtype == torch.float64 and torch.isfinite(res.x).all()
    if method not in ("zero-filled", "cg-sense"):  # A^H y, A^+ y of a 0/1 mask: exact in float32 too
        assert not torch.equal(res.x.float().double(), res.x)  # computed in float64, not cast at the end


@pytest.mark.parametrize("method", METHODS)
def test_float64_is_rejected_by_name_where_the_operator_cannot(method):
    op, y = _mri()  # MRI computes in complex64 only
    with pytest.raises(ValueError, match="dtype=float64 is not supported by the MRI operator"):
        fastsd.solve(y, op, method, dtype=torch.float64, **OPTIONS[method])
