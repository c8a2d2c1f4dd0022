"""Launch helpers shared by the kernel families (:mod:`fastsd.kernels.utils`): dim collapsing,
batch layouts with absent (``None``) inputs, per-problem strides, the batch grid, the accumulator
dtype and the grid heuristics."""
import pytest
import torch
import triton.language as tl

from fastsd.kernels import utils as KU


def test_collapse_dims():
    """Merges contiguous runs, keeps broadcast dims apart, gives up beyond three dims."""
    assert KU.collapse_dims((5, 7, 9), (63, 9, 1)) == ((1, 1, 315), [(0, 0, 1)])
    assert KU.collapse_dims((5, 7, 9), (63, 9, 1), (0, 9, 1)) == ((1, 5, 63), [(0, 63, 1), (0, 0, 1)])
    assert KU.collapse_dims((2, 3, 4, 5), (1, 2, 6, 24)) is None


def test_batch_layout_keeps_absent_inputs_and_broadcasts():
    x = torch.randn(3, 5, 7, 9)
    m = torch.rand(7, 9).expand(3, 5, 7, 9)  # stride 0 over batch and channels
    (xt, nt, mt), sizes, (sx, sn, sm) = KU.batch_layout(x.shape, x, None, m)
    assert xt is x and nt is None and mt.data_ptr() == m.data_ptr()
    assert sizes == (1, 5, 63)
    assert sx == (315, 0, 63, 1) and sm == (0, 0, 0, 1) and sn == (None,) * 4


def test_batch_layout_copies_unmergeable_dims():
    base = torch.randn(2, 3, 4, 5, 6)
    x = base.permute(0, 4, 2, 1, 3)  # four inner dims that cannot merge
    (xt,), sizes, (sx,) = KU.batch_layout(x.shape, x)
    assert xt.is_contiguous() and torch.equal(xt, x)
    assert sizes == (1, 1, 360) and sx == (360, 0, 0, 1)


def test_batch_layout_without_inputs_is_flat():
    (t,), sizes, (st,) = KU.batch_layout((4, 2, 3), None)
    assert t is None and sizes == (1, 1, 6) and st == (None,) * 4
    assert KU.is_flat({"D1": sizes[0], "D2": sizes[1]})


def test_problem_stride_and_heuristics():
    assert KU.problem_stride(None) is None
    assert KU.problem_stride(torch.tensor(0.5)) == 0
    assert KU.problem_stride(torch.rand(4, 2)[:, 1]) == 2
    assert not KU.is_flat({"D1": 1, "D2": 5})
    assert KU.is_big({"n_per": 2**31 - 1024, "BLOCK": 1024}) and not KU.is_big({"n_per": 2**31 - 1025, "BLOCK": 1024})


@pytest.mark.parametrize("bad", [(3, 2), (2, 3, "float32"), (3, 2, "t")])
def test_output_allocates_or_checks(bad):
    out = KU.output(None, (2, 3), torch.float16, "cpu")
    assert out.shape == (2, 3) and out.dtype == torch.float16
    assert KU.output(out, [2, 3], torch.float16, "cpu") is out
    wrong = torch.empty(bad[:2], dtype=torch.float32 if "float32" in bad else torch.float16)
    wrong = wrong.t() if "t" in bad else wrong  # shape (2, 3) but not contiguous
    with pytest.raises(ValueError, match=r"out must be a contiguous float16 tensor of shape \(2, 3\)"):
        KU.output(wrong, (2, 3), torch.float16, "cpu")


def test_has_heuristic():
    assert KU.has("m_ptr")({"m_ptr": torch.ones(1)}) and not KU.has("m_ptr")({"m_ptr": None})


def test_batch_grid_and_accumulator():
    """P problems of n elements: P x ceil(n / BLOCK) programs; ACC is float64 only for float64 data."""
    assert KU.batch_grid(3, 1000, 256) == (12,)
    assert KU.batch_grid(3, 1024, 256) == (12,)
    assert KU.batch_grid(0, 1000, 256) == (0,)
    assert KU.acc_type(torch.zeros(1, dtype=torch.float64)) == tl.float64
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.complex64):
        assert KU.acc_type(torch.zeros(1, dtype=dtype)) == tl.float32
