"""Dense matrix operators (1-D compressed sensing, radar steering) against independent references:
the matrix rebuilt by applying the operator to unit vectors, numpy linear algebra in float64, and
autograd through ``forward``. Every variant (real CS matrix, complex radar matrix with a complex or
a real unknown, tall real/complex matrices) runs every check."""
import math

import numpy as np
import pytest
import torch

from fastsd.ops.matrix import MatrixOp, compressed_sensing_matrix, radar_steering_matrix
from fastsd.testing import assert_adjoint, assert_close

ANGLES = torch.linspace(-60, 60, 61)


def _tall(dtype):
    return torch.randn(20, 12, generator=torch.Generator().manual_seed(9), dtype=dtype)


VARIANTS = {
    "cs": lambda: MatrixOp(compressed_sensing_matrix(35, 128)),  # wide, real, surjective
    "radar": lambda: MatrixOp(radar_steering_matrix(8, ANGLES)),  # wide, complex unknown
    "radar-real": lambda: MatrixOp(radar_steering_matrix(8, ANGLES), real_input=True),  # R^61 -> C^8
    "tall-real": lambda: MatrixOp(_tall(torch.float64)),  # injective, not onto
    "tall-complex": lambda: MatrixOp(_tall(torch.complex128)),
}
NAMES = list(VARIANTS)


def _x_dtype(op, real=torch.float32):
    return real if op.real_input else {torch.float32: torch.complex64, torch.float64: torch.complex128}[real]


def _y_dtype(op, real=torch.float32):
    return {torch.float32: torch.complex64, torch.float64: torch.complex128}[real] if op.matrix.is_complex() else real


def _rand(shape, dtype, gen):
    if dtype.is_complex:
        return torch.randn(shape, generator=gen, dtype=dtype)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


def _data(op, B=3, real=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    m, n = op.shape
    return _rand((B, n), _x_dtype(op, real), gen), _rand((B, m), _y_dtype(op, real), gen)


def _dense(op):
    """(rows, n) float64/complex128 matrix of ``op`` over the unknown's field, from unit vectors:
    for a real unknown with complex measurements the rows are [Re; Im] of A."""
    n = op.shape[1]
    cols = op(torch.eye(n, dtype=_x_dtype(op, torch.float64)))  # (n, m): row j = A e_j
    if op.real_input and cols.is_complex():
        cols = torch.cat([cols.real, cols.imag], 1)
    return cols.T


def _stack(op, y):
    """A measurement in the coordinates of :func:`_dense` (real and imaginary parts stacked)."""
    return torch.cat([y.real, y.imag], 1) if op.real_input and y.is_complex() else y


# -- the matrices -------------------------------------------------------------------------------


def test_compressed_sensing_matrix_shape_and_scaling():
    """DESIGN.md's 1-D CS problem: m = 35 measurements of n = 128 samples, i.i.d. N(0, 1/m) entries
    (as the paper's code), so columns have unit expected norm."""
    A = compressed_sensing_matrix()
    assert A.shape == (35, 128) and A.dtype == torch.float32
    assert torch.equal(A, compressed_sensing_matrix(35, 128, seed=0))
    assert not torch.equal(A, compressed_sensing_matrix(35, 128, seed=1))
    # 4480 samples: the variance estimate has a relative std of sqrt(2/4480) ~ 2 %
    a = A.double()
    assert abs(float(a.mean())) < 4 / math.sqrt(A.numel() * 35)
    assert abs(float(a.var()) * 35 - 1) < 0.1
    assert abs(float(a.square().sum(0).mean()) - 1) < 0.1
    assert torch.linalg.matrix_rank(a) == 35  # full row rank: A is onto R^35
    assert compressed_sensing_matrix(7, 16, seed=3).shape == (7, 16)
    with pytest.raises(ValueError, match="m and n"):
        compressed_sensing_matrix(0, 128)


def test_radar_steering_matrix_is_complex():
    angles = [-50.0, -10.0, 0.0, 25.0, 70.0]
    A = radar_steering_matrix(6, angles, spacing=0.5)
    assert A.dtype == torch.complex64 and A.shape == (6, 5) and A.is_complex()
    k = np.arange(6)[:, None]
    ref = np.exp(-2j * np.pi * 0.5 * k * np.sin(np.deg2rad(angles))[None, :])
    assert_close("steering", A, torch.from_numpy(ref), factor=0.1)
    assert_close("|steering|", A.abs(), torch.ones(6, 5))
    assert_close("broadside", A[:, 2], torch.ones(6, dtype=torch.complex64))  # in phase
    assert A.imag.abs().max() > 0.5
    assert torch.equal(radar_steering_matrix(6, torch.tensor(angles)), A)
    with pytest.raises(ValueError, match="n_antennas"):
        radar_steering_matrix(0, angles)
    with pytest.raises(ValueError, match="spacing"):
        radar_steering_matrix(4, angles, spacing=0.0)
    with pytest.raises(ValueError, match="angles_deg"):
        radar_steering_matrix(4, [0.0, float("nan")])
    with pytest.raises(ValueError, match="angles_deg"):
        radar_steering_matrix(4, [])


# -- adjointness, dense matrix, norm ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_adjoint_fp32(name, device):
    op = VARIANTS[name]().to(device)
    x, y = _data(op, seed=1)
    x, y = x.to(device), y.to(device)
    Ax, Ahy = op(x), op.adjoint(y)
    assert Ax.dtype == _y_dtype(op) and Ahy.dtype == _x_dtype(op)
    assert_adjoint(name, op, x, y)


@pytest.mark.parametrize("name", NAMES)
def test_dense_matrix_and_norm(name):
    op = VARIANTS[name]()
    M = _dense(op)
    A = op.matrix.to(torch.complex128 if op.matrix.is_complex() else torch.float64)
    ref = torch.cat([A.real, A.imag]) if op.real_input and A.is_complex() else A
    assert_close("dense forward", M, ref)  # the stored matrix
    # the adjoint is the conjugate transpose: row k of adjoint(I) is column k of Aᴴ, i.e. conj(M[k])
    E = torch.eye(op.shape[0], dtype=_y_dtype(op, torch.float64))
    At = op.adjoint(E)
    if op.real_input and E.is_complex():  # real unknown: Re(Aᴴ e_k) = Re A[k], Re(Aᴴ i e_k) = Im A[k]
        At = torch.cat([At, op.adjoint(1j * E)])
    assert_close("dense adjoint", At, M.conj())
    # normal against the dense Gram matrix
    x, _ = _data(op, real=torch.float64)
    assert_close("normal", op.normal(x), x @ (M.mH @ M).T)
    # power iteration against the largest singular value
    sigma = float(torch.linalg.matrix_norm(M, ord=2))
    x_like = torch.zeros(1, op.shape[1], dtype=_x_dtype(op, torch.float64))
    assert_close("norm", float(op.norm(x_like, iters=300)), sigma, factor=1e5)  # power iteration converges linearly
    x32 = torch.zeros(2, op.shape[1], dtype=_x_dtype(op))
    est = op.norm(x32, iters=300)
    assert est.shape == (2,)
    assert_close("norm fp32", est, torch.full((2,), sigma), dtype=torch.float32)


# -- fidelity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_fidelity_matches_autograd(name, device):
    op = VARIANTS[name]().to(device)
    x, y = (t.to(device) for t in _data(op, seed=2))
    xr = x.detach().to(_x_dtype(op, torch.float64)).requires_grad_(True)
    ref = (op(xr) - y.to(_y_dtype(op, torch.float64))).abs().square().sum(1)
    ref.sum().backward()
    loss, grad = op.fidelity(x, y)
    assert loss.shape == (3,) and not loss.is_complex()
    assert grad.shape == x.shape and grad.dtype == x.dtype
    assert_close("loss", loss, ref.detach())
    assert_close("grad", grad, xr.grad)
    xl = x.clone().requires_grad_(True)
    w = torch.tensor([1.0, 2.0, 0.5], device=device)
    out = op.fidelity_loss(xl, y)
    assert_close("fidelity_loss", out.detach(), ref.detach())
    (out * w).sum().backward()
    assert_close("fidelity_loss grad", xl.grad, xr.grad * w[:, None].double())
    # float64 data
    loss64, grad64 = op.fidelity(x.to(xr.dtype), y.to(_y_dtype(op, torch.float64)))
    assert_close("loss fp64", loss64, ref.detach())
    assert_close("grad fp64", grad64, xr.grad)


# -- prox, pinv, project ------------------------------------------------------------------------


@pytest.mark.parametrize("real", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("name", NAMES)
def test_prox_optimality(name, real):
    """p = prox_l2(z, y, γ) solves (p − z) + γ Aᴴ(A p − y) = 0, for float and per-problem γ."""
    op = VARIANTS[name]()
    z, y = _data(op, real=real, seed=3)
    for gamma in (0.7, 3.0, torch.tensor([0.1, 1.0, 10.0])):
        p = op.prox_l2(z, y, gamma)
        assert p.dtype == z.dtype and p.shape == z.shape
        g = gamma if isinstance(gamma, float) else gamma[:, None].to(real)
        # (I + γ AᴴA) p = z + γ Aᴴy
        assert_close("prox_l2 optimality", p + g * op.adjoint(op(p)), z + g * op.adjoint(y))
    assert torch.equal(op.prox_l2(z, y, 0.0), z)


def test_prox_cache_follows_matrix_changes():
    op = MatrixOp(compressed_sensing_matrix(6, 10).double())
    z, y = _data(op, real=torch.float64, seed=4)
    p1 = op.prox_l2(z, y, 0.5)
    with torch.no_grad():
        op.matrix.mul_(2.0)
    p2 = op.prox_l2(z, y, 0.5)
    assert_close("prox_l2 optimality", p2 + 0.5 * op.adjoint(op(p2)), z + 0.5 * op.adjoint(y))
    assert not torch.allclose(p1, p2)


@pytest.mark.parametrize("name", NAMES)
def test_pinv_and_project_match_numpy(name):
    """pinv is the minimum-norm least-squares solution, project is x − A^†(A x − y)."""
    op = VARIANTS[name]()
    x, y = _data(op, real=torch.float64, seed=5)
    P = torch.from_numpy(np.linalg.pinv(_dense(op).numpy()))
    # numpy's SVD-based pinv and the op's solve round differently: conditioning of A
    assert_close("pinv", op.pinv(y), _stack(op, y) @ P.T, factor=10)
    ref = x - (_stack(op, op(x)) - _stack(op, y)) @ P.T
    assert_close("project", op.project(x, y), ref, factor=10)
    assert torch.equal(op.A_dagger(y), op.pinv(y))


@pytest.mark.parametrize("name", NAMES)
def test_project_is_consistent(name):
    """For y = A x0: A p = y, p is a fixed point and x − p ⟂ x0 − p (orthogonal projection onto
    {A v = y})."""
    op = VARIANTS[name]()
    x, _ = _data(op, real=torch.float64, seed=6)
    x0, _ = _data(op, real=torch.float64, seed=7)
    y = op(x0)
    p = op.project(x, y)
    assert_close("A project", op(p), y, factor=10)  # conditioning of A
    assert_close("project twice", op.project(p, y), p, factor=10)
    # x − p ⟂ p − x0: Pythagoras
    assert_close("orthogonality", (x - p).norm(dim=1) ** 2 + (p - x0).norm(dim=1) ** 2, (x - x0).norm(dim=1) ** 2,
                 factor=10)


@pytest.mark.parametrize("name", ["cs", "radar"])
def test_surjective_pinv_and_project_hit_any_y(name):
    op = VARIANTS[name]()
    x, y = _data(op, real=torch.float64, seed=8)
    assert_close("A pinv", op(op.pinv(y)), y, factor=10)  # conditioning of A
    assert_close("A project", op(op.project(x, y)), y, factor=10)
    x32, y32 = _data(op, seed=8)
    assert_close("A project fp32", op(op.project(x32, y32)), y32, factor=10)  # fp32: cond(A) ~ a few units


# -- dtypes and devices -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_dtype_and_device_honoured(name, device):
    op = VARIANTS[name]().to(device)
    for real in (torch.float32, torch.float64):
        x, y = (t.to(device) for t in _data(op, real=real))
        assert op(x).dtype == _y_dtype(op, real) and op(x).device == x.device
        for out in (op.adjoint(y), op.normal(x), op.prox_l2(x, y, 0.5), op.pinv(y), op.project(x, y),
                    op.fidelity(x, y)[1]):
            assert out.dtype == x.dtype and out.device == x.device and out.shape == x.shape


# -- bad inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs(name):
    op = VARIANTS[name]()
    m, n = op.shape
    x, y = _data(op)
    with pytest.raises(ValueError, match=rf"expected \(B, {n}\)"):
        op(x[:, :-1])
    with pytest.raises(ValueError, match=rf"expected \(B, {m}\)"):
        op.adjoint(torch.cat([y, y[:, :1]], 1))
    with pytest.raises(ValueError, match="dimensions"):
        op(x[0])
    with pytest.raises(ValueError, match="dimensions"):
        op(x[None])
    with pytest.raises(ValueError, match="dtype"):
        op(torch.ones(3, n, dtype=torch.int32))
    with pytest.raises(ValueError, match="dtype"):
        op(x.real.half() if x.is_complex() else x.half())
    with pytest.raises(ValueError, match="dtype"):  # the wrong field for y
        op.adjoint(y.real if y.is_complex() else y.to(torch.complex64))
    with pytest.raises(ValueError, match="on meta"):
        op(x.to("meta"))
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        op(x.numpy())
    for bad_value in (float("nan"), float("inf"), complex(0, float("nan")) if y.is_complex() else float("-inf")):
        bad = y.clone()
        bad[1, 2] = bad_value
        for fn in (op.fidelity, lambda a, b: op.prox_l2(a, b, 1.0), op.project):
            with pytest.raises(ValueError, match="non-finite"):
                fn(x, bad)
        with pytest.raises(ValueError, match="non-finite"):
            op.pinv(bad)
    for fn in (op.fidelity, lambda a, b: op.prox_l2(a, b, 1.0), op.project):
        with pytest.raises(ValueError, match="batch size"):
            fn(x[:2], y)
        with pytest.raises(ValueError, match="precision"):
            fn(x, y.to(_y_dtype(op, torch.float64)))
    with pytest.raises(ValueError, match="gamma"):
        op.prox_l2(x, y, -1.0)
    with pytest.raises(ValueError, match="gamma"):
        op.prox_l2(x, y, torch.ones(2))


def test_complex_matrix_needs_complex_unknown():
    op = MatrixOp(radar_steering_matrix(4, [0.0, 30.0]))
    with pytest.raises(ValueError, match="real_input=True"):
        op(torch.randn(1, 2))
    with pytest.raises(ValueError, match="dtype"):  # a real matrix takes no complex unknown
        MatrixOp(torch.randn(3, 2))(torch.randn(1, 2, dtype=torch.complex64))


def test_bad_matrix():
    with pytest.raises(ValueError, match="dimensions"):
        MatrixOp(torch.randn(3))
    with pytest.raises(ValueError, match="dtype"):
        MatrixOp(torch.ones(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="non-finite"):
        MatrixOp(torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(ValueError, match="torch.Tensor"):
        MatrixOp(np.ones((3, 2)))
