"""The classical baselines (zero-filled, CG-SENSE, L1-wavelet) against closed forms."""
import math

import pytest
import torch

import fastsd
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.image import Denoise
from fastsd.ops.matrix import MatrixOp
from fastsd.ops.mri import MRI
from fastsd.solvers import available_solvers
from fastsd.solvers.classical import Wavelet, soft
from fastsd.tasks import mri_mask
from fastsd.testing import assert_close


def _mri(H=16, W=12, coils=4, acc=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, H, W, generator=g)
    op = MRI(mri_mask((H, W), "equispaced", acc, acs=2), birdcage_maps(coils, (H, W)) if coils > 1 else None)
    return x, op, op(x)


def test_baselines_are_registered():
    assert {"zero-filled", "cg-sense", "l1-wavelet"} <= set(available_solvers())


def test_zero_filled_and_cg_sense_equal_the_operator():
    _, op, y = _mri()
    assert torch.equal(fastsd.solve(y, op, "zero-filled").x, op.adjoint(y))
    x = fastsd.solve(y, op, "cg-sense", iterations=100).x
    assert torch.equal(x, op.pinv(y, iters=100))
    # independent: CG-SENSE solves the normal equations A^H A x = A^H y
    assert_close("normal equations", op.normal(x), op.adjoint(y), factor=100)  # CG stops at its tolerance


def test_cg_sense_on_a_tall_matrix_is_least_squares():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(40, 24, generator=g, dtype=torch.float64)
    y = torch.randn(3, 40, generator=g, dtype=torch.float64)
    want = torch.linalg.lstsq(A, y.T).solution.T
    assert_close("cg-sense", fastsd.solve(y, MatrixOp(A), "cg-sense").x, want, factor=10)


@pytest.mark.parametrize("wavelet,levels", [("haar", 1), ("db2", 2)])
def test_l1_wavelet_lambda_zero_is_least_squares(wavelet, levels):
    """λ = 0 from x = 0: FISTA converges to the least-squares solution (closed form via lstsq)."""
    g = torch.Generator().manual_seed(2)
    A = torch.randn(64, 32, generator=g, dtype=torch.float64) / 8 + torch.eye(64, 32, dtype=torch.float64)
    y = torch.randn(2, 64, generator=g, dtype=torch.float64)
    want = torch.linalg.lstsq(A, y.T).solution.T
    res = fastsd.solve(y, MatrixOp(A), "l1-wavelet", lam=0.0, iterations=300, wavelet=wavelet, levels=levels)
    assert_close("l1-wavelet", res.x, want, factor=1e6)  # FISTA's error after 300 iterations


def test_l1_wavelet_lambda_zero_equals_cg_sense_on_multicoil_mri():
    _, op, y = _mri(H=16, W=16, coils=8, acc=2.0)
    want = fastsd.solve(y, op, "cg-sense", iterations=200).x
    got = fastsd.solve(y, op, "l1-wavelet", lam=0.0, iterations=400, wavelet="db2", levels=1).x
    # float32 operator, two iterative solvers; both solve A^H A x = A^H y from x = 0
    assert_close("l1-wavelet", got, want, factor=1e3)


def test_wavelet_is_orthogonal_as_a_dense_matrix():
    """W built column by column from basis images: W^T W = I, and it inverts itself."""
    H, W_ = 16, 8
    wt = Wavelet((H, W_), "db2", None)
    eye = torch.eye(H * W_, dtype=torch.float64).reshape(-1, 1, H, W_)
    cols = [torch.cat([c.reshape(H * W_, -1) for c in [co[0]] + [t for d in co[1:] for t in d]], 1)
            for co in [wt.forward(eye)]][0]
    assert cols.shape == (H * W_, H * W_)
    assert_close("W W^T", cols @ cols.T, torch.eye(H * W_, dtype=torch.float64))
    x = torch.randn(3, 2, H, W_, dtype=torch.float64)
    assert_close("inverse", wt.inverse(wt.forward(x), x), x)


def test_l1_wavelet_identity_operator_is_soft_threshold_haar_closed_form():
    """Identity operator, one Haar level: x = W^T soft(W y) with W the orthonormal pair transform,
    written out by hand (approximation kept, details shrunk by λ)."""
    g = torch.Generator().manual_seed(3)
    y = torch.randn(2, 1, 10, generator=g, dtype=torch.float64)
    lam = 0.4
    res = fastsd.solve(y, Denoise(), "l1-wavelet", lam=lam, iterations=5, wavelet="haar", levels=1)
    a = (y[..., 0::2] + y[..., 1::2]) / math.sqrt(2)
    d = soft((y[..., 0::2] - y[..., 1::2]) / math.sqrt(2), torch.tensor(lam, dtype=torch.float64))
    want = torch.stack([(a + d) / math.sqrt(2), (a - d) / math.sqrt(2)], -1).flatten(-2)
    assert_close("l1-wavelet", res.x, want)


def test_l1_wavelet_identity_operator_2d_db4_against_the_dense_transform():
    """Identity operator, 2-D db4: x = W^T soft_details(W y) with W as a dense matrix."""
    H, W_ = 16, 16
    g = torch.Generator().manual_seed(4)
    y = torch.randn(1, 1, H, W_, generator=g, dtype=torch.float64)
    wt = Wavelet((H, W_), "db4", 1)
    eye = torch.eye(H * W_, dtype=torch.float64).reshape(-1, 1, H, W_)
    co = wt.forward(eye)
    n_approx = co[0][0].numel()
    M = torch.cat([c.reshape(H * W_, -1) for c in [co[0]] + [t for d in co[1:] for t in d]], 1).T  # rows = atoms
    c = M @ y.flatten()
    lam = 0.3
    c[n_approx:] = soft(c[n_approx:], torch.tensor(lam, dtype=torch.float64))
    res = fastsd.solve(y, Denoise(), "l1-wavelet", lam=lam, iterations=3, levels=1)
    assert_close("l1-wavelet", res.x.flatten(), M.T @ c)


def test_l1_wavelet_objective_decreases_monotonically_and_rule_uses_measurements_only():
    _, op, y = _mri(H=16, W=16, coils=4, acc=4.0)
    res = fastsd.solve(y, op, "l1-wavelet", lam_rel=0.02, iterations=60)
    h = res.history["loss"]
    assert len(h) == 60 and all(b <= a for a, b in zip(h, h[1:]))
    assert h[-1] < h[0]
    # λ = lam_rel · max|details of W A^H y| per problem, from y alone
    wt = Wavelet((16, 16), "db4", None)
    lam_max = Wavelet.details(wt.forward(op.adjoint(y)), 2).abs().amax(1)
    assert_close("lam", torch.tensor(res.info["lam"], dtype=torch.float64), 0.02 * lam_max.double(),
                 dtype=torch.float32)


def test_l1_wavelet_callback_and_batch_independence():
    _, op, y = _mri(H=16, W=16)
    seen = []
    res = fastsd.solve(y, op, "l1-wavelet", iterations=10, callback=lambda i, s: seen.append(i) or i == 3)
    assert seen == [0, 1, 2, 3] and res.info["iterations"] == 4
    both = fastsd.solve(y, op, "l1-wavelet", iterations=300).x
    one = fastsd.solve(y[1:], MRI(op.mask, op.smaps), "l1-wavelet", iterations=300).x
    assert_close("batch of one", both[1:], one)


@pytest.mark.parametrize("kw,match", [
    (dict(wavelet="nope"), "unknown wavelet"),
    (dict(wavelet="bior2.2"), "not orthogonal"),
    (dict(levels=9), "levels must be"),
    (dict(lam=-1.0), "lam must be"),
    (dict(lam_rel=float("nan")), "lam_rel must be"),
    (dict(iterations=0), "iterations must be"),
])
def test_l1_wavelet_rejects_bad_options(kw, match):
    _, op, y = _mri(H=16, W=16)
    with pytest.raises(ValueError, match=match):
        fastsd.solve(y, op, "l1-wavelet", **kw)


def test_l1_wavelet_rejects_odd_sizes():
    _, op, y = _mri(H=15, W=16)
    with pytest.raises(ValueError, match="even spatial sizes of at least 14"):
        fastsd.solve(y, op, "l1-wavelet")
