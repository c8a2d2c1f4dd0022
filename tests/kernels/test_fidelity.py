"""Fused masked fidelity ``(Σ (m x − y)², 2 m (m x − y))``: the kernel against the reference and
against autograd through the plain expression (broadcast / bool masks, mask=None, strided inputs,
fp32/fp16/bf16/fp64, NaN-poisoned output), the differentiable op against gradcheck in float64,
opcheck and input validation. Kernels run in the interpreter on CPU and compiled on CUDA."""
import pytest
import torch

import fastsd.functional.fidelity as FF
from fastsd.kernels import fidelity as K
from fastsd.kernels import utils as KU
from fastsd.reference import fidelity as R
from fastsd.testing import assert_close, poisoned_like

# x/y shape, mask shape (None: identity), mask kind
CASES = [
    ((3, 5, 7, 9), None, "float"),
    ((3, 5, 7, 9), (1, 1, 7, 9), "float"),
    ((2, 1, 13, 11), (2, 1, 13, 11), "bool"),
    ((3, 5, 7, 9), (3, 1, 7, 9), "bool"),
    ((2, 3, 13, 11), (13, 11), "float"),  # fewer dims than x
    ((4, 37), (4, 1), "float"),
]


def _ids(c):
    return "x".join(map(str, c[0])) + "-m" + ("none" if c[1] is None else "x".join(map(str, c[1])) + c[2])


def _problem(shape, mask_shape, kind, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    y = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    if mask_shape is None:
        return x, y, None
    u = torch.rand(mask_shape, generator=g)
    mask = (u < 0.6) if kind == "bool" else u  # float masks: arbitrary weights, not just 0/1
    return x, y, mask.to(device)


def _expr(x, y, mask):
    """Loss by the plain expression in float64 and its gradient by autograd (an independent path)."""
    xr = x.detach().double().requires_grad_(True)
    m = 1.0 if mask is None else mask.double()
    loss = (m * xr - y.double()).square().reshape(x.shape[0], -1).sum(1)
    loss.sum().backward()
    return loss.detach(), xr.grad


@pytest.mark.parametrize("block", [1024, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_kernel_matches_reference_and_autograd(case, dtype, block, kernel_device):
    x, y, mask = _problem(*case, dtype, kernel_device)
    out = poisoned_like(x)
    loss, grad = K.masked_fidelity(x, y, mask, out=out, block=block)
    assert grad.data_ptr() == out.data_ptr() and not grad.isnan().any()
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert loss.shape == (x.shape[0],) and loss.dtype == acc and grad.dtype == dtype
    ref_loss, ref_grad = R.masked_fidelity(x, y, mask)
    assert ref_loss.dtype == acc and ref_grad.dtype == dtype
    assert_close("loss", loss, ref_loss, dtype=dtype)
    assert_close("grad", grad, ref_grad, dtype=dtype)
    want_loss, want_grad = _expr(x, y, mask)
    assert_close("loss", loss, want_loss, dtype=dtype)
    assert_close("grad", grad, want_grad, dtype=dtype)
    assert_close("reference loss", ref_loss, want_loss, dtype=dtype)
    assert_close("reference grad", ref_grad, want_grad, dtype=dtype)


def test_strided_inputs(kernel_device):
    """Permuted, sliced and > 3-dim unmergeable layouts are read through their strides."""
    g = torch.Generator().manual_seed(1)
    base_x = torch.randn(2, 6, 5, 4, 3, generator=g).to(kernel_device)
    base_y = torch.randn(2, 6, 5, 4, 3, generator=g).to(kernel_device)
    views = [lambda t: t.permute(0, 3, 1, 2, 4)[..., 1], lambda t: t[:, ::2, :, ::2],
             lambda t: t.permute(0, 4, 3, 2, 1)]
    for view in views:
        x, y = view(base_x), view(base_y)
        assert not x.is_contiguous()
        mask = (torch.rand(x.shape[-2:], generator=g) < 0.5).to(kernel_device).t().contiguous().t()
        loss, grad = K.masked_fidelity(x, y, mask, out=poisoned_like(x.contiguous()))
        want_loss, want_grad = _expr(x, y, mask)
        assert_close("loss", loss, want_loss)
        assert_close("grad", grad, want_grad)
        assert grad.is_contiguous()


def test_int64_index_path(kernel_device, monkeypatch):
    """The int64 within-problem index path (taken for > 2^31 elements per problem), forced on a
    small tensor so it is compiled and checked."""
    x, y, mask = _problem((2, 3, 13, 11), (1, 1, 13, 11), "float", torch.float32, kernel_device)
    want = K.masked_fidelity(x, y, mask, block=64)
    monkeypatch.setattr(KU, "needs_int64", lambda n, b: True)
    got = K.masked_fidelity(x, y, mask, block=64)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_empty_batch(kernel_device):
    x = torch.empty(0, 3, 4, device=kernel_device)
    loss, grad = K.masked_fidelity(x, x, None)
    assert loss.shape == (0,) and grad.shape == x.shape
    loss, grad = R.masked_fidelity(x, x, None)
    assert loss.shape == (0,) and grad.shape == x.shape


# -- public op --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3]], ids=_ids)
def test_public_op_value_and_backward(case, device, maybe_compile):
    """Values and the backward of ``Σ_b w_b loss_b`` (weights per problem) in x, y and a float mask
    against autograd through the plain expression, eager and under torch.compile(fullgraph=True)."""
    op = maybe_compile(lambda x, y, m: FF.masked_fidelity(x, y, m, validate=False))
    x, y, mask = _problem(*case, torch.float32, device)
    if mask is not None:
        mask = mask.float()
    w = torch.tensor([1.0, -2.0, 0.5], device=device)
    xl, yl = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    ml = None if mask is None else mask.clone().requires_grad_(True)
    loss, grad = op(xl, yl, ml)
    (loss * w).sum().backward()
    xr, yr = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    mr = None if mask is None else mask.clone().requires_grad_(True)
    ref = ((1.0 if mr is None else mr) * xr - yr).square().flatten(1).sum(1)
    (ref * w).sum().backward()
    assert_close("loss", loss, ref)
    assert_close("grad", grad, 2 * (1.0 if mask is None else mask) * ((1.0 if mask is None else mask) * x - y))
    for got, want in ((xl.grad, xr.grad), (yl.grad, yr.grad)) + (() if mask is None else ((ml.grad, mr.grad),)):
        assert_close("input gradient", got, want)


@pytest.mark.parametrize("mask_shape", [None, (1, 1, 3, 4), (2, 1, 3, 4)])
def test_gradcheck_float64(mask_shape):
    """Both outputs (loss and grad) of the differentiable op, in x, y and the mask, against finite
    differences in float64 (reference path on CPU)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    inputs = (x, y)
    if mask_shape is not None:
        inputs += (torch.rand(mask_shape, generator=g, dtype=torch.float64, requires_grad=True),)
    assert torch.autograd.gradcheck(lambda *t: FF.masked_fidelity(*t), inputs)


def test_residual_loss(device):
    g = torch.Generator().manual_seed(2)
    z, y = (torch.randn(3, 2, 5, 7, generator=g).to(device) for _ in range(2))
    loss, grad = FF.residual_loss(z, y)
    want_loss, want_grad = _expr(z, y, None)
    assert_close("loss", loss, want_loss)
    assert_close("grad", grad, want_grad)


@pytest.mark.parametrize("mask_shape", [None, (1, 1, 5, 6)])
def test_opcheck(device, mask_shape):
    x, y, mask = _problem((2, 3, 5, 6), mask_shape, "float", torch.float32, device)
    args = (x.requires_grad_(True), y, None if mask is None else mask.requires_grad_(True))
    torch.library.opcheck(torch.ops.fastsd.masked_fidelity.default, args)


def test_bad_inputs_raise():
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    nan_y = y.clone()
    nan_y[1, 2, 3] = float("nan")
    cases = [
        (lambda: FF.masked_fidelity(x.long(), y), "x has dtype int64"),
        (lambda: FF.masked_fidelity(x, y.to(torch.complex64)), "y has dtype complex64"),
        (lambda: FF.masked_fidelity(torch.tensor(1.0), torch.tensor(1.0)), "batch dimension"),
        (lambda: FF.masked_fidelity(x, y[:, :2]), r"y has shape \(2, 2, 4\); expected x's shape \(2, 3, 4\)"),
        (lambda: FF.masked_fidelity(x, y, torch.ones(3, 3)), r"mask of shape \(3, 3\) cannot be broadcast"),
        (lambda: FF.masked_fidelity(x, y, torch.ones(1, 2, 3, 4)), r"mask of shape \(1, 2, 3, 4\) cannot be broadcast"),
        (lambda: FF.masked_fidelity(x, y, torch.ones(3, 4, dtype=torch.int32)), "mask has dtype int32"),
        (lambda: FF.masked_fidelity(x, y, "mask"), "mask must be a torch.Tensor"),
        (lambda: FF.masked_fidelity(x, y.to("meta")), "same device"),
        (lambda: FF.masked_fidelity(x, y, torch.ones(3, 4, device="meta")), "same device"),
        (lambda: FF.masked_fidelity(x, nan_y), "y contains non-finite"),
        (lambda: FF.residual_loss(x, nan_y), "y contains non-finite"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fn()
    FF.masked_fidelity(x, nan_y, validate=False)  # hot loops skip the scan


def test_launcher_rejects_wrong_out_buffer():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="out must be a contiguous"):
        K.masked_fidelity(x, x, None, out=torch.empty(2, 3, dtype=torch.float64))
