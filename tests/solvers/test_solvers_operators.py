"""Every seed solver on every operator: tiny shapes, few iterations.

Checks that each solver reaches through the operator protocol of MRI (single- and multi-coil),
inpainting, blur, super-resolution, denoising and dense matrices: the output has the operator's
image shape, dtype and device and is finite, the same seed reproduces the result, and (for the
stochastic solvers) another seed changes it. On CUDA the DIP/DMPlug/unfolding runs go through
CUDA-graph capture (more iterations than the warm-up steps).
"""
import pytest
import torch

import fastsd
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.image import Blur, Denoise, Downsample, Inpainting, gaussian_kernel, random_pixel_mask
from fastsd.ops.masks import equispaced_mask
from fastsd.ops.matrix import MatrixOp, compressed_sensing_matrix
from fastsd.ops.mri import MRI
from fastsd.priors import GaussianPriorDenoiser
from fastsd.solvers.layout import to_net
from fastsd.testing import assert_close

S = 16  # image side


def _operators():
    mask = equispaced_mask((S, S), 2, acs_lines=4, seed=0)
    return {
        "mri": (lambda: MRI(mask), (2, 2, S, S)),
        "mri_multicoil": (lambda: MRI(mask, birdcage_maps(2, (S, S))), (2, 2, S, S)),
        "inpainting": (lambda: Inpainting(random_pixel_mask((S, S), 0.5, seed=0)), (2, 1, S, S)),
        "blur": (lambda: Blur(gaussian_kernel(1.0), (S, S)), (2, 1, S, S)),
        "sr": (lambda: Downsample(2, img_size=(S, S)), (2, 1, S, S)),
        "denoise": (lambda: Denoise(), (2, 1, S, S)),
        "matrix": (lambda: MatrixOp(compressed_sensing_matrix(12, 32, seed=0)), (2, 32)),
    }


OPERATORS = _operators()


def _prior(x_like):
    n = to_net(x_like)[0].numel()
    return GaussianPriorDenoiser(torch.zeros(n), 0.25)


NET = dict(width=8, depth=2, skip_channels=2)
# (method, options, stochastic: another seed must change the output)
SOLVERS = [
    ("dip", dict(iterations=5, input_channels=4, reg_noise_std=0.03, **NET), True),
    ("aseqdip", dict(iterations=6, **NET), True),
    ("ddgm", dict(iterations=3, inner_steps=2), True),
    ("dps", dict(steps=3), True),
    ("projdiff", dict(steps=3), True),
    ("dmplug", dict(iterations=5), True),
    ("unfolding", dict(steps=5), False),
]
NEEDS_PRIOR = {"ddgm", "dps", "projdiff", "dmplug", "unfolding"}


def _setup(name, device, dtype=torch.float32):
    make, shape = OPERATORS[name]
    op = make().to(device)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = x.to(device=device, dtype=dtype)
    with torch.no_grad():
        y = op(x)
        y = y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(4), dtype=y.dtype).to(device)
        if name.startswith("mri"):
            y = y * op.mask  # measurements only where sampled
        x_like = op.adjoint(y)
    return op, y, x_like


def _solve(method, opts, op, y, x_like, **extra):
    kw = dict(opts, **extra)
    if method in NEEDS_PRIOR:
        kw["denoiser"] = _prior(x_like)
    return fastsd.solve(y, op, method, **kw)


def _same(a, b, device, method, other=None):
    """Same seed, same result: bit-equal on CPU. On CUDA the networks' backward passes accumulate with
    atomics (SkipNet's reflect padding and bilinear upsampling), which Adam amplifies, so for the
    network-fitting solvers a rerun must only land far closer than a run with another seed."""
    if device.type == "cpu":
        assert torch.equal(a, b)
    elif method in ("dip", "aseqdip") and other is not None:
        assert (a - b).norm() < 0.4 * (a - other).norm()  # measured on an H100: up to 0.2
    else:
        assert_close(f"{method} rerun", a, b, factor=10)  # iterations amplify reordered CUDA sums


@pytest.mark.parametrize("method,opts,stochastic", SOLVERS, ids=[s[0] for s in SOLVERS])
@pytest.mark.parametrize("opname", list(OPERATORS))
def test_solver_runs_on_operator(method, opts, stochastic, opname, device):
    op, y, x_like = _setup(opname, device)
    res = _solve(method, opts, op, y, x_like, seed=0)
    x = res.x
    assert x.shape == x_like.shape and x.dtype == x_like.dtype and x.device.type == device.type
    assert torch.isfinite(x).all()
    assert res.info["method"] == method and res.history["loss"]
    again = _solve(method, opts, op, y, x_like, seed=0).x
    other = None
    if stochastic and not (method == "projdiff" and opname == "denoise"):  # noise-free ProjDiff returns y there
        other = _solve(method, opts, op, y, x_like, seed=1).x
        assert not torch.allclose(x, other)
    _same(x, again, device, method, other)


@pytest.mark.parametrize("method,opts,stochastic", SOLVERS, ids=[s[0] for s in SOLVERS])
def test_solver_honours_float64(method, opts, stochastic):
    op, y, x_like = _setup("inpainting", torch.device("cpu"), torch.float64)
    res = _solve(method, opts, op, y, x_like)
    assert res.x.dtype == torch.float64 and torch.isfinite(res.x).all()
    assert not torch.equal(res.x.float().double(), res.x)  # float64 iterates
    # dtype= sets the iterate's precision: float32 iterates, returned in the operator's float64
    low = _solve(method, opts, op, y, x_like, dtype=torch.float32).x
    assert low.dtype == torch.float64 and torch.equal(low.float().double(), low)


@pytest.mark.parametrize("method,opts,stochastic", SOLVERS, ids=[s[0] for s in SOLVERS])
def test_solver_moves_to_the_requested_device(method, opts, stochastic, device):
    """``device=`` overrides where ``y`` lives; the operator follows."""
    op, y, x_like = _setup("inpainting", torch.device("cpu"))
    res = _solve(method, opts, op, y, x_like, device=device)
    assert res.x.device.type == device.type


def test_callback_stops_every_solver_early():
    op, y, x_like = _setup("inpainting", torch.device("cpu"))
    for method, opts, _ in SOLVERS:
        seen = []

        def cb(i, state):
            assert state["x"].shape == x_like.shape and isinstance(state["loss"], float)
            seen.append(i)
            return len(seen) == 2

        res = _solve(method, opts, op, y, x_like, callback=cb)
        assert len(seen) == 2 and len(res.history["loss"]) == 2, method


def test_unknown_option_is_a_value_error():
    op, y, x_like = _setup("denoise", torch.device("cpu"))
    with pytest.raises(ValueError, match="dip"):
        fastsd.solve(y, op, "dip", no_such_option=1)
    with pytest.raises(ValueError, match="denoiser"):
        fastsd.solve(y, op, "dps", denoiser="not callable")
