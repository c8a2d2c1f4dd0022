"""The direct path of the deepinv drop-in classes on CPU (fastsd.interop.deepinv.direct): the
default there, deepinv's computation in plain torch. Each op against deepinv's own class, float32
and float64, batch 1 and 2; caches that follow buffer updates; what stays on the routed path."""
import pytest
import torch
from deepinv_cases import _gen, dinv, fi

from fastsd.ops.masks import equispaced_mask
from fastsd.testing import assert_close

H, W = 10, 14  # even (the MRI direct path folds the FFT shifts into a checkerboard), H != W
IMG = (3, 12, 10)


def _case(name):
    """(fastsd physics, deepinv physics, image shape without batch, ops with a direct path)."""
    ops = ("A", "A_adjoint", "A_adjoint_A", "prox_l2", "A_dagger")
    if name == "inpainting":
        m = (torch.rand(IMG, generator=_gen(1)) > 0.5).float()
        return fi.Inpainting(IMG, mask=m), dinv.physics.Inpainting(IMG, mask=m), IMG, ops
    if name == "blur":
        f = dinv.physics.functional.gaussian_blur(sigma=(1.2, 0.7), angle=30)
        return fi.BlurFFT(IMG, filter=f), dinv.physics.BlurFFT(IMG, filter=f), IMG, ops
    if name == "mri":
        m = equispaced_mask((H, W), 2, acs_lines=2)
        return fi.MRI(mask=m, img_size=(H, W)), dinv.physics.MRI(mask=m, img_size=(H, W)), (2, H, W), ops
    if name == "mri_per_problem":
        m = torch.stack([equispaced_mask((H, W), 2, acs_lines=2), equispaced_mask((H, W), 3, acs_lines=2)])[:, None]
        return fi.MRI(mask=m, img_size=(H, W)), dinv.physics.MRI(mask=m, img_size=(H, W)), (2, H, W), ops
    if name == "mri3d":
        m = (torch.rand(4, H, W, generator=_gen(2)) > 0.5).float()
        return fi.MRI(mask=m, three_d=True), dinv.physics.MRI(mask=m, three_d=True), (2, 4, H, W), ops
    if name == "multicoil":
        m, s = equispaced_mask((H, W), 2, acs_lines=2), torch.randn(3, H, W, dtype=torch.complex64, generator=_gen(3))
        ours = fi.MultiCoilMRI(mask=m, coil_maps=s, img_size=(H, W))
        return ours, dinv.physics.MultiCoilMRI(mask=m, coil_maps=s, img_size=(H, W)), (2, H, W), ops
    if name == "sr":
        ref = dinv.physics.Downsampling(IMG, filter="bicubic", factor=2, padding="circular")
        return fi.Downsampling(IMG, filter="bicubic", factor=2), ref, IMG, ops[:4]
    raise KeyError(name)


CASES = ["inpainting", "blur", "mri", "mri_per_problem", "mri3d", "multicoil", "sr"]


def _call(physics, op, x, y, z):
    return {"A": lambda: physics.A(x), "A_adjoint": lambda: physics.A_adjoint(y),
            "A_adjoint_A": lambda: physics.A_adjoint_A(x), "prox_l2": lambda: physics.prox_l2(z, y, 0.7),
            "A_dagger": lambda: physics.A_dagger(y)}[op]()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", CASES)
def test_direct_matches_deepinv(name, dtype):
    if name == "sr" and dtype == torch.float64:
        pytest.skip("deepinv's Downsampling does not take float64 images with its float32 filter")
    ours, ref, shape, ops = _case(name)
    B = 2
    x = torch.randn((B,) + shape, generator=_gen(4), dtype=dtype)
    z = torch.randn((B,) + shape, generator=_gen(5), dtype=dtype)
    y = ref.A(torch.randn((B,) + shape, generator=_gen(6), dtype=dtype))
    for op in ops:
        ours.fastsd_path = None
        got, want = _call(ours, op, x, y, z), _call(ref, op, x, y, z)
        assert ours.fastsd_path == "direct", (op, ours.fastsd_path, ours.fallback_reason)
        assert got.dtype == want.dtype and got.shape == want.shape, op
        # float64 too at float32's tolerance: deepinv's float32 buffers bound the accuracy of both;
        # deepinv's iterative solvers (multi-coil prox and pseudo-inverse) stop at a tolerance
        cg = name == "multicoil" and op in ("prox_l2", "A_dagger")
        assert_close(op, got, want, dtype=torch.float32, factor=10 if cg else 1)
    # torch.func, as deepinv uses it: the vjp of A is A^H
    _, vjp = torch.func.vjp(ours.A, x)
    assert_close("vjp of A", vjp(y)[0], ref.A_adjoint(y), dtype=torch.float32)


def test_direct_caches_follow_buffer_updates():
    ours, ref, shape, _ = _case("mri")
    x = torch.randn((1,) + shape, generator=_gen(7))
    assert_close("MRI.A", ours.A(x), ref.A(x), factor=0.1)
    with torch.no_grad():  # in place: a new version of the same buffer
        ours.mask[..., :3] = 0
        ref.mask[..., :3] = 0
    assert_close("MRI.A after an in-place mask change", ours.A(x), ref.A(x), factor=0.1)
    assert ours.fastsd_path == "direct"
    new = equispaced_mask((H, W), 3, acs_lines=2)
    ours.update_parameters(mask=new)
    ref.update_parameters(mask=new)
    assert_close("MRI.A after update_parameters", ours.A(x), ref.A(x), factor=0.1)
    assert ours.fastsd_path == "direct"
    ours, ref, shape, _ = _case("blur")
    x = torch.randn((1,) + shape, generator=_gen(8))
    f = dinv.physics.functional.gaussian_blur(sigma=(2.0, 0.5))
    ours.update_parameters(filter=f)
    ref.update_parameters(filter=f)
    assert_close("BlurFFT.A after update_parameters", ours.A(x), ref.A(x), factor=0.1)
    assert ours.fastsd_path == "direct"


def test_routed_where_the_direct_path_does_not_apply():
    ours, ref, shape, _ = _case("mri")
    x = torch.randn((1,) + shape, generator=_gen(9))
    m = equispaced_mask((H, W), 3, acs_lines=2)
    assert_close("MRI.A, per-call mask", ours.A(x, mask=m), ref.A(x, mask=m), factor=0.1)
    assert ours.fastsd_path == "fastsd"  # a per-call parameter takes the routed path
    odd = fi.MRI(mask=torch.ones(5, 7), img_size=(5, 7))  # odd sizes: no checkerboard
    odd.A(torch.randn(1, 2, 5, 7))
    assert odd.fastsd_path == "fastsd"
    blur, _, shape, _ = _case("blur")
    y = torch.randn((1,) + shape, generator=_gen(10))
    blur.pinv_threshold = 1e-3  # fastsd's relative rule: the fused closed form
    blur.A_dagger(y)
    assert blur.fastsd_path == "fastsd"
    x16 = torch.randn((1,) + shape, generator=_gen(11)).half()  # neither float32 nor float64
    inp = _case("inpainting")[0]
    inp.A(x16)
    assert inp.fastsd_path != "direct"
    inp.cpu_path = "fused"  # one instance on fastsd's fused ops
    inp.A(x16.float())
    assert inp.fastsd_path == "fastsd"


def test_filter_that_requires_grad_gets_gradients():
    f = dinv.physics.functional.gaussian_blur(sigma=(1.0, 1.0)).requires_grad_()
    ours = fi.BlurFFT(IMG, filter=f)
    x = torch.randn((1,) + IMG, generator=_gen(12))
    ours.A(x).square().sum().backward()
    assert ours.fastsd_path == "deepinv" and f.grad is not None and f.grad.abs().sum() > 0
    filt = dinv.physics.Downsampling(IMG, filter="bicubic", factor=2).filter.clone().requires_grad_()
    down = fi.Downsampling(IMG, filter=filt, factor=2)
    down.A(x).square().sum().backward()
    assert down.fastsd_path == "deepinv" and filt.grad is not None and filt.grad.abs().sum() > 0
