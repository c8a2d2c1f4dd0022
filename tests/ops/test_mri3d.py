"""3-D MRI: the fused ops and kernels on volumes (B,2,D,H,W) against a dense float64 matrix and
explicit fftshift / fftn expressions, the MRI3D operator (broadcast readout masks, adjointness,
data consistency, autograd, opcheck) and its input validation."""
import math

import numpy as np
import pytest
import torch

import fastsd.functional.mri as FM
from fastsd.kernels import mri as K
from fastsd.ops.base import LinearOperator
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.mri import MRI3D
from fastsd.reference import mri as R
from fastsd.testing import assert_adjoint, assert_close, centred_dft, complex_randn, poisoned_like

DIMS = (-3, -2, -1)
ops = torch.ops.fastsd


# mask kinds: "pe" a (1,H,W) phase-encode mask (whole readout lines), "full" a (D,H,W) mask,
# "batched" a (B,D,H,W) per-problem mask (with per-problem coil maps)
def _setup(n_coils, shape=(5, 4, 3), B=2, kind="pe", seed=0, device="cpu"):
    D, H, W = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 2, D, H, W, generator=g)
    mshape = {"pe": (1, H, W), "full": (D, H, W), "batched": (B, D, H, W)}[kind]
    mask = (torch.rand(mshape, generator=g) < 0.5).float()
    lead = (B,) if kind == "batched" else ()
    smaps = None if n_coils == 1 else complex_randn(*lead, n_coils, D, H, W, gen=g)
    y = complex_randn(B, n_coils, D, H, W, gen=g) * (mask[:, None] if kind == "batched" else mask)
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return to(x), to(mask), to(smaps), to(y)


def _dense_A(b, mask, smaps, shape):
    """Dense A of problem b: blockrows_c diag(m) (D_D ⊗ D_H ⊗ D_W) diag(S_c), float64."""
    D, H, W = shape
    F3 = np.kron(np.kron(centred_dft(D), centred_dft(H)), centred_dft(W))
    m = mask[b] if mask.ndim == 4 else mask
    m = np.broadcast_to(m.double().numpy(), shape).ravel()
    if smaps is None:
        s = np.ones((1, D * H * W))
    else:
        s = (smaps[b] if smaps.ndim == 5 else smaps).numpy().astype(np.complex128).reshape(smaps.shape[-4], -1)
    return np.concatenate([m[:, None] * F3 * s[c][None, :] for c in range(s.shape[0])])


def _channels(z, shape):
    z = np.asarray(z).reshape(-1, *shape)
    return torch.from_numpy(np.stack([z.real, z.imag], 1))


@pytest.mark.parametrize("n_coils,kind", [(1, "pe"), (2, "full"), (3, "batched"), (2, "pe")])
def test_ops_match_dense_matrix(n_coils, kind):
    shape = (3, 4, 5)
    x, mask, smaps, y = _setup(n_coils, shape, kind=kind)
    B = x.shape[0]
    z = (x[:, 0].double() + 1j * x[:, 1].double()).numpy().reshape(B, -1)
    yv = y.numpy().astype(np.complex128).reshape(B, -1)
    A = [_dense_A(b, mask, smaps, shape) for b in range(B)]
    Ax = np.stack([A[b] @ z[b] for b in range(B)])
    r = Ax - yv
    assert_close("mri_forward", FM.mri_forward(x, mask, smaps), torch.from_numpy(Ax.reshape(y.shape)))
    assert_close("mri_adjoint", FM.mri_adjoint(y, mask, smaps), _channels([A[b].conj().T @ yv[b] for b in range(B)], shape))
    assert_close("mri_normal", FM.mri_normal(x, mask, smaps), _channels([A[b].conj().T @ Ax[b] for b in range(B)], shape))
    loss, grad = FM.mri_fidelity(x, y, mask, smaps)
    assert_close("loss", loss, torch.from_numpy((np.abs(r) ** 2).sum(1)))
    assert_close("grad", grad, _channels([2 * A[b].conj().T @ r[b] for b in range(B)], shape))
    # hard DC with a unit coil set is the projection onto A x = y: A(dc) = y
    if n_coils == 1:
        assert_close("A dc(x, y)", FM.mri_forward(FM.mri_dc(x, y, mask, smaps), mask, smaps), y)


# ---------------------------------------------------------------------------------------------
# kernels (interpreter on CPU, compiled on CUDA) against explicit shift / FFT expressions

KCASES = [((5, 4, 3), 2, "pe"), ((4, 6, 5), 1, "full"), ((3, 5, 7), 3, "batched")]


@pytest.fixture(params=KCASES, ids=lambda c: "x".join(map(str, c[0])) + f"-c{c[1]}-{c[2]}")
def kcase(request, kernel_device):
    shape, C, kind = request.param
    return _setup(C, shape, kind=kind, seed=3, device=kernel_device)


def _m5(mask):
    return mask[:, None] if mask.ndim == 4 else mask


@pytest.mark.parametrize("block", [1024, 32])
def test_kernels_against_shift_expressions(kcase, kernel_device, block):
    x, mask, smaps, y = kcase
    g = torch.Generator().manual_seed(7)
    C = y.shape[1]
    z = torch.complex(x[:, 0], x[:, 1])[:, None]
    out = poisoned_like(torch.empty(y.shape, dtype=torch.complex64, device=kernel_device))
    got = K.pre_fft(x, smaps, out=out, block=block)
    assert got.data_ptr() == out.data_ptr()
    assert_close("pre_fft", got, torch.fft.ifftshift(z if smaps is None else z * smaps, dim=DIMS))
    k = complex_randn(*y.shape, gen=g).to(kernel_device)
    kc, m = torch.fft.fftshift(k, dim=DIMS), _m5(mask)
    assert_close("post_fft forward", K.post_fft(k, None, mask, "forward", out=poisoned_like(k), block=block)[0], m * kc)
    adj = K.post_fft(None, y, mask, "adjoint", out=poisoned_like(y), block=block)[0]
    assert_close("post_fft adjoint", adj, torch.fft.ifftshift(m * y, dim=DIMS))
    res, loss = K.post_fft(k, y, mask, "residual", out=poisoned_like(k), block=block)
    r = m * (kc - y)
    assert_close("post_fft residual", res, torch.fft.ifftshift(r, dim=DIMS))
    assert_close("post_fft residual loss", loss, r.abs().square().flatten(1).sum(1))
    dc = K.post_fft(k, y, mask, "dc", lam=0.7, out=poisoned_like(k), block=block)[0]
    assert_close("post_fft dc", dc, torch.fft.ifftshift((1 - m) * kc + m * (kc + 0.7 * y) / 1.7, dim=DIMS))
    img = torch.full(x.shape, float("nan"), device=kernel_device)
    got = K.post_ifft(k, smaps, scale=1.5, out=img, block=block)
    zc = torch.fft.fftshift(k, dim=DIMS)
    zz = zc[:, 0] if smaps is None else (smaps.conj() * zc).sum(1)
    assert C == k.shape[1]
    assert_close("post_ifft", got, 1.5 * torch.stack([zz.real, zz.imag], 1))


def test_kernel_composites_match_reference(kcase):
    x, mask, smaps, y = kcase
    assert_close("mri_forward", K.mri_forward(x, mask, smaps), R.mri_forward(x, mask, smaps))
    assert_close("mri_adjoint", K.mri_adjoint(y, mask, smaps), R.mri_adjoint(y, mask, smaps))
    assert_close("mri_normal", K.mri_normal(x, mask, smaps), R.mri_normal(x, mask, smaps))
    loss, grad = K.mri_fidelity(x, y, mask, smaps)
    loss_ref, grad_ref = R.mri_fidelity(x, y, mask, smaps)
    assert_close("loss", loss, loss_ref)
    assert_close("grad", grad, grad_ref)
    for lam in (math.inf, 0.3):
        assert_close("mri_dc", K.mri_dc(x, y, mask, smaps, lam), R.mri_dc(x, y, mask, smaps, lam))
    xh = x.half()
    assert_close("mri_normal", K.mri_normal(xh, mask, smaps), R.mri_normal(xh, mask, smaps), dtype=torch.float16)


# ---------------------------------------------------------------------------------------------
# operator


@pytest.mark.parametrize("n_coils,kind", [(1, "pe"), (3, "full"), (3, "batched")])
def test_adjointness_and_norm(device, n_coils, kind):
    x, mask, smaps, _ = _setup(n_coils, (6, 5, 7), kind=kind, device=device)
    op = MRI3D(mask, smaps)
    y = complex_randn(x.shape[0], n_coils, 6, 5, 7, gen=torch.Generator().manual_seed(5)).to(device)
    assert_adjoint("MRI3D", op, x, y)
    if n_coils == 1:  # ‖M F‖ = 1 for any non-empty mask
        assert_close("norm", op.norm(x, iters=20).cpu(), torch.ones(2, dtype=torch.float64), dtype=torch.float32)


def test_phase_encode_mask_is_broadcast_over_readout(device):
    """A (H,W) mask equals the same mask expanded over every readout position."""
    x, mask, smaps, y = _setup(2, (4, 5, 6), kind="pe", device=device)
    pe = MRI3D(mask[0], smaps)
    full = MRI3D(mask.expand(4, 5, 6), smaps)
    assert pe.mask.shape == (1, 5, 6) and pe.img_size == (4, 5, 6) and pe.n_coils == 2
    assert_close("forward, readout-broadcast mask", pe(x), full(x))
    assert_close("normal, readout-broadcast mask", pe.normal(x), full.normal(x))
    assert MRI3D(mask[0]).img_size == (None, 5, 6)  # single coil: any readout length


def test_data_consistency(device):
    x, mask, _, y = _setup(1, (4, 6, 5), kind="full", device=device)
    op = MRI3D(mask)
    p = op.project(x, y)
    assert_close("A project(x, y)", op(p), y)
    assert_close("pinv", op.pinv(y), op.adjoint(y))
    for gamma in (0.3, 5.0):
        px = op.prox_l2(x, y, gamma)
        assert_close("prox_l2 vs CG", px, LinearOperator.prox_l2(op, x, y, gamma, iters=200))
    maps = birdcage_maps(4, (4, 6, 5)).to(device)
    mc = MRI3D(mask, maps)
    y = mc(torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(device))
    assert_close("A project by CG", mc(mc.project(x, y, iters=200)), y, factor=10)  # CG stops at its tolerance
    px = mc.prox_l2(x, y, 2.0, iters=200)
    assert_close("prox_l2 optimality", px + 2.0 * mc.fidelity(px, y)[1] / 2, x)  # by CG
    assert_close("dc with lam = 0", mc.dc(x, y, 0.0), x)  # S^H S = I for normalised maps


@pytest.mark.parametrize("n_coils,kind", [(1, "pe"), (2, "batched")])
def test_autograd_and_opcheck(n_coils, kind):
    x, mask, smaps, y = _setup(n_coils, (3, 4, 5), kind=kind)
    g = torch.Generator().manual_seed(9)
    cot_x = torch.randn(x.shape, generator=g)
    for fused, ref in [(lambda a: ops.mri_normal(a, mask, smaps), lambda a: R.mri_normal(a, mask, smaps)),
                       (lambda a: ops.mri_dc(a, y, mask, smaps, 0.6), lambda a: R.mri_dc(a, y, mask, smaps, 0.6)),
                       (lambda a: ops.mri_adjoint(ops.mri_forward(a, mask, smaps), mask, smaps),
                        lambda a: R.mri_adjoint(R.mri_forward(a, mask, smaps), mask, smaps))]:
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        (ga,) = torch.autograd.grad(fused(a), a, cot_x)
        (gb,) = torch.autograd.grad(ref(b), b, cot_x)
        assert_close("input gradient", ga, gb)
    xl = x.clone().requires_grad_()
    ops.mri_fidelity(xl, y, mask, smaps)[0].sum().backward()
    assert_close("mri_fidelity backward", xl.grad, R.mri_fidelity(x, y, mask, smaps)[1])
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    for xx, yy in [(x, y), (xg, yg)]:
        torch.library.opcheck(ops.mri_forward.default, (xx, mask, smaps))
        torch.library.opcheck(ops.mri_adjoint.default, (yy, mask, smaps))
        torch.library.opcheck(ops.mri_fidelity.default, (xx, yy, mask, smaps))
        torch.library.opcheck(ops.mri_dc.default, (xx, yy, mask, smaps, math.inf))


def test_bad_inputs_raise():
    x, mask, smaps, y = _setup(3, (4, 5, 6), kind="full")
    op = MRI3D(mask, smaps)
    with pytest.raises(ValueError, match=r"x must have 5 dimensions"):
        op(x[:, :, 0])
    with pytest.raises(ValueError, match=r"x has image size \(4, 5, 5\) but the mask is \(4, 5, 6\)"):
        op(x[..., :5])
    with pytest.raises(ValueError, match=r"y has shape \(2, 1, 4, 5, 6\); expected \(2, 3, 4, 5, 6\)"):
        op.fidelity(x, y[:, :1])
    with pytest.raises(ValueError, match="smaps has image size"):
        MRI3D(mask, smaps[:, :3])
    with pytest.raises(ValueError, match=r"smaps has image size \(4, 5, 6\) but x has \(3, 5, 6\)"):
        MRI3D(mask[:1], smaps)(x[:, :, :3])
    with pytest.raises(ValueError, match="mask must have shape"):
        MRI3D(mask[0, 0])
    with pytest.raises(ValueError, match="mask has batch size 3"):
        MRI3D(mask.expand(3, 4, 5, 6), smaps)(x)
    bad = y.clone()
    bad[1, 2, 3, 4, 5] = float("nan")
    with pytest.raises(ValueError, match="y contains non-finite"):
        op.check_measurement(bad)
    with pytest.raises(ValueError, match="x must have 4 or 5 dimensions"):
        FM.mri_forward(x[..., None], mask, smaps)


def test_birdcage_maps_3d():
    maps = birdcage_maps(12, (9, 10, 11), per_ring=6)
    assert maps.shape == (12, 9, 10, 11) and maps.dtype == torch.complex64
    assert_close("sum of |S|^2", maps.abs().square().sum(0), torch.ones(9, 10, 11))
    peaks = {np.unravel_index(int(m.abs().argmax()), m.shape) for m in maps}
    assert len(peaks) == 12  # every coil has its own brightest spot
    first, second = maps[:6].abs().square().sum(0), maps[6:].abs().square().sum(0)
    assert first[0].mean() > second[0].mean() and first[-1].mean() < second[-1].mean()  # two rings along D
    with pytest.raises(ValueError, match="shape must be"):
        birdcage_maps(4, (2, 3, 4, 5))


@pytest.mark.parametrize("n_coils,kind", [(1, "pe"), (3, "pe"), (2, "batched_pe")])
def test_slices_are_the_same_problem(device, n_coils, kind):
    """A 1-D inverse FFT along the readout turns the 3-D problem into exact 2-D slice problems."""
    B, D, H, W = 2, 5, 6, 7
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, 2, D, H, W, generator=g).to(device)
    mask = (torch.rand((B, 1, H, W) if kind == "batched_pe" else (H, W), generator=g) < 0.5).float()
    smaps = None if n_coils == 1 else complex_randn(*((B,) if kind == "batched_pe" else ()), n_coils, D, H, W, gen=g)
    op = MRI3D(mask, smaps).to(device)
    y = op(x)
    y2, op2 = op.slices(y)
    assert y2.shape == (B * D, n_coils, H, W) and op2.spatial_dims == 2
    x2 = x.transpose(1, 2).reshape(B * D, 2, H, W)
    assert_close("per-slice forward", op2(x2), y2)
    assert_close("from_slices", MRI3D.from_slices(op2.adjoint(y2), B), op.adjoint(y))
    assert torch.equal(MRI3D.from_slices(x2, B), x)
    with pytest.raises(ValueError, match="phase-encoding plane"):
        MRI3D(torch.ones(D, H, W)).slices(y[:, :1])
