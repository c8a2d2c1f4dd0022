"""Helpers shared by every layer (:mod:`fastsd._utils`) and the comparison helpers of :mod:`fastsd.testing`."""
import math

import pytest
import torch

from fastsd._utils import accumulate_dtype, dc_weight, memory_format, noise_shape, per_problem
from fastsd.testing import TOLERANCE, assert_adjoint, assert_close, rel_err


def test_per_problem_broadcasts_over_the_batch():
    like = torch.zeros(3, 2, 4, 5)
    v = torch.tensor([1.0, 2.0, 3.0])
    assert per_problem(v, like).shape == (3, 1, 1, 1)
    assert torch.equal((per_problem(v, like) * torch.ones_like(like))[:, 1, 2, 3], v)
    assert per_problem(torch.tensor(2.0), like).shape == (1, 1, 1, 1)
    assert per_problem(0.5, like) == 0.5


def test_dc_weight():
    """w = lam / (1 + lam) solves argmin_k ‖k − k0‖² + lam ‖k − y‖² as k = (1 − w) k0 + w y."""
    for lam in (0.0, 0.25, 3.0, 1e6):
        k0, y = 2.0, -1.0
        assert math.isclose((1 - dc_weight(lam)) * k0 + dc_weight(lam) * y, (k0 + lam * y) / (1 + lam))
    assert dc_weight(math.inf) == 1.0 and dc_weight(0) == 0.0


def test_accumulate_dtype():
    assert accumulate_dtype(torch.zeros(1, dtype=torch.float64)) == torch.float64
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert accumulate_dtype(torch.zeros(1, dtype=dtype)) == torch.float32


def test_rel_err_of_several_outputs_is_that_of_all_their_entries():
    """An op's (loss, grad) pair compares as one vector; a NaN in any part gives NaN."""
    loss, grad = torch.tensor([3.0, 4.0]), torch.zeros(2, 2, dtype=torch.complex64)
    got = (loss + torch.tensor([0.0, 1.0]), grad + 2j)
    expected = math.sqrt(1.0 + 4 * 4.0) / 5.0  # ‖(0, 1, 2i, 2i, 2i, 2i)‖ / ‖(3, 4, 0, 0, 0, 0)‖
    assert math.isclose(rel_err(got, (loss, grad)), expected, rel_tol=1e-12)
    assert math.isnan(rel_err((loss, torch.full_like(grad, float("nan"))), (loss, grad)))


def test_output_layouts():
    assert noise_shape(torch.zeros(2, 3, 4, dtype=torch.complex64)) == (2, 2, 3, 4)
    assert noise_shape(torch.zeros(2, 3, 4)) == (2, 3, 4)
    assert memory_format(torch.zeros(1, 3, 4, 5).contiguous(memory_format=torch.channels_last)) == torch.channels_last
    assert memory_format(torch.zeros(1, 1, 4, 5).contiguous(memory_format=torch.channels_last)) == torch.contiguous_format


def test_assert_close_uses_the_table_and_names_the_failure():
    want = torch.arange(1.0, 13.0).reshape(3, 4)
    tol = TOLERANCE[torch.float32]
    near = want * (1 + 0.5 * tol)
    assert_close("out", near, want)
    assert_close("out", want + 1e-3 * want.norm(), want, dtype=torch.bfloat16)  # looser row of the table
    off = want.clone()
    off[1, 2] += 1.0
    off[2, 3] += 2.0
    with pytest.raises(AssertionError) as err:
        assert_close("grad", off, want)
    msg = str(err.value)
    assert msg.startswith("grad: relative error") and f"{rel_err(off, want):.3g}" in msg
    assert "max abs error 2 at (2, 3)" in msg and "first index off by more than the tolerance: (1, 2)" in msg
    assert_close("grad", off, want, factor=rel_err(off, want) / tol)
    nan = want.clone()
    nan[0, 1] = float("nan")
    with pytest.raises(AssertionError, match=r"loss: relative error nan .* first index off by more than the tolerance: \(0, 1\)"):
        assert_close("loss", nan, want)
    with pytest.raises(AssertionError, match=r"y: shape \(12,\), expected \(3, 4\)"):
        assert_close("y", want.flatten(), want)


def test_assert_close_takes_numbers_as_float64():
    assert_close("norm", 2.0, torch.tensor(2.0, dtype=torch.float64) * (1 + 1e-13))
    with pytest.raises(AssertionError, match="norm: relative error 0.001"):
        assert_close("norm", 2.002, 2.0)
    assert_close("norm", 2.002, 2.0, dtype=torch.float32, factor=200)


class _Scaled(torch.nn.Module):
    """x ↦ K x along the last axis, with a chosen (possibly wrong) adjoint."""

    def __init__(self, K, adjoint_matrix):
        super().__init__()
        self.K, self.KH = K, adjoint_matrix

    def forward(self, x):
        return x @ self.K.T

    def adjoint(self, y):
        return y @ self.KH.T


def test_assert_adjoint_catches_a_wrong_adjoint():
    gen = torch.Generator().manual_seed(0)
    K = torch.randn(5, 4, generator=gen, dtype=torch.float64)  # not square, not symmetric
    x, y = torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.randn(3, 5, generator=gen, dtype=torch.float64)
    assert_adjoint("K", _Scaled(K, K.T), x, y)
    with pytest.raises(AssertionError, match=r"K: adjoint mismatch .* per problem"):
        assert_adjoint("K", _Scaled(K, K.T.flip(0)), x, y)
