"""``fastsd.solve`` on awkward input, for every solver: a ``y`` that requires grad, an empty batch,
no operator, and ``dtype`` either honoured (result in that precision) or rejected by name."""
import pytest
import torch

import fastsd
from fastsd.ops import MRI, equispaced_mask
from fastsd.ops.image import Inpainting, random_pixel_mask
from fastsd.sanity import ResultError
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
    assert torch.equal(x, plain)


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


# -- options the README promises a ValueError for (issue: AssertionError / AttributeError / TypeError) --

BAD_OPTIONS = [
    (dict(seed=None), "seed must be an integer in"),
    (dict(seed=2**70), "seed must be an integer in"),
    (dict(seed=-1), "seed must be an integer in"),
    (dict(seed=1.5), "seed must be an integer in"),
    (dict(dtype="float32"), "dtype must be a torch.dtype .* got 'float32' of type str"),
    (dict(device="meta"), "device='meta' holds no data"),
    (dict(device="gpu7"), "device must be a torch.device or a name"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("options, message", BAD_OPTIONS, ids=lambda v: str(v)[:20])
def test_bad_common_options_raise_value_error(method, options, message):
    op, y = _inpainting()
    with pytest.raises(ValueError, match=message):
        fastsd.solve(y, op, method, **{**OPTIONS[method], **options})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_without_a_gpu_is_a_value_error(method):
    op, y = _inpainting()
    with pytest.raises(ValueError, match="no CUDA device is available"):
        fastsd.solve(y, op, method, device="cuda", **OPTIONS[method])


def test_sdi_size_options_and_x_true_are_checked():
    op, y = _mri(32)
    for name in ("width", "depth", "T", "K"):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer, got 0"):
            fastsd.solve(y, op, "sdi", **{**OPTIONS["sdi"], name: 0})
    with pytest.raises(ValueError, match="T must be at most"):
        fastsd.solve(y, op, "sdi", **{**OPTIONS["sdi"], "T": 10**12})
    with pytest.raises(ValueError, match=r"T x K = 5000 x 5000 steps exceeds"):
        fastsd.solve(y, op, "sdi", **{**OPTIONS["sdi"], "T": 5000, "K": 5000})
    with pytest.raises(ValueError, match="x_true must be a torch.Tensor, got ndarray"):
        fastsd.solve(y, op, "sdi", x_true=op.adjoint(y).numpy(), **OPTIONS["sdi"])


@pytest.mark.parametrize("small, need", [(True, 32), (False, 64)])
def test_images_below_the_unets_minimum_are_refused_by_size(small, need):
    op, y = _mri(need // 2)
    with pytest.raises(ValueError, match=f"images of {need // 2}x{need // 2} are smaller than the U-Net's minimum "
                                         f"of {need} a side"):
        fastsd.solve(y, op, "sdi", small=small, T=1, K=1)


def test_a_meta_call_does_not_poison_later_solves():
    """A device='meta' call used to move the operator (in place) onto the meta device, so every later
    solve with it failed; it is now refused before the operator is touched."""
    op, y = _mri()
    before = fastsd.solve(y, op, "sdi", seed=0, **OPTIONS["sdi"]).x
    with pytest.raises(ValueError, match="meta"):
        fastsd.solve(y, op, "sdi", device="meta", **OPTIONS["sdi"])
    assert op.mask.device.type == "cpu"
    assert torch.equal(fastsd.solve(y, op, "sdi", seed=0, **OPTIONS["sdi"]).x, before)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("make", [_mri, _inpainting], ids=["mri", "inpainting"])
def test_nothing_observed_is_refused(method, make):
    """A mask with no samples or all-zero k-space gives y = 0: nothing to reconstruct from."""
    op, y = make()
    with pytest.raises(ValueError, match="y is all zeros: nothing was observed"):
        fastsd.solve(torch.zeros_like(y), op, method, **OPTIONS[method])


def _nan_denoiser(x, sigma):
    return x * float("nan")  # differentiable (DPS and DMPlug back-propagate through it)


@pytest.mark.parametrize("method", ["ddgm", "dps", "projdiff", "dmplug", "unfolding"])
def test_a_denoiser_returning_nan_is_an_error_not_a_result(method):
    op, y = _inpainting()
    with pytest.raises(ValueError, match="non-finite") as err:
        fastsd.solve(y, op, method, **{**OPTIONS[method], "denoiser": _nan_denoiser})
    if isinstance(err.value, ResultError):  # caught at the end: the result travels with the error
        assert err.value.result is not None and torch.isnan(err.value.result.x).all()
