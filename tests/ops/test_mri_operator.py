"""MRI custom ops and the MRI operator: explicit dense matrices, adjointness, norms, autograd,
data-consistency properties, opcheck and input validation. Coil maps are tested here too."""
import math

import numpy as np
import pytest
import torch

import fastsd.functional.mri as FM
from fastsd.ops.base import LinearOperator
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.masks import equispaced_mask
from fastsd.ops.mri import MRI, MRI3D, coil_combined, estimate_coil_maps
from fastsd.reference import mri as R
from fastsd.testing import assert_adjoint, assert_close, centred_dft, complex_randn, rel_err

ops = torch.ops.fastsd


def _setup(n_coils, H=9, W=8, B=2, seed=0, batched=False, device="cpu"):
    """Random image, 0/1 mask (half the lines), coil maps (None for 1 coil), measurement y = M y."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 2, H, W, generator=g)
    mask = (torch.rand(*((B,) if batched else ()), H, W, generator=g) < 0.5).float()
    smaps = None if n_coils == 1 else complex_randn(*((B,) if batched else ()), n_coils, H, W, gen=g)
    y = complex_randn(B, n_coils, H, W, gen=g) * (mask[:, None] if batched else mask)
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return to(x), to(mask), to(smaps), to(y)


# ---------------------------------------------------------------------------------------------
# dense explicit operator (numpy, float64) -- independent of any fftshift convention


def _dense_A(mask, smaps, H, W):
    """Per-problem list of dense A = blockrows_c diag(m) D2 diag(S_c), shape (C·H·W, H·W)."""
    D2 = np.kron(centred_dft(H), centred_dft(W))
    m = mask.double().numpy().reshape(-1, H * W) if mask.ndim == 3 else mask.double().numpy().reshape(1, -1)
    if smaps is None:
        s = np.ones((1, 1, H * W))
    else:
        s = smaps.numpy().astype(np.complex128).reshape(-1 if smaps.ndim == 4 else 1, smaps.shape[-3], H * W)
    B = max(m.shape[0], s.shape[0])
    return [
        np.concatenate([m[b % m.shape[0], :, None] * D2 * s[b % s.shape[0], c][None, :] for c in range(s.shape[1])])
        for b in range(B)
    ]


def _as_complex(x):
    return (x[:, 0].double() + 1j * x[:, 1].double()).numpy().reshape(x.shape[0], -1)


def _as_channels(z, H, W):
    z = np.asarray(z).reshape(-1, H, W)
    return torch.from_numpy(np.stack([z.real, z.imag], 1))


@pytest.mark.parametrize("n_coils,batched", [(1, False), (3, False), (3, True)])
def test_ops_match_dense_matrix(n_coils, batched):
    H, W = 5, 4
    x, mask, smaps, y = _setup(n_coils, H, W, batched=batched)
    B = x.shape[0]
    A = _dense_A(mask, smaps, H, W)
    A = A * B if len(A) == 1 else A
    z = _as_complex(x)
    yv = y.numpy().astype(np.complex128).reshape(B, -1)
    Ax = np.stack([A[b] @ z[b] for b in range(B)])
    AHy = np.stack([A[b].conj().T @ yv[b] for b in range(B)])
    r = Ax - yv  # y = M y, so this is M (F S x - y)
    AHr = np.stack([A[b].conj().T @ r[b] for b in range(B)])
    AHAx = np.stack([A[b].conj().T @ Ax[b] for b in range(B)])

    assert_close("forward", FM.mri_forward(x, mask, smaps), torch.from_numpy(Ax.reshape(y.shape)))
    assert_close("adjoint", FM.mri_adjoint(y, mask, smaps), _as_channels(AHy, H, W))
    assert_close("normal", FM.mri_normal(x, mask, smaps), _as_channels(AHAx, H, W))
    loss, grad = FM.mri_fidelity(x, y, mask, smaps)
    assert_close("loss", loss, torch.from_numpy((np.abs(r) ** 2).sum(1)))
    assert_close("grad", grad, _as_channels(2 * AHr, H, W))

    # coil-wise DC: S^H D2^H ((1 - w m) D2 S z + w m y)
    D2 = np.kron(centred_dft(H), centred_dft(W))
    for lam in (math.inf, 0.4):
        w = 1.0 if math.isinf(lam) else lam / (1 + lam)
        want = []
        for b in range(B):
            m = (mask[b] if batched else mask).double().numpy().ravel()
            s = np.ones((1, H * W)) if smaps is None else (smaps[b] if batched else smaps).numpy().reshape(n_coils, -1)
            yb = yv[b].reshape(n_coils, -1)
            want.append(sum(s[c].conj() * (D2.conj().T @ ((1 - w * m) * (D2 @ (s[c] * z[b])) + w * m * yb[c]))
                            for c in range(n_coils)))
        assert_close(f"dc(lam={lam})", FM.mri_dc(x, y, mask, smaps, lam), _as_channels(np.stack(want), H, W))


# ---------------------------------------------------------------------------------------------
# operator properties, on every available device


@pytest.mark.parametrize("n_coils,batched", [(1, False), (4, False), (4, True)])
def test_adjointness(device, n_coils, batched):
    x, mask, smaps, _ = _setup(n_coils, 17, 13, batched=batched, device=device)
    op = MRI(mask, smaps)
    g = torch.Generator().manual_seed(5)
    y = complex_randn(x.shape[0], n_coils, 17, 13, gen=g).to(device)
    assert_adjoint("MRI", op, x, y)


def test_norm(device):
    H, W = 16, 12
    x_like = torch.zeros(2, 2, H, W, device=device)
    full = torch.ones(H, W, device=device)
    one = torch.ones(2, dtype=torch.float64, device=device)
    assert_close("norm", MRI(full).norm(x_like, iters=20), one, dtype=torch.float32)
    mask = equispaced_mask((H, W), 4, acs_lines=2).to(device)
    # single coil: ‖M F‖ = 1 for any non-empty mask (F unitary, M a projection)
    assert_close("norm(mask)", MRI(mask).norm(x_like, iters=20), one, dtype=torch.float32)
    maps = birdcage_maps(4, (H, W)).to(device)
    assert_close("norm(maps)", MRI(full, maps).norm(x_like, iters=20), one, dtype=torch.float32)
    assert float(MRI(mask, maps).norm(x_like, iters=50).max()) <= 1 + 1e-5


def test_operator_buffers_and_properties(device):
    mask = equispaced_mask((9, 12), 4, acs_lines=2)
    op = MRI(mask, birdcage_maps(3, (9, 12))).to(device)
    assert op.mask.device.type == device.type and op.smaps.device.type == device.type
    assert op.img_size == (9, 12) and op.n_coils == 3 and not op.single_coil
    assert set(op.state_dict()) == {"mask", "smaps"}
    single = MRI(mask.bool().numpy())  # arrays and bool masks are accepted, stored as float32
    assert single.mask.dtype == torch.float32 and single.n_coils == 1 and single.single_coil


@pytest.mark.parametrize("n_coils", [1, 3])
def test_fidelity_grad_matches_autograd_through_reference(device, n_coils):
    x, mask, smaps, y = _setup(n_coils, 11, 10, device=device)
    op = MRI(mask, smaps)
    loss, grad = op.fidelity(x, y)
    xr = x.clone().requires_grad_()
    loss_ref = R.mri_fidelity(xr, y, mask, smaps)[0]
    loss_ref.sum().backward()
    assert_close("loss", loss, loss_ref)
    assert_close("grad", grad, xr.grad)
    # fidelity_loss is differentiable and weights each problem's gradient by its cotangent
    weights = torch.tensor([0.5, 2.0], device=device)
    xl = x.clone().requires_grad_()
    (weights * op.fidelity_loss(xl, y)).sum().backward()
    assert_close("fidelity_loss grad", xl.grad, weights[:, None, None, None] * grad)


@pytest.mark.parametrize("n_coils", [1, 3])
def test_autograd_formulas_match_reference(device, n_coils):
    """Registered backward formulas equal autograd through the plain-PyTorch reference."""
    x, mask, smaps, y = _setup(n_coils, 7, 6, device=device)
    g = torch.Generator().manual_seed(9)
    cot_k = complex_randn(*y.shape, gen=g).to(device)
    cot_x = torch.randn(x.shape, generator=g).to(device)

    def grads(fn, inputs, cot):
        inputs = [t.clone().requires_grad_() for t in inputs]
        out = fn(*inputs)
        return torch.autograd.grad(out, inputs, cot)

    cases = [
        (lambda a: ops.mri_forward(a, mask, smaps), lambda a: R.mri_forward(a, mask, smaps), [x], cot_k),
        (lambda b: ops.mri_adjoint(b, mask, smaps), lambda b: R.mri_adjoint(b, mask, smaps), [y], cot_x),
        (lambda a: ops.mri_normal(a, mask, smaps), lambda a: R.mri_normal(a, mask, smaps), [x], cot_x),
        (lambda a, b: ops.mri_dc(a, b, mask, smaps, 0.6), lambda a, b: R.mri_dc(a, b, mask, smaps, 0.6), [x, y], cot_x),
        (lambda a, b: ops.mri_dc(a, b, mask, smaps, math.inf), lambda a, b: R.mri_dc(a, b, mask, smaps, math.inf),
         [x, y], cot_x),
        (lambda a, b: ops.mri_fidelity(a, b, mask, smaps)[0], lambda a, b: R.mri_fidelity(a, b, mask, smaps)[0],
         [x, y], torch.tensor([0.3, -1.2], device=device)),
    ]
    names = ["forward", "adjoint", "normal", "dc", "dc(lam=inf)", "fidelity"]
    for name, (fused, ref, inputs, cot) in zip(names, cases, strict=True):
        for i, (got, want) in enumerate(zip(grads(fused, inputs, cot), grads(ref, inputs, cot))):
            assert_close(f"{name} grad of input {i}", got, want)


def test_single_coil_data_consistency(device):
    x, mask, _, y = _setup(1, 12, 9, device=device)
    op = MRI(mask)
    p = op.project(x, y)
    assert_close("A project", op(p), y)  # A x = y on the sampled entries (y is zero elsewhere)
    assert_close("project twice", op.project(p, y), p)  # idempotent
    # the k-space entries off the mask are untouched
    kx, kp = R.fft2c(R.to_complex(x)), R.fft2c(R.to_complex(p))
    assert_close("unsampled k-space", (1 - mask) * kp, (1 - mask) * kx)
    assert_close("dc", op.dc(x, y), p)
    # prox: closed form = generic CG on (I + γ A^H A) x = z + γ A^H y, and the optimality condition
    for gamma in (0.3, 5.0):
        px = op.prox_l2(x, y, gamma)
        cg = LinearOperator.prox_l2(op, x, y, gamma, iters=200)
        assert_close("prox_l2 vs CG", px, cg)
        # ∇ of the prox objective is zero: px + γ ∇f(px) / 2 = x
        assert_close("prox_l2 optimality", px + gamma * op.fidelity(px, y)[1] / 2, x)
        assert_close("dc(gamma)", op.dc(x, y, gamma), px)
    assert_close("prox_l2(0)", op.prox_l2(x, y, 0.0), x)
    assert_close("prox_l2(1e7)", op.prox_l2(x, y, 1e7), p)
    assert_close("pinv", op.pinv(y), op.zero_filled(y))
    assert_close("A pinv", op(op.pinv(y)), y)


def test_multi_coil_data_consistency(device):
    H, W = 12, 10
    x, mask, _, _ = _setup(3, H, W, device=device)
    maps = birdcage_maps(3, (H, W)).to(device)
    op = MRI(mask, maps)
    y = op(torch.randn(x.shape, generator=torch.Generator().manual_seed(3)).to(device))
    p = op.project(x, y, iters=200)
    assert_close("A project", op(p), y)  # by CG
    for gamma in (0.5, 20.0):
        px = op.prox_l2(x, y, gamma, iters=200)
        # CG stops at its own tolerance
        assert_close("prox_l2 optimality", px + gamma * op.fidelity(px, y)[1] / 2, x, factor=10)
    assert_close("prox_l2(0)", op.prox_l2(x, y, 0.0), x)
    # coil-wise DC with lam = 0 is S^H S x = x for normalised maps
    assert_close("dc(0)", op.dc(x, y, 0.0), x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_are_supported(device, dtype):
    x, mask, smaps, y = _setup(3, 9, 8, device=device)
    op = MRI(mask, smaps)
    xh = x.to(dtype)
    assert_close("forward", op(xh), R.mri_forward(xh.float(), mask, smaps), dtype=torch.float32)
    out = op.dc(xh, y, 0.5)
    assert out.dtype == dtype
    assert_close("dc", out, R.mri_dc(xh.float(), y, mask, smaps, 0.5))
    loss, grad = op.fidelity(xh, y)
    assert grad.dtype == dtype
    assert_close("loss", loss, R.mri_fidelity(xh.float(), y, mask, smaps)[0], dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# opcheck and validation


@pytest.mark.parametrize("n_coils,batched", [(1, False), (3, True)])
def test_opcheck(n_coils, batched):
    x, mask, smaps, y = _setup(n_coils, 5, 4, batched=batched)
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    for args in [(x, mask, smaps), (xg, mask, smaps)]:
        torch.library.opcheck(ops.mri_forward.default, args)
        torch.library.opcheck(ops.mri_normal.default, args)
    for yy in (y, yg):
        torch.library.opcheck(ops.mri_adjoint.default, (yy, mask, smaps))
    for xx, yy in [(x, y), (xg, yg)]:
        torch.library.opcheck(ops.mri_fidelity.default, (xx, yy, mask, smaps))
        for lam in (math.inf, 0.5):
            torch.library.opcheck(ops.mri_dc.default, (xx, yy, mask, smaps, lam))


def test_bad_inputs_raise():
    x, mask, smaps, y = _setup(3, 9, 8)
    with pytest.raises(ValueError, match="2 channels"):
        FM.mri_forward(x[:, :1], mask, smaps)
    with pytest.raises(ValueError, match="x has dtype float64"):
        FM.mri_forward(x.double(), mask, smaps)
    with pytest.raises(ValueError, match="x has image size"):
        FM.mri_forward(x[..., :7], mask, smaps)
    with pytest.raises(ValueError, match="mask has dtype"):
        FM.mri_forward(x, mask.bool(), smaps)
    with pytest.raises(ValueError, match="mask has batch size 3"):
        FM.mri_forward(x, mask.expand(3, 9, 8), smaps)
    with pytest.raises(ValueError, match="smaps has dtype"):
        FM.mri_forward(x, mask, smaps.to(torch.complex128))
    with pytest.raises(ValueError, match="smaps has image size"):
        FM.mri_forward(x, mask, smaps[..., :7])
    with pytest.raises(ValueError, match=r"y has shape \(2, 1, 9, 8\)"):
        FM.mri_fidelity(x, y[:, :1], mask, smaps)
    with pytest.raises(ValueError, match="y has dtype"):
        FM.mri_adjoint(y.real, mask, smaps)
    bad = y.clone()
    bad[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="y contains non-finite"):
        FM.mri_dc(x, bad, mask, smaps)
    with pytest.raises(ValueError, match="y contains non-finite"):
        FM.mri_fidelity(x, bad, mask, smaps)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        FM.mri_dc(x, y, mask, smaps, -1.0)
    op = MRI(mask, smaps)
    with pytest.raises(ValueError, match="y contains non-finite"):
        op.check_measurement(bad)
    with pytest.raises(ValueError, match="x has image size"):
        op(torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        op.prox_l2(x, y, -1.0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        MRI(mask * 0.5)
    with pytest.raises(ValueError, match="smaps must be complex"):
        MRI(mask, smaps.real)


@pytest.mark.gpu
def test_device_mismatch_raises():
    x, mask, smaps, y = _setup(3, 9, 8)
    with pytest.raises(ValueError, match="same device"):
        FM.mri_forward(x.cuda(), mask, smaps)


# ---------------------------------------------------------------------------------------------
# coil maps


def test_birdcage_maps():
    maps = birdcage_maps(8, (33, 24))
    assert maps.shape == (8, 33, 24) and maps.dtype == torch.complex64
    assert_close("sum of |S|^2", maps.abs().square().sum(0), torch.ones(33, 24))
    # each coil is brightest towards its own side of the field of view: distinct magnitude peaks
    peaks = {int(m.abs().argmax()) for m in maps}
    assert len(peaks) == 8
    with pytest.raises(ValueError, match="n_coils"):
        birdcage_maps(0, (8, 8))
    with pytest.raises(ValueError, match="shape"):
        birdcage_maps(4, (8,))


def test_estimate_coil_maps_exact_when_nothing_varies_along_the_readout():
    """Maps and image constant along W put all k-space in the centre column, which the ACS window
    keeps whole: the estimate is the true maps times the image's phase, exactly."""
    g = torch.Generator().manual_seed(0)
    C, H, W = 5, 24, 32
    S = complex_randn(C, H, 1, gen=g).expand(C, H, W)
    S = S / S.abs().square().sum(0, keepdim=True).sqrt()
    x = complex_randn(1, H, 1, gen=g).expand(1, H, W)
    for acs in (1, 6, 8, W):
        est = estimate_coil_maps(R.fft2c(S * x), acs)
        assert est.shape == (C, H, W) and est.dtype == torch.complex64
        assert_close(f"maps(acs={acs})", est, S * (x / x.abs()))


def test_estimate_coil_maps_recovers_birdcage_maps_up_to_phase():
    """Smooth (birdcage) maps times a smooth complex image: the estimate has Σ|Ŝ|² = 1 and equals the
    true maps up to one phase per pixel, closer the more ACS columns it sees."""
    C, H, W = 4, 48, 64
    S = birdcage_maps(C, (H, W))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    x = (0.5 + torch.exp(-(xx**2 + yy**2) / 0.5)) * torch.exp(1j * (0.8 * xx + 0.5 * yy))
    errs = []
    for acs in (8, 24, 64):
        est = estimate_coil_maps(R.fft2c(S * x), acs)
        assert_close("sum of |S|^2", est.abs().square().sum(0), torch.ones(H, W))
        phase = (est * S.conj()).sum(0)  # e^{iφ} Σ|S|² = e^{iφ} where the estimate is exact
        errs.append(rel_err(est, S * phase / phase.abs()))
    assert errs[0] > errs[1] > errs[2] and errs[1] < 0.15


def test_estimate_coil_maps_from_acs_columns_off_the_default_start():
    """ACS columns at ``start``: the same maps as from k-space rolled so that they sit at fastMRI's
    default start, up to the per-pixel phase of that roll (one phase shared by the coils)."""
    g = torch.Generator().manual_seed(1)
    C, H, W, acs = 4, 20, 33, 7
    k = R.fft2c(birdcage_maps(C, (H, W)) * (1 + complex_randn(1, H, W, gen=g).abs()))
    default = (W - acs + 1) // 2
    assert torch.equal(estimate_coil_maps(k, acs, default), estimate_coil_maps(k, acs))
    for start in (default - 3, default + 2):
        est = estimate_coil_maps(k, acs, start)
        ref = estimate_coil_maps(torch.roll(k, default - start, dims=-1), acs)
        assert_close("|maps|", est.abs(), ref.abs())
        assert_close("shared phase", (est * ref.conj()).sum(0).abs(), torch.ones(H, W))
        assert rel_err(est, ref) > 0.1  # the phases differ: the test sees which columns were used
    with pytest.raises(ValueError, match="outside the 33 k-space columns"):
        estimate_coil_maps(k, acs, W - 3)


def test_estimate_coil_maps_bad_inputs():
    k = torch.zeros(2, 8, 8, dtype=torch.complex64)
    with pytest.raises(ValueError, match="complex"):
        estimate_coil_maps(k.real, 4)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        estimate_coil_maps(k[0], 4)
    for acs in (0, 9):
        with pytest.raises(ValueError, match="acs"):
            estimate_coil_maps(k, acs)


@pytest.mark.parametrize("shape", [(5, 8), (3, 4, 7)])
@pytest.mark.parametrize("coils", [1, 3])
def test_coil_combined_is_the_adjoint_of_full_sampling(shape, coils):
    """The coil-combined image of fully sampled k-space equals A^H of the operator with an all-ones
    mask (odd and even sizes, 2-D and 3-D; one coil without maps)."""
    gen = torch.Generator().manual_seed(3)
    k = complex_randn(coils, *shape, gen=gen)
    smaps = complex_randn(coils, *shape, gen=gen) if coils > 1 else None
    op = (MRI if len(shape) == 2 else MRI3D)(torch.ones(shape), smaps)
    got = coil_combined(k, smaps)
    assert got.shape == (1, 2, *shape)
    assert_close("coil_combined", got, op.adjoint(k[None]))
