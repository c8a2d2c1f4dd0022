"""Image operators (Inpainting, Denoise, Blur, Downsample) against independent references:
explicit dense matrices built from unit vectors, direct circular convolution by rolls, torch
pooling / antialiased resizing, numpy FFTs, and autograd through ``forward`` in float64. Every
operator variant (mask kind, blur kernel, downsampling factor and filter) runs every check."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastsd.ops.base import batch_dot
from fastsd.ops.image import (
    Blur,
    Denoise,
    Downsample,
    Inpainting,
    anisotropic_gaussian_kernel,
    bicubic_kernel,
    box_mask,
    gaussian_kernel,
    motion_kernel,
    random_pixel_mask,
)
from fastsd.testing import TOLERANCE, assert_adjoint, assert_close

# (name, builder(H, W, C) -> operator, image sizes); Downsample sizes are multiples of the factor
KERNELS = {
    "gaussian": lambda: gaussian_kernel(1.2),
    "anisotropic": lambda: anisotropic_gaussian_kernel(2.0, 0.7, 30.0),
    "motion": lambda: motion_kernel(4.5, 110.0),
}
MASKS = {
    "pixel_hw": lambda C, H, W: random_pixel_mask((H, W), 0.4, seed=1),
    "pixel_chw": lambda C, H, W: random_pixel_mask((C, H, W), 0.6, seed=2),
    "box_bchw": lambda C, H, W: box_mask((2, C, H, W), (2, 3)),
}
# each builder takes (C, H, W, dtype): dtype is the precision of the operator's buffers


def _cases():
    for name, mk in MASKS.items():
        yield f"inpaint-{name}", (lambda mk: lambda C, H, W, dt: Inpainting(mk(C, H, W)))(mk), [(7, 9), (5, 6)]
    yield "denoise", lambda C, H, W, dt: Denoise(), [(7, 9)]
    for name, k in KERNELS.items():
        yield f"blur-{name}", (lambda k: lambda C, H, W, dt: Blur(k().to(dt), (H, W)))(k), [(7, 9), (12, 10), (5, 4)]
    for filt in ("avg", "bicubic"):
        for f in (2, 4, 8, 16):
            sizes = [(2 * f, 3 * f), (5 * f, f)] if f <= 4 else [(2 * f, f)]
            yield f"down{f}-{filt}", (lambda f, filt: lambda C, H, W, dt: Downsample(f, filt, (H, W), dtype=dt))(f, filt), sizes


CASES = [(name, build, size) for name, build, sizes in _cases() for size in sizes]
IDS = [f"{name}-{size[0]}x{size[1]}" for name, _, size in CASES]


def _op(build, size, C=2, device="cpu", dtype=torch.float32):
    return build(C, *size, dtype).to(device=device, dtype=dtype)


def _measurement_like(op, x):
    with torch.no_grad():
        return torch.randn_like(op(x))


def _dense(op, shape, dtype=torch.float64):
    """Matrix of ``op`` on images of shape (C, H, W), built column by column from unit vectors."""
    n = math.prod(shape)
    cols = op(torch.eye(n, dtype=dtype).reshape(n, *shape))
    return cols.reshape(n, -1).T


# -- adjointness and dense matrices -------------------------------------------------------------


@pytest.mark.parametrize("name,build,size", CASES, ids=IDS)
def test_adjoint_fp32(name, build, size, device):
    op = _op(build, size, device=device)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, *size, generator=gen).to(device)
    assert_adjoint(name, op, x, _measurement_like(op, x))


FIRST = {}
for _c in CASES:
    FIRST.setdefault(_c[0], _c)
FIRST = list(FIRST.values())  # one size per operator variant
FIRST_IDS = [c[0] for c in FIRST]


@pytest.mark.parametrize("name,build,size", CASES, ids=IDS)
def test_dense_matrix(name, build, size):
    """Every method against dense linear algebra on the explicit matrix, for every variant."""
    C = 2 if size[0] * size[1] <= 130 else 1
    op = _op(build, size, C, dtype=torch.float64)
    if isinstance(op, Inpainting) and op.mask.ndim == 4:
        op = Inpainting(op.mask[:1])  # one problem's mask so a batch of unit vectors broadcasts
    shape = (C, *size)
    M = _dense(op, shape)
    n = M.shape[1]
    gen = torch.Generator().manual_seed(4)
    y = torch.randn(1, M.shape[0], generator=gen, dtype=torch.float64)
    y_img = y.reshape(_measurement_like(op, torch.zeros(1, *shape, dtype=torch.float64)).shape)
    # adjoint = transpose
    At = op.adjoint(torch.eye(M.shape[0], dtype=torch.float64).reshape(-1, *y_img.shape[1:]))
    assert_close("adjoint", At.reshape(M.shape[0], n), M)
    # normal, prox, pinv, project, norm against dense linear algebra
    x = torch.randn(1, n, generator=gen, dtype=torch.float64)
    x_img = x.reshape(1, *shape)
    assert_close("normal", op.normal(x_img).reshape(1, n), x @ (M.T @ M))
    gamma = 0.8
    prox = torch.linalg.solve(torch.eye(n, dtype=torch.float64) + gamma * M.T @ M, (x + gamma * y @ M).T).T
    assert_close("prox_l2", op.prox_l2(x_img, y_img, gamma).reshape(1, n), prox, factor=100)  # a solve
    # Blur / Downsample truncate singular values below pinv_threshold * the largest, as rtol does
    P = torch.linalg.pinv(M, rtol=getattr(op, "pinv_threshold", None))
    assert_close("pinv", op.pinv(y_img).reshape(1, n), y @ P.T, factor=1e3)  # ill-conditioned solves
    assert_close("project", op.project(x_img, y_img).reshape(1, n), x - (x @ M.T - y) @ P.T, factor=1e3)
    # power iteration (default 100 steps) against the largest singular value
    assert_close("norm", float(op.norm(x_img)), float(torch.linalg.matrix_norm(M, 2)), dtype=torch.float32)


# -- forward against independent implementations ----------------------------------------------


@pytest.mark.parametrize("kname", list(KERNELS))
@pytest.mark.parametrize("size", [(9, 11), (16, 12)])
def test_blur_matches_rolled_convolution(kname, size):
    k = KERNELS[kname]().double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    kh, kw = k.shape
    ref = sum(k[i, j] * torch.roll(x, (i - kh // 2, j - kw // 2), (-2, -1)) for i in range(kh) for j in range(kw))
    assert_close("blur", Blur(k, size)(x), ref)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_downsample_avg_is_block_mean(factor):
    x = torch.randn(2, 3, 4 * factor, 2 * factor)
    assert_close("downsample", Downsample(factor, "avg", x.shape[-2:])(x), F.avg_pool2d(x, factor))


@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_bicubic_matches_antialiased_resize(factor):
    """Away from the border (where torch renormalises clipped weights) the circular bicubic
    filter equals torch's antialiased bicubic resize."""
    x = torch.randn(1, 2, 16 * factor, 12 * factor, dtype=torch.float64)
    ref = F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True, align_corners=False)
    out = Downsample(factor, "bicubic", x.shape[-2:])(x)
    assert_close("downsample", out[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], factor=1e5)  # the taps are float32


def test_bicubic_kernel_taps():
    w, d = bicubic_kernel(2)
    assert len(w) == 8
    assert_close("sum of taps", float(w.sum()), 1.0)
    assert torch.allclose(w, w.flip(0))  # symmetric about the sample position 2i + 1/2
    assert d[0] == -3 and d[-1] == 4


def test_inpainting_and_denoise_forward():
    m = random_pixel_mask((6, 7), 0.5, seed=0)
    x = torch.randn(3, 2, 6, 7)
    assert torch.equal(Inpainting(m)(x), x * m)
    assert torch.equal(Inpainting(m.bool())(x), x * m)
    assert torch.equal(Denoise()(x), x)


# -- norms ---------------------------------------------------------------------------------------


def test_norms():
    x = torch.zeros(1, 3, 8, 10, dtype=torch.float64)
    assert_close("inpainting norm", float(Inpainting(random_pixel_mask((8, 10), 0.3)).norm(x)), 1.0, dtype=torch.float32)
    assert_close("denoise norm", float(Denoise().norm(x)), 1.0, dtype=torch.float32)
    # a kernel with negative taps, so max|H| is not simply the sum of the taps
    k = torch.tensor([[0.1, -0.5, 0.2], [0.3, 1.0, -0.4], [0.0, 0.2, 0.1]], dtype=torch.float64)
    pad = np.zeros((8, 10))
    pad[:3, :3] = k.numpy()
    hmax = np.abs(np.fft.fft2(pad)).max()
    assert_close("blur norm", float(Blur(k, (8, 10)).norm(x, iters=500)), hmax, dtype=torch.float32, factor=10)  # power iteration
    for f in (2, 4):
        op = Downsample(f, "avg", (8 * f // 2, 4 * f)).double()
        xs = torch.zeros(1, 2, 8 * f // 2, 4 * f, dtype=torch.float64)
        assert_close("downsample norm", float(op.norm(xs)), 1 / f, dtype=torch.float32)


# -- closed forms against the generic solvers -------------------------------------------------


@pytest.mark.parametrize("name,build,size", FIRST, ids=FIRST_IDS)
def test_prox_optimality(name, build, size):
    """p = prox_l2(z, y, γ) solves (p − z) + γ Aᴴ(A p − y) = 0, for a float and a per-problem γ."""
    op = _op(build, size, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(2, 2, *size, generator=gen, dtype=torch.float64)
    y = _measurement_like(op, z)
    for gamma in (0.3, torch.tensor([0.1, 5.0], dtype=torch.float64)):
        p = op.prox_l2(z, y, gamma)
        g = gamma if isinstance(gamma, float) else gamma[:, None, None, None]
        assert_close("optimality", p + g * op.adjoint(op(p)), z + g * op.adjoint(y), factor=100)


@pytest.mark.parametrize("name,build,size", FIRST, ids=FIRST_IDS)
def test_project_is_consistent(name, build, size):
    """For y = A x0: A p = y, p is a fixed point, and x − p ⟂ (x0 − p) (orthogonal projection onto
    the affine set {A v = y}, checked with a consistent point the operator never saw)."""
    op = _op(build, size, dtype=torch.float64)
    if isinstance(op, Blur):
        op.pinv_threshold = 0.0
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 2, *size, generator=gen, dtype=torch.float64)
    x0 = torch.randn(2, 2, *size, generator=gen, dtype=torch.float64)
    y = op(x0)
    p = op.project(x, y)
    assert_close("A project", op(p), y, factor=1e4)  # ill-conditioned solves
    assert_close("idempotent", op.project(p, y), p, factor=1e4)
    # scaled by ‖x − x0‖, not ‖x0 − p‖, which is ~0 where A is invertible (Denoise, Blur)
    scale = (x - p).flatten(1).norm(dim=1) * (x - x0).flatten(1).norm(dim=1)
    assert float((batch_dot(x - p, x0 - p) / scale).abs().max()) <= 1e4 * TOLERANCE[torch.float64]


SURJECTIVE = [c for c in FIRST if c[0].startswith(("down", "denoise", "blur-gaussian", "blur-aniso"))]


@pytest.mark.parametrize("name,build,size", SURJECTIVE, ids=[c[0] for c in SURJECTIVE])
def test_surjective_pinv_and_project_hit_any_y(name, build, size):
    """Where A is onto, A pinv(y) = y and A project(x, y) = y for an arbitrary y."""
    op = _op(build, size, dtype=torch.float64)
    if isinstance(op, Blur):
        op.pinv_threshold = 0.0
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64)
    y = torch.randn(_measurement_like(op, x).shape, generator=gen, dtype=torch.float64)
    assert_close("A pinv", op(op.pinv(y)), y, factor=1e3)  # ill-conditioned solves
    assert_close("A project", op(op.project(x, y)), y, factor=1e3)


def test_inpainting_project_keeps_observed_pixels():
    """Not onto: A project(x, y) is the observed part m y of an arbitrary y, the rest comes from x."""
    m = random_pixel_mask((6, 7), 0.5, seed=2)
    op = Inpainting(m)
    x, y = torch.randn(2, 3, 6, 7), torch.randn(2, 3, 6, 7)
    p = op.project(x, y)
    assert torch.equal(op(p), m * y) and torch.equal(p * (1 - m), x * (1 - m))
    assert torch.equal(op(op.pinv(y)), m * y)


def test_blur_pinv_truncates_small_frequencies():
    op = Blur(gaussian_kernel(2.0).double(), (16, 16), pinv_threshold=1e-2)
    y = op(torch.randn(1, 1, 16, 16, dtype=torch.float64))
    x = op.pinv(y)
    kh = op.kernel.shape[0]
    H = np.fft.fft2(np.roll(np.pad(op.kernel.numpy(), ((0, 16 - kh), (0, 16 - kh))), (-(kh // 2),) * 2, (0, 1)))
    Y, X = np.fft.fft2(y[0, 0].numpy()), np.fft.fft2(x[0, 0].numpy())
    keep = np.abs(H) > 1e-2 * np.abs(H).max()
    assert 0 < keep.sum() < keep.size
    assert np.allclose(X[keep], Y[keep] / H[keep]) and np.allclose(X[~keep], 0)


# -- fidelity ---------------------------------------------------------------------------------


def _autograd_fidelity(op, x, y):
    """‖A x − y‖² per problem and its gradient by autograd through ``forward``, in float64."""
    xr = x.detach().double().requires_grad_(True)
    loss = (op.double()(xr) - y.double()).square().flatten(1).sum(1)
    loss.sum().backward()
    return loss.detach(), xr.grad


@pytest.mark.parametrize("name,build,size", FIRST, ids=FIRST_IDS)
def test_fidelity_matches_autograd(name, build, size, device):
    op = _op(build, size, device=device)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 2, *size, generator=gen).to(device)
    y = _measurement_like(op, x)
    ref_loss, ref_grad = _autograd_fidelity(copy.deepcopy(op), x, y)
    loss, grad = op.fidelity(x, y)
    assert loss.shape == (2,) and grad.shape == x.shape and grad.dtype == x.dtype
    assert_close("loss", loss, ref_loss, dtype=x.dtype)
    assert_close("grad", grad, ref_grad)
    # fidelity_loss: differentiable, its backward is the fused gradient scaled per problem
    xl = x.clone().requires_grad_(True)
    w = torch.tensor([1.0, 2.0], device=device)
    out = op.fidelity_loss(xl, y)
    assert_close("fidelity_loss", out.detach(), ref_loss)
    (out * w).sum().backward()
    assert_close("fidelity_loss grad", xl.grad, ref_grad * w[:, None, None, None].double())
    # float64 images (fp64 arithmetic and loss)
    loss64, grad64 = copy.deepcopy(op).double().fidelity(x.double(), y.double())
    assert loss64.dtype == grad64.dtype == torch.float64
    assert_close("loss64", loss64, ref_loss)
    assert_close("grad64", grad64, ref_grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("make", [lambda: Inpainting(box_mask((2, 6, 8), 3)), Denoise], ids=["inpaint", "denoise"])
def test_fidelity_half_precision(make, dtype, device):
    """Mask-type operators run the fused op on half-precision images (fp32 loss, grad in x's dtype)."""
    op = make().to(device)
    x = torch.randn(3, 2, 6, 8, device=device).to(dtype)
    y = torch.randn(3, 2, 6, 8, device=device).to(dtype)
    ref_loss, ref_grad = _autograd_fidelity(copy.deepcopy(op), x, y)
    loss, grad = op.fidelity(x, y)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert_close("loss", loss, ref_loss)
    assert_close("grad", grad, ref_grad)


# -- dtype and device ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_honoured(dtype, device):
    ops = [Inpainting(box_mask((6, 8), 2)), Denoise(), Blur(gaussian_kernel(1.0), (6, 8)), Downsample(2, "bicubic", (6, 8))]
    x = torch.randn(2, 3, 6, 8, dtype=dtype, device=device)
    for op in ops:
        op = op.to(device)
        y = op(x)
        assert y.dtype == dtype and y.device == x.device
        for out in (op.adjoint(y), op.prox_l2(x, y, 0.5), op.pinv(y), op.project(x, y), op.normal(x)):
            assert out.dtype == dtype and out.device == x.device and out.shape == x.shape


def test_half_precision_masks():
    op = Inpainting(random_pixel_mask((6, 8), 0.5))
    x = torch.randn(1, 1, 6, 8, dtype=torch.bfloat16)
    assert op(x).dtype == torch.bfloat16 and op.project(x, op(x)).dtype == torch.bfloat16


def test_module_to_float64_keeps_transfer_complex():
    k = anisotropic_gaussian_kernel(1.5, 0.5, 20.0, size=6)  # even size: complex transfer
    x = torch.randn(1, 1, 9, 10, dtype=torch.float64)
    ref = Blur(k.double(), (9, 10))(x)
    assert_close("blur", Blur(k, (9, 10)).to(torch.float64)(x), ref, dtype=torch.float32)  # kernel rounded to fp32 first


# -- generators ---------------------------------------------------------------------------------


def test_random_pixel_mask():
    m = random_pixel_mask((10, 13), 0.3, seed=3)
    assert m.dtype == torch.float32 and m.shape == (10, 13)
    assert int(m.sum()) == round(0.3 * 130) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(m, random_pixel_mask((10, 13), 0.3, seed=3))
    assert not torch.equal(m, random_pixel_mask((10, 13), 0.3, seed=4))
    with pytest.raises(ValueError, match="keep_fraction"):
        random_pixel_mask((4, 4), 1.5)


def test_box_mask():
    m = box_mask((3, 10, 12), (4, 6))
    assert m.shape == (3, 10, 12) and int((m == 0).sum()) == 3 * 24
    assert torch.all(m[:, 3:7, 3:9] == 0) and m[:, 2].all() and m[:, :, 2].all()
    clipped = box_mask((10, 12), 4, center=(0, 0))
    assert int((clipped == 0).sum()) == 4 and torch.all(clipped[:2, :2] == 0)


def test_kernels():
    for k in (gaussian_kernel(1.5), anisotropic_gaussian_kernel(2, 1, 30), motion_kernel(7, 45)):
        assert k.dtype == torch.float32 and k.shape[0] % 2 == 1
        assert_close("sum of taps", float(k.sum()), 1.0, dtype=torch.float32)
        assert (k >= 0).all()
    g = gaussian_kernel(1.5, size=7)
    r = torch.arange(7.0) - 3
    ref = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * 1.5**2))
    assert_close("gaussian", g, ref / ref.sum())
    assert_close("isotropic", anisotropic_gaussian_kernel(1.5, 1.5, 40, size=7), g)
    a = anisotropic_gaussian_kernel(2.5, 0.8, 0, size=9)
    assert_close("rotated", anisotropic_gaussian_kernel(2.5, 0.8, 90, size=9), a.T)
    assert a[4].sum() > a[:, 4].sum()  # elongated along x
    h = motion_kernel(5, 0, size=7)
    assert torch.all(h[[0, 1, 2, 4, 5, 6]] == 0) and int((h[3] > 0).sum()) == 5
    assert_close("rotated", motion_kernel(5, 90, size=7), h.T)
    d = motion_kernel(4, 45, size=7)
    assert float(d[2, 4]) > 0 and float(d[4, 4]) < float(d[2, 4])  # up-right diagonal
