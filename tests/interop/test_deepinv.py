"""deepinv interop, the physics: each fastsd physics against deepinv's own class with the same
parameters, against dense float64 matrices (pseudo-inverse, prox), gradcheck of the autograd
Functions, torch.func, adjointness and gradients. Skipped when deepinv cannot be imported (by deepinv_cases)."""
import pytest
import torch
from deepinv_cases import BOTH_PATHS, CASES, MRI_CASES, _blur_filter, _case, _dense, _gen, _x, dinv, fi

from fastsd.testing import TOLERANCE, assert_adjoint, assert_close

pytestmark = pytest.mark.usefixtures("cpu_path")  # the fused path (conftest.py)

# -- against deepinv ------------------------------------------------------------------------


@BOTH_PATHS
@pytest.mark.parametrize("name", CASES)
def test_matches_deepinv(name):
    ours, ref, shape = _case(name)
    x, z = _x(shape, 3), _x(shape, 4)
    y = ref.A(_x(shape, 5))
    cg = name.startswith("multicoil")  # deepinv solves the multi-coil prox by CG to tol 1e-4
    assert_close("A", ours.A(x), ref.A(x))
    assert_close("A_adjoint", ours.A_adjoint(y), ref.A_adjoint(y))
    assert_close("A_adjoint_A", ours.A_adjoint_A(x), ref.A_adjoint_A(x))
    assert_close("A_A_adjoint", ours.A_A_adjoint(y), ref.A_A_adjoint(y))
    for gamma in (0.3, 5.0):
        assert_close(f"prox_l2 (gamma {gamma})", ours.prox_l2(z, y, gamma), ref.prox_l2(z, y, gamma),
                     factor=100 if cg else 1)
    if not name.startswith(("multicoil", "sr")):  # closed forms on both sides (sr: test_deepinv_dagger.py)
        assert_close("A_dagger", ours.A_dagger(y), ref.A_dagger(y))
    # the whole measurement process (noise model included) stays deepinv's
    assert_close("physics(x)", ours(x), ref(x))


@BOTH_PATHS
@pytest.mark.parametrize("name", CASES)
def test_pinv_and_prox_match_dense_float64(name, cpu_path):
    if name.endswith("per_problem_mask"):
        pytest.skip("per-problem masks: one dense matrix per problem (covered by test_matches_deepinv)")
    ours, ref, shape = _case(name)
    A = _dense(ref, shape)  # (m, n), from deepinv's implementation
    B = shape[0]
    y = ref.A(_x(shape, 5))
    yv = y.reshape(B, -1).double()
    # truncated pseudo-inverse, singular values below 1e-3 * max dropped: fastsd's relative rule
    # (an option of BlurFFT and Downsampling; their default is deepinv's, tested in test_deepinv_dagger.py)
    relative = name == "blur" or name.startswith("sr")
    if relative:
        ours.pinv_threshold = 1e-3
    pinv = torch.linalg.pinv(A, rtol=1e-3 if relative else 1e-10)
    want = (pinv @ yv.T).T.reshape(shape)
    iters = 100 if name.startswith("multicoil") else None  # CG on the normal equations (well conditioned)
    assert_close("A_dagger vs dense pinv", ours.A_dagger(y, max_iter=iters), want, factor=2)
    z, gamma = _x(shape, 4), 0.7
    zv = z.reshape(B, -1).double()
    lhs = torch.eye(A.shape[1], dtype=torch.float64) + gamma * A.T @ A
    want = torch.linalg.solve(lhs, (zv + gamma * (A.T @ yv.T).T).T).T.reshape(shape)
    # the direct multi-coil prox is deepinv's own CG, which stops at its tolerance 1e-4
    cg_tol = name.startswith("multicoil") and cpu_path == "direct"
    assert_close("prox_l2 vs dense solve", ours.prox_l2(z, y, gamma), want, factor=30 if cg_tol else 2)


@BOTH_PATHS
@pytest.mark.parametrize("name", CASES)
def test_adjointness_and_torch_func_vjp(name):
    ours, ref, shape = _case(name)
    x = _x(shape, 6)
    v = torch.randn(ref.A(x).shape, generator=_gen(7))
    assert_adjoint(name, fi.PhysicsOperator(ours), x, v, factor=0.1)  # A and A_adjoint, per problem
    assert float(ours.adjointness_test(x, num_samples=shape[0])) < TOLERANCE[torch.float32]  # deepinv's own check
    # deepinv computes vector-Jacobian products with torch.func: they must give A^H
    _, vjp = torch.func.vjp(ours.A, x)
    assert_close("vjp of A", vjp(v)[0], ours.A_adjoint(v), factor=0.1)
    _, vjp = torch.func.vjp(ours.A_adjoint, v)
    assert_close("vjp of A_adjoint", vjp(x)[0], ours.A(x), factor=0.1)
    # and the gradient of the data fidelity is 2 A^H (A x - y)
    y = ref.A(_x(shape, 8))
    g = torch.func.grad(lambda t: (ours.A(t) - y).square().sum())(x)
    assert_close("grad of ||A x - y||^2", g, 2 * ref.A_adjoint(ref.A(x) - y))


def _tiny_float64(name):
    """The image operators on one-channel 8x8 float64 images (finite differences stay cheap;
    16x16 for fastsd's 19-tap bicubic filter, too large for deepinv's circular padding at 8x8)."""
    img = (1, 16, 16) if name == "sr_bicubic4" else (1, 8, 8)
    if name == "inpainting":
        return fi.Inpainting(img, mask=(torch.rand(img, generator=_gen(2)) > 0.5).double())
    if name == "blur":
        return fi.BlurFFT(img, filter=_blur_filter().double())
    if name in ("sr_avg4", "sr_bicubic4"):
        return fi.Downsampling(img, filter=fi.deepinv_downsampling_filter(name[3:-1], 4, torch.float64), factor=4)
    filt = dinv.physics.Downsampling(img, filter=name[3:-1], factor=int(name[-1])).filter
    return fi.Downsampling(img, filter=filt.double(), factor=int(name[-1]))


@pytest.mark.parametrize("name", CASES)
def test_gradcheck_functions(name):
    """gradcheck of the fused autograd Functions behind A, A_adjoint, A_adjoint_A and prox_l2 (in
    z and y) in float64. The MRI ops compute in float32 (float64 MRI data takes deepinv's path,
    so the Functions are called directly), so their finite differences take a larger step and
    tolerance (the maps are linear, so the step adds no truncation error)."""
    mri = name in MRI_CASES
    if mri:
        ours, _, shape = _case(name)
        kw = dict(eps=1e-2, atol=1e-4, rtol=1e-3)
    else:
        ours, kw = _tiny_float64(name), {}
        shape = (1, 1, 16, 16) if name == "sr_bicubic4" else (1, 1, 8, 8)
    op = ours.fastsd_op
    x = _x(shape, 9, torch.float64).requires_grad_()
    y = ours.A(x.detach().float()).double().normal_(generator=_gen(10)).requires_grad_()
    if not mri:  # the float64 image operators run fused
        ours.A(x)
        assert ours.fastsd_path == "fastsd"
    assert torch.autograd.gradcheck(lambda t: fi._Linear.apply(t, ours, op, "forward"), (x,), **kw)
    assert torch.autograd.gradcheck(lambda t: fi._Linear.apply(t, ours, op, "adjoint"), (y,), **kw)
    assert torch.autograd.gradcheck(lambda t: fi._Linear.apply(t, ours, op, "normal"), (x,), **kw)
    if not name.startswith("multicoil"):  # the CG prox is checked against dense matrices instead
        assert torch.autograd.gradcheck(lambda z, t: fi._Prox.apply(z, t, 0.6, ours, op), (x, y), **kw)
    if not mri:  # backward runs the adjoint Function, itself differentiable
        assert torch.autograd.gradgradcheck(lambda t: fi._Linear.apply(t, ours, op, "forward"), (x,))


@pytest.mark.parametrize("name", ["multicoil", "multicoil3d"])
def test_prox_backward_multicoil_matches_dense(name):
    ours, ref, shape = _case(name)
    A = _dense(ref, shape)
    z = _x(shape, 11).requires_grad_()
    y = ref.A(_x(shape, 12)).requires_grad_()
    gamma = 0.7
    out = ours.prox_l2(z, y, gamma)
    g = _x(shape, 13)
    gz, gy = torch.autograd.grad(out, (z, y), g)
    P = torch.linalg.inv(torch.eye(A.shape[1], dtype=torch.float64) + gamma * A.T @ A)
    gv = g.reshape(shape[0], -1).double()
    assert_close("prox_l2 backward to z", gz, (P @ gv.T).T.reshape(shape), factor=10)
    assert_close("prox_l2 backward to y", gy, (gamma * A @ P @ gv.T).T.reshape(y.shape), factor=10)


@pytest.mark.parametrize("name", MRI_CASES)
def test_gradients_to_x_match_deepinv(name):
    """Gradients through A, A_adjoint, A_adjoint_A and prox_l2 (to the image, the measurement
    and z) equal those of deepinv's own autograd graph; 2D and 3D run the fused path."""
    ours, ref, shape = _case(name)
    y0 = ref.A(_x(shape, 26))
    w_x, w_y = _x(shape, 27), torch.randn(y0.shape, generator=_gen(28))

    def loss(phys, x, y, z):
        return ((phys.A(x) * w_y).sum() + (phys.A_adjoint(y) * w_x).sum() + (phys.A_adjoint_A(x) * w_x).sum()
                + (phys.prox_l2(z, y, 0.6) * w_x).sum())

    grads = []
    for phys in (ours, ref):
        inputs = (_x(shape, 29).requires_grad_(), y0.clone().requires_grad_(), _x(shape, 30).requires_grad_())
        grads.append(torch.autograd.grad(loss(phys, *inputs), inputs))
    assert ours.fastsd_path == "fastsd"
    factor = 100 if name.startswith("multicoil") else 1  # deepinv's CG prox stops at tol 1e-4
    for wrt, got, want in zip(("x", "y", "z"), *grads):
        assert_close(f"gradient to {wrt}", got, want, factor=factor)


def test_per_problem_gamma():
    for name in ("mri", "multicoil", "mri3d", "multicoil3d", "inpainting", "blur", "sr_avg4"):
        ours, ref, shape = _case(name)
        z, y = _x(shape, 4), ref.A(_x(shape, 5))
        gamma = torch.tensor([0.3, 4.0])
        got = ours.prox_l2(z, y, gamma)
        for b in range(2):
            want = ours.prox_l2(z[b : b + 1], y[b : b + 1], float(gamma[b]))
            assert_close(f"{name}: prox_l2 of problem {b}", got[b : b + 1], want)
    with pytest.raises(ValueError, match="one value per problem"):
        ours.prox_l2(z, y, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        ours.prox_l2(z, y, -1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("name", CASES)
def test_cuda_matches_deepinv(name):
    ours, ref, shape = _case(name)
    ours, ref = ours.to("cuda"), ref.to("cuda")
    x, z = _x(shape, 3).cuda(), _x(shape, 4).cuda()
    y = ref.A(_x(shape, 5).cuda())
    assert_close("A", ours.A(x), ref.A(x))
    assert_close("A_adjoint", ours.A_adjoint(y), ref.A_adjoint(y))
    assert_close("A_adjoint_A", ours.A_adjoint_A(x), ref.A_adjoint_A(x))
    assert_close("prox_l2", ours.prox_l2(z, y, 0.5), ref.prox_l2(z, y, 0.5),
                 factor=100 if name.startswith("multicoil") else 1)
