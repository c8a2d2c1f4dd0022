"""deepinv interop, the routing: the fused operator follows deepinv's buffers (state, devices,
parameter updates), configurations without one run deepinv's own code, parameters that require
grad get deepinv's gradients, bad arguments fail clearly, substitution into deepinv, and fastsd
imports without deepinv. Skipped when deepinv cannot be imported (by deepinv_cases)."""
import os
import subprocess
import sys

import pytest
import torch
from deepinv_cases import CASES, IMG, H, W, _blur_filter, _case, _gen, _mri_mask, _smaps, _x, dinv, fi

from fastsd.testing import assert_close

pytestmark = pytest.mark.usefixtures("cpu_path")  # the fused path (conftest.py)

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
    assert_close("A after .to(device)", got, want)
    assert_close("A_adjoint after .to(device)", ours.A_adjoint(got), ref.A_adjoint(want))
    clone = ours.clone()  # deepinv's deep copy
    assert_close("A of the clone", clone.A(x.to(device)), want)


def test_parameter_updates_follow_deepinv():
    x = _x((2, 2, H, W), 15)
    new = _mri_mask(3)
    ours, ref = fi.MRI(mask=_mri_mask(2)), dinv.physics.MRI(mask=new)
    assert_close("MRI.A, per-call mask", ours.A(x, mask=new), ref.A(x), factor=0.1)  # a per-call keyword, as deepinv
    assert torch.equal(ours.fastsd_op.mask, new)
    ours.update(mask=_mri_mask(2))
    assert_close("MRI.A after update", ours.A(x), dinv.physics.MRI(mask=_mri_mask(2)).A(x), factor=0.1)
    ours.mask[..., 0] = 0  # in place: the fused operator follows deepinv's buffer
    assert_close("MRI.A after an in-place change", ours.A(x), dinv.physics.MRI(mask=ours.mask.clone()).A(x), factor=0.1)

    s2 = _smaps(4, seed=5)
    ours = fi.MultiCoilMRI(mask=_mri_mask(), coil_maps=_smaps())
    ours.update(coil_maps=s2)
    want = dinv.physics.MultiCoilMRI(mask=_mri_mask(), coil_maps=s2).A(x)
    assert_close("MultiCoilMRI.A after update", ours.A(x), want, factor=0.1)

    xi = _x((2,) + IMG, 16)
    m2 = (torch.rand(IMG, generator=_gen(17)) > 0.3).float()
    ours = fi.Inpainting(IMG, mask=torch.ones(IMG))
    ours.update(mask=m2)
    assert_close("Inpainting.A after update", ours.A(xi), xi * m2, factor=0)

    f2 = dinv.physics.functional.gaussian_blur(sigma=(1.3, 1.3))
    ours = fi.BlurFFT(IMG, filter=_blur_filter())
    ours.update(filter=f2)
    assert_close("BlurFFT.A after update", ours.A(xi), dinv.physics.BlurFFT(IMG, filter=f2).A(xi))

    ours = fi.Downsampling(IMG, filter="avg", factor=2)
    ours.update(filter="avg", factor=4)
    ref = dinv.physics.Downsampling(IMG, filter=fi.deepinv_downsampling_filter("avg", 4), factor=4, padding="circular")
    assert_close("Downsampling.A after update to factor 4", ours.A(xi), ref.A(xi))
    ours.update(filter="bilinear", factor=2)  # deepinv's names, as deepinv
    ref.update(filter="bilinear", factor=2)
    assert_close("Downsampling.A after update to deepinv's bilinear filter", ours.A(xi), ref.A(xi))
    assert ours.fastsd_path == "fastsd"


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
        assert_close(f"{type(ours).__name__}.prox_l2 on deepinv's path", ours.prox_l2(x, y, 0.4), ref.prox_l2(x, y, 0.4),
                     factor=0.1)
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
    assert grads[0].abs().sum() > 0
    assert_close(f"gradient to {attr}", grads[0], grads[1], factor=0.1)
    with torch.no_grad():
        ours.A(x)
    assert ours.fastsd_path == "fastsd"


def test_bad_arguments():
    ours, _, shape = _case("mri")
    with pytest.raises(ValueError, match="one value per problem"):
        ours.prox_l2(_x(shape), ours.A(_x(shape)), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="linear physics"):
        fi.to_fastsd(dinv.physics.Physics(A=lambda x: x**2), torch.zeros(1))


def test_spectral_gamma_takes_deepinvs_path():
    """deepinv's Wiener filter passes a per-frequency gamma (1, 1, H, W // 2 + 1) to BlurFFT.prox_l2."""
    ours, ref, shape = _case("blur")
    x = _x(shape, 24)
    y = ref.A(x)
    gamma = torch.rand(1, 1, IMG[1], IMG[2] // 2 + 1, generator=_gen(25)) + 0.1
    got = ours.prox_l2(None, y, gamma)  # deepinv: no z term (a full z would not broadcast)
    assert ours.fastsd_path == "deepinv" and "gamma of shape" in ours.fallback_reason
    assert_close("prox_l2, per-frequency gamma", got, ref.prox_l2(None, y, gamma))  # its inner A_adjoint runs fused
    assert_close("prox_l2, scalar gamma", ours.prox_l2(x, y, 0.5), ref.prox_l2(x, y, 0.5))
    assert ours.fastsd_path == "fastsd"


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
