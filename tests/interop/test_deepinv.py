"""deepinv interop: each fastsd physics against deepinv's own class with the same parameters,
against dense float64 matrices (pseudo-inverse, prox), gradcheck of the autograd Functions,
torch.func, adjointness, .to(device), parameter updates, errors, and the SDI Reconstructor.
Skipped when deepinv cannot be imported; fastsd itself must import without it."""
import os
import subprocess
import sys
import warnings

import pytest
import torch

try:
    import deepinv as dinv
except Exception as e:  # not installed, or a torchvision build that does not match torch
    pytest.skip(f"deepinv not usable: {type(e).__name__}: {e}", allow_module_level=True)

from fastsd.api import solve
from fastsd.interop import deepinv as fi
from fastsd.ops.image import Inpainting as FsInpainting
from fastsd.ops.masks import equispaced_mask
from fastsd.ops.mri import MRI as FsMRI
from fastsd.ops.mri import MRI3D as FsMRI3D
from fastsd.testing import rel_err

warnings.filterwarnings("ignore", category=UserWarning, module="deepinv")

H, W = 8, 12  # MRI image size
VOL = (3, 5, 7)  # 3D MRI volume size (D, H, W): odd, and no two alike
IMG = (3, 16, 16)  # image-operator size (C, H, W)


@pytest.fixture(autouse=True, params=["fused"])
def cpu_path(request, monkeypatch):
    """On CPU tensors the classes take the direct path by default (tests/interop/test_deepinv_direct.py);
    these tests check the fused path, which CUDA takes, unless a test asks for both."""
    monkeypatch.setattr(fi._Fused, "cpu_path", request.param)
    return request.param


BOTH_PATHS = pytest.mark.parametrize("cpu_path", ["fused", "direct"], indirect=True)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _mri_mask(acc=2):
    return equispaced_mask((H, W), acc, acs_lines=2)


def _smaps(n=3, seed=1):
    # random maps: well conditioned on an 8x12 grid (birdcage maps are nearly singular there)
    return torch.randn(n, H, W, dtype=torch.complex64, generator=_gen(seed))


def _volume_mask(shape, seed):
    """Random 0/1 mask of ``shape`` that samples the k-space centre (so A^H A is well conditioned)."""
    m = (torch.rand(shape, generator=_gen(seed)) > 0.5).float()
    m[..., VOL[-2] // 2, VOL[-1] // 2] = 1
    return m


def _blur_filter():
    return dinv.physics.functional.gaussian_blur(sigma=(0.8, 0.8))


# name -> (fastsd physics, deepinv physics, image shape); deepinv's class with the same parameters
def _case(name):
    if name == "mri":
        m = _mri_mask()
        return fi.MRI(mask=m), dinv.physics.MRI(mask=m), (2, 2, H, W)
    if name == "mri_per_problem_mask":
        m = torch.stack([_mri_mask(2), _mri_mask(3)])[:, None]  # (B, 1, H, W)
        return fi.MRI(mask=m), dinv.physics.MRI(mask=m), (2, 2, H, W)
    if name == "multicoil":
        m, s = _mri_mask(), _smaps()
        return fi.MultiCoilMRI(mask=m, coil_maps=s), dinv.physics.MultiCoilMRI(mask=m, coil_maps=s), (2, 2, H, W)
    if name == "mri3d":  # a (D, H, W) volume mask, which deepinv's constructor stores as (1, D, H, W)
        m = _volume_mask(VOL, 31)
        return fi.MRI(mask=m, three_d=True), dinv.physics.MRI(mask=m, three_d=True), (2, 2) + VOL
    if name == "mri3d_per_problem_mask":  # (B, 1, D, H, W)
        m = _volume_mask((2, 1) + VOL, 32)
        return fi.MRI(mask=m, three_d=True), dinv.physics.MRI(mask=m, three_d=True), (2, 2) + VOL
    if name == "multicoil3d":  # a (H, W) phase-encoding mask (whole readout lines) and (N, D, H, W) maps
        m = _volume_mask(VOL[1:], 33)
        s = torch.randn((3,) + VOL, dtype=torch.complex64, generator=_gen(34))
        ours = fi.MultiCoilMRI(mask=m, coil_maps=s, three_d=True)
        return ours, dinv.physics.MultiCoilMRI(mask=m, coil_maps=s, three_d=True), (2, 2) + VOL
    if name == "inpainting":
        m = (torch.rand(IMG, generator=_gen(2)) > 0.5).float()
        return fi.Inpainting(IMG, mask=m), dinv.physics.Inpainting(IMG, mask=m), (2,) + IMG
    if name == "blur":
        f = _blur_filter()
        return fi.BlurFFT(IMG, filter=f), dinv.physics.BlurFFT(IMG, filter=f), (2,) + IMG
    if name == "sr_bicubic2":  # deepinv's own named filter: an independent check of the filter mapping
        ref = dinv.physics.Downsampling(IMG, filter="bicubic", factor=2, padding="circular")
        return fi.Downsampling(IMG, filter="bicubic", factor=2), ref, (2,) + IMG
    if name in ("sr_avg4", "sr_bicubic4"):  # fastsd's named filters, as tensors for deepinv
        filt = name[3:-1]
        ref = dinv.physics.Downsampling(IMG, filter=fi.deepinv_downsampling_filter(filt, 4), factor=4, padding="circular")
        ours = fi.Downsampling(IMG, filter="avg" if filt == "avg" else fi.deepinv_downsampling_filter(filt, 4), factor=4)
        return ours, ref, (2,) + IMG
    if name in ("sr_bilinear4", "sr_gaussian2", "sr_sinc2"):  # deepinv's named filters: any filter is fused
        filt, f = name[3:-1], int(name[-1])
        ref = dinv.physics.Downsampling(IMG, filter=filt, factor=f, padding="circular")
        return fi.Downsampling(IMG, filter=filt, factor=f), ref, (2,) + IMG
    raise KeyError(name)


MRI_CASES = ("mri", "mri_per_problem_mask", "multicoil", "mri3d", "mri3d_per_problem_mask", "multicoil3d")
CASES = [*MRI_CASES, "inpainting", "blur", "sr_bicubic2", "sr_avg4", "sr_bicubic4", "sr_bilinear4", "sr_gaussian2",
         "sr_sinc2"]


def _x(shape, seed=3, dtype=torch.float32):
    return torch.randn(shape, generator=_gen(seed), dtype=torch.float64).to(dtype)


def _dense(physics, shape, dtype=torch.float64):
    """Dense real matrix of ``physics.A`` for one problem (columns = images of the standard basis)."""
    n = int(torch.tensor(shape[1:]).prod())
    basis = torch.eye(n, dtype=torch.float32).reshape((n,) + tuple(shape[1:]))
    cols = torch.cat([physics.A(basis[i : i + 8]) for i in range(0, n, 8)])  # physics is shared over batch
    return cols.reshape(n, -1).T.to(dtype)


# -- against deepinv ------------------------------------------------------------------------


@BOTH_PATHS
@pytest.mark.parametrize("name", CASES)
def test_matches_deepinv(name):
    ours, ref, shape = _case(name)
    x, z = _x(shape, 3), _x(shape, 4)
    y = ref.A(_x(shape, 5))
    cg = name.startswith("multicoil")  # deepinv solves the multi-coil prox by CG to tol 1e-4
    assert rel_err(ours.A(x), ref.A(x)) < 1e-5
    assert rel_err(ours.A_adjoint(y), ref.A_adjoint(y)) < 1e-5
    assert rel_err(ours.A_adjoint_A(x), ref.A_adjoint_A(x)) < 1e-5
    assert rel_err(ours.A_A_adjoint(y), ref.A_A_adjoint(y)) < 1e-5
    for gamma in (0.3, 5.0):
        assert rel_err(ours.prox_l2(z, y, gamma), ref.prox_l2(z, y, gamma)) < (1e-3 if cg else 1e-5)
    if not name.startswith(("multicoil", "sr")):  # closed forms on both sides (sr: test_deepinv_dagger.py)
        assert rel_err(ours.A_dagger(y), ref.A_dagger(y)) < 1e-5
    # the whole measurement process (noise model included) stays deepinv's
    assert rel_err(ours(x), ref(x)) < 1e-5


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
    assert rel_err(ours.A_dagger(y, max_iter=iters), want) < 2e-5
    z, gamma = _x(shape, 4), 0.7
    zv = z.reshape(B, -1).double()
    lhs = torch.eye(A.shape[1], dtype=torch.float64) + gamma * A.T @ A
    want = torch.linalg.solve(lhs, (zv + gamma * (A.T @ yv.T).T).T).T.reshape(shape)
    # the direct multi-coil prox is deepinv's own CG, which stops at its tolerance 1e-4
    cg_tol = name.startswith("multicoil") and cpu_path == "direct"
    assert rel_err(ours.prox_l2(z, y, gamma), want) < (3e-4 if cg_tol else 2e-5)


@BOTH_PATHS
@pytest.mark.parametrize("name", CASES)
def test_adjointness_and_torch_func_vjp(name):
    ours, ref, shape = _case(name)
    x = _x(shape, 6)
    v = torch.randn(ref.A(x).shape, generator=_gen(7))
    ax, ahv = ours.A(x), ours.A_adjoint(v)
    lhs, rhs = (ax.double() * v.double()).sum(), (x.double() * ahv.double()).sum()
    assert abs(float(lhs - rhs)) < 1e-6 * float(ax.norm() * v.norm())
    assert float(ours.adjointness_test(x, num_samples=shape[0])) < 1e-5  # deepinv's own Monte Carlo check
    # deepinv computes vector-Jacobian products with torch.func: they must give A^H
    _, vjp = torch.func.vjp(ours.A, x)
    assert rel_err(vjp(v)[0], ours.A_adjoint(v)) < 1e-6
    _, vjp = torch.func.vjp(ours.A_adjoint, v)
    assert rel_err(vjp(x)[0], ours.A(x)) < 1e-6
    # and the gradient of the data fidelity is 2 A^H (A x - y)
    y = ref.A(_x(shape, 8))
    g = torch.func.grad(lambda t: (ours.A(t) - y).square().sum())(x)
    assert rel_err(g, 2 * ref.A_adjoint(ref.A(x) - y)) < 1e-5


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
    assert rel_err(gz, (P @ gv.T).T.reshape(shape)) < 1e-4
    assert rel_err(gy, (gamma * A @ P @ gv.T).T.reshape(y.shape)) < 1e-4


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
    tol = 1e-3 if name.startswith("multicoil") else 1e-5  # deepinv's CG prox stops at tol 1e-4
    for got, want in zip(*grads):
        assert rel_err(got, want) < tol


def test_per_problem_gamma():
    for name in ("mri", "multicoil", "mri3d", "multicoil3d", "inpainting", "blur", "sr_avg4"):
        ours, ref, shape = _case(name)
        z, y = _x(shape, 4), ref.A(_x(shape, 5))
        gamma = torch.tensor([0.3, 4.0])
        got = ours.prox_l2(z, y, gamma)
        for b in range(2):
            want = ours.prox_l2(z[b : b + 1], y[b : b + 1], float(gamma[b]))
            assert rel_err(got[b : b + 1], want) < 1e-5, name
    with pytest.raises(ValueError, match="one value per problem"):
        ours.prox_l2(z, y, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        ours.prox_l2(z, y, -1.0)


# -- devices, parameters, errors ------------------------------------------------------------


def _tensor_attributes(module):
    """Tensors stored as plain attributes (they would not follow .to(device))."""
    return [(type(m).__name__, k) for m in module.modules() for k, v in vars(m).items() if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("name", CASES)
def test_state_is_deepinvs_and_follows_to_device(name, device):
    ours, ref, shape = _case(name)
    assert _tensor_attributes(ours) == []
    # deepinv's buffers are the only state: the same state_dict, loadable both ways
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(ours.state_dict())
    x = _x(shape, 14)
    want = ours.A(x)
    assert ours.fastsd_path == "fastsd" and ours.fallback_reason is None
    ours = ours.to(device)
    got = ours.A(x.to(device))
    assert ours.fastsd_path == "fastsd" and got.device.type == device.type
    assert next(iter(ours.fastsd_op.buffers())).device.type == device.type  # rebuilt after the move
    assert rel_err(got, want) < 1e-5
    assert rel_err(ours.A_adjoint(got), ref.A_adjoint(want)) < 1e-5
    clone = ours.clone()  # deepinv's deep copy
    assert rel_err(clone.A(x.to(device)), want) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("name", CASES)
def test_cuda_matches_deepinv(name):
    ours, ref, shape = _case(name)
    ours, ref = ours.to("cuda"), ref.to("cuda")
    x, z = _x(shape, 3).cuda(), _x(shape, 4).cuda()
    y = ref.A(_x(shape, 5).cuda())
    assert rel_err(ours.A(x), ref.A(x)) < 1e-5
    assert rel_err(ours.A_adjoint(y), ref.A_adjoint(y)) < 1e-5
    assert rel_err(ours.A_adjoint_A(x), ref.A_adjoint_A(x)) < 1e-5
    assert rel_err(ours.prox_l2(z, y, 0.5), ref.prox_l2(z, y, 0.5)) < (1e-3 if name.startswith("multicoil") else 1e-5)


def test_parameter_updates_follow_deepinv():
    x = _x((2, 2, H, W), 15)
    new = _mri_mask(3)
    ours, ref = fi.MRI(mask=_mri_mask(2)), dinv.physics.MRI(mask=new)
    assert rel_err(ours.A(x, mask=new), ref.A(x)) < 1e-6  # per-call keyword, as deepinv
    assert torch.equal(ours.fastsd_op.mask, new)
    ours.update(mask=_mri_mask(2))
    assert rel_err(ours.A(x), dinv.physics.MRI(mask=_mri_mask(2)).A(x)) < 1e-6
    ours.mask[..., 0] = 0  # in place: the fused operator follows deepinv's buffer
    assert rel_err(ours.A(x), dinv.physics.MRI(mask=ours.mask.clone()).A(x)) < 1e-6

    s2 = _smaps(4, seed=5)
    ours = fi.MultiCoilMRI(mask=_mri_mask(), coil_maps=_smaps())
    ours.update(coil_maps=s2)
    assert rel_err(ours.A(x), dinv.physics.MultiCoilMRI(mask=_mri_mask(), coil_maps=s2).A(x)) < 1e-6

    xi = _x((2,) + IMG, 16)
    m2 = (torch.rand(IMG, generator=_gen(17)) > 0.3).float()
    ours = fi.Inpainting(IMG, mask=torch.ones(IMG))
    ours.update(mask=m2)
    assert rel_err(ours.A(xi), xi * m2) == 0

    f2 = dinv.physics.functional.gaussian_blur(sigma=(1.3, 1.3))
    ours = fi.BlurFFT(IMG, filter=_blur_filter())
    ours.update(filter=f2)
    assert rel_err(ours.A(xi), dinv.physics.BlurFFT(IMG, filter=f2).A(xi)) < 1e-5

    ours = fi.Downsampling(IMG, filter="avg", factor=2)
    ours.update(filter="avg", factor=4)
    ref = dinv.physics.Downsampling(IMG, filter=fi.deepinv_downsampling_filter("avg", 4), factor=4, padding="circular")
    assert rel_err(ours.A(xi), ref.A(xi)) < 1e-5 and ours.A(xi).shape[-1] == 4
    ours.update(filter="bilinear", factor=2)  # deepinv's names, as deepinv
    ref.update(filter="bilinear", factor=2)
    assert rel_err(ours.A(xi), ref.A(xi)) < 1e-5 and ours.fastsd_path == "fastsd"


def _fallbacks():
    """(fastsd physics, deepinv physics, image shape, reason fragment): configurations without a
    fused fastsd operator, which must run deepinv's own code."""
    m2 = torch.stack([_mri_mask(2), _mri_mask(3)])[None]  # differs between re and im
    m3d = (torch.rand(1, 2, 3, H, W, generator=_gen(1)) > 0.5).float()
    soft = 0.5 * _mri_mask()
    slice_maps = torch.randn(1, 2, 1, H, W, dtype=torch.complex64, generator=_gen(2))
    per_channel = torch.rand(1, 3, 3, 3, generator=_gen(0))
    return [
        (fi.MRI(mask=m2), dinv.physics.MRI(mask=m2), (2, 2, H, W), "real and imaginary"),
        (fi.MRI(mask=soft), dinv.physics.MRI(mask=soft), (2, 2, H, W), "binary"),
        # three_d=False on volumes: deepinv's slice-by-slice 2D FFT (what its Inpainting * MRI builds)
        (fi.MRI(mask=m3d), dinv.physics.MRI(mask=m3d), (2, 2, 3, H, W), "takes (B, 2, H, W)"),
        # 3D coil maps of one slice, broadcast over the depth (fused for maps of the full image size)
        (fi.MultiCoilMRI(mask=m3d[:, :1], coil_maps=slice_maps, three_d=True),
         dinv.physics.MultiCoilMRI(mask=m3d[:, :1], coil_maps=slice_maps, three_d=True), (2, 2, 3, H, W), "smaps"),
        (fi.BlurFFT(IMG, filter=per_channel), dinv.physics.BlurFFT(IMG, filter=per_channel), (2,) + IMG, "per channel"),
        (fi.Downsampling(IMG, filter="bicubic", factor=2, padding="reflect"),
         dinv.physics.Downsampling(IMG, filter="bicubic", factor=2, padding="reflect"), (2,) + IMG, "padding"),
    ]


def test_fallback_to_deepinv():
    for ours, ref, shape, why in _fallbacks():
        x = _x(shape, 21)
        got = ours.A(x)
        assert ours.fastsd_path == "deepinv" and why in ours.fallback_reason, (type(ours).__name__, ours.fallback_reason)
        y = ref.A(x)
        assert torch.equal(got, y)
        assert torch.equal(ours.A_adjoint(y), ref.A_adjoint(y))
        assert rel_err(ours.prox_l2(x, y, 0.4), ref.prox_l2(x, y, 0.4)) < 1e-6
        with pytest.raises(ValueError, match="no fused fastsd operator"):
            _ = ours.fastsd_op
    # float64 MRI data: deepinv's exact complex128 path rather than fastsd's float32 kernels
    ours, ref, shape = _case("mri")
    x = _x(shape, 22, torch.float64)
    assert torch.equal(ours.A(x), ref.A(x)) and ours.fastsd_path == "deepinv"
    assert ours.A(x.float()) is not None and ours.fastsd_path == "fastsd"


@pytest.mark.parametrize("param", ["mri_mask", "coil_maps", "inpainting_mask", "blur_filter", "sr_filter"])
def test_gradients_reach_parameters(param):
    """A parameter that requires grad takes deepinv's differentiable path: the gradient equals
    deepinv's, and with grad disabled the same physics runs fused again."""
    name = {"mri_mask": "mri", "coil_maps": "multicoil", "inpainting_mask": "inpainting", "blur_filter": "blur",
            "sr_filter": "sr_bilinear4"}[param]
    attr = "coil_maps" if param == "coil_maps" else param.split("_")[-1]
    ours, ref, shape = _case(name)
    x = _x(shape, 23)
    grads = []
    for phys in (ours, ref):
        p = getattr(phys, attr).detach().clone().requires_grad_()
        out = phys.A(x, **{attr: p})
        grads.append(torch.autograd.grad(out.square().sum(), p)[0])
    assert ours.fastsd_path == "deepinv" and "requires grad" in ours.fallback_reason
    assert grads[0].abs().sum() > 0 and rel_err(grads[0], grads[1]) < 1e-6
    with torch.no_grad():
        ours.A(x)
    assert ours.fastsd_path == "fastsd"


def test_bad_arguments():
    ours, _, shape = _case("mri")
    with pytest.raises(ValueError, match="one value per problem"):
        ours.prox_l2(_x(shape), ours.A(_x(shape)), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="linear physics"):
        fi.to_fastsd(dinv.physics.Physics(A=lambda x: x**2), torch.zeros(1))


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
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
    assert model.result_.info["preset"] == "mri" and model.result_.info["iterations"] == 4
    # deepinv's own MRI physics becomes the same fused fastsd operator
    got2 = fi.SDIReconstructor(**SDI)(y, dinv.physics.MRI(mask=mask))
    assert torch.allclose(got2, want, rtol=0, atol=1e-6)
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
        assert rel_err(op.adjoint(k), ref.A_adjoint(y)) < 1e-5


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
    assert rel_err(got, want) < 1e-4
    with pytest.raises(ValueError, match="unknown method"):
        fi.SDIReconstructor(method="nope")



def _run_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter (for changes to global state such as imports); it must succeed."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_rss_adjoint_reaches_deepinvs_code_when_substituted():
    """``MultiCoilMRI.A_adjoint(rss=True)`` is deepinv's code, also once fastsd's classes stand in
    for deepinv's (:mod:`fastsd.interop.deepinv_substitute`, which renames deepinv.physics.MultiCoilMRI
    to fastsd's class): it gives deepinv's coil images, without recursing into itself."""
    code = (
        "import torch, deepinv\n"
        "from deepinv.physics import MultiCoilMRI as Native\n"
        "from fastsd.interop import deepinv_substitute\n"
        "deepinv_substitute.substitute()\n"
        "g = torch.Generator().manual_seed(0)\n"
        "mask, maps = (torch.rand(9, 8, generator=g) < 0.5).float(), torch.randn(3, 9, 8, dtype=torch.complex64, generator=g)\n"
        "ours = deepinv.physics.MultiCoilMRI(mask=mask, coil_maps=maps, img_size=(2, 9, 8))\n"
        "theirs = Native(mask=mask, coil_maps=maps, img_size=(2, 9, 8))\n"
        "assert type(ours) is not Native\n"
        "y = theirs.A(torch.randn(2, 2, 9, 8, generator=g))\n"
        "assert torch.equal(ours.A_adjoint(y, rss=True), theirs.A_adjoint(y, rss=True))\n"
    )
    _run_python(code)


# -- fastsd never needs deepinv -------------------------------------------------------------


def test_fastsd_imports_without_deepinv():
    code = (
        "import sys; sys.modules['deepinv'] = None\n"  # makes `import deepinv` fail
        "import fastsd, fastsd.api, fastsd.cli, fastsd.interop, fastsd.solvers\n"
        "assert 'fastsd.interop.deepinv' not in sys.modules\n"
        "try:\n"
        "    import fastsd.interop.deepinv\n"
        "except ImportError as e:\n"
        "    assert 'fastsd[deepinv]' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('imported without deepinv')\n"
    )
    _run_python(code)


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
        assert torch.allclose(got, want, rtol=0, atol=1e-6)


def test_spectral_gamma_takes_deepinvs_path():
    """deepinv's Wiener filter passes a per-frequency gamma (1, 1, H, W // 2 + 1) to BlurFFT.prox_l2."""
    ours, ref, shape = _case("blur")
    x = _x(shape, 24)
    y = ref.A(x)
    gamma = torch.rand(1, 1, IMG[1], IMG[2] // 2 + 1, generator=_gen(25)) + 0.1
    got = ours.prox_l2(None, y, gamma)  # deepinv: no z term (a full z would not broadcast)
    assert ours.fastsd_path == "deepinv" and "gamma of shape" in ours.fallback_reason
    assert rel_err(got, ref.prox_l2(None, y, gamma)) < 1e-5  # its inner A_adjoint runs fused
    assert rel_err(ours.prox_l2(x, y, 0.5), ref.prox_l2(x, y, 0.5)) < 1e-5 and ours.fastsd_path == "fastsd"
