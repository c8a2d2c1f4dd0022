"""Fused train-mode BatchNorm + ReLU: kernel against the reference and both against autograd
through ``F.batch_norm(training=True)`` + ReLU in float64 (an independent path), on NCHW and
channels-last inputs, odd sizes, a large channel mean, NaN-poisoned outputs; the custom op against
opcheck; :func:`fuse_bn_relu` networks against the unfused ones. Kernels run in the interpreter on
CPU and compiled on CUDA."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastsd.functional.batchnorm as FB
from fastsd.kernels import batchnorm as K
from fastsd.nets.fused import BatchNormReLU, fuse_bn_relu
from fastsd.nets.unet import UNet
from fastsd.reference import batchnorm as R
from fastsd.testing import assert_close, assert_same_network

SHAPES = [(1, 5, 7, 9), (2, 3, 13, 11), (1, 70, 6, 5), (3, 4, 1, 1), (4, 6)]


def _problem(shape, dtype, device, channels_last=False, offset=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    x = (torch.randn(shape, generator=g) * 1.5 + offset + torch.randn(C, generator=g).reshape((1, C) + (1,) * (len(shape) - 2)))
    w = 1.0 + 0.3 * torch.randn(C, generator=g)
    b = 0.2 * torch.randn(C, generator=g)
    dy = torch.randn(shape, generator=g)
    x = x.to(device=device, dtype=dtype)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32  # affine parameters stay float32
    return x, w.to(device, pdtype), b.to(device, pdtype), dy.to(device=device, dtype=dtype)


def _autograd(x, w, b, dy, eps):
    """Forward and gradients by autograd through PyTorch's own batch norm, in float64."""
    xd, wd, bd = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    y = F.relu(F.batch_norm(xd, None, None, wd, bd, training=True, eps=eps))
    y.backward(dy.double())
    return y.detach(), xd.grad, wd.grad, bd.grad


def _factor(dtype):
    """float32 statistics over a few hundred values round at 10x the table's float32 tolerance."""
    return 10 if dtype == torch.float32 else 1


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_reference_and_autograd(shape, dtype, channels_last, kernel_device):
    eps = 1e-5
    x, w, b, dy = _problem(shape, dtype, kernel_device, channels_last, seed=sum(shape))
    y_ref, dx_ref, dw_ref, db_ref = _autograd(x, w, b, dy, eps)
    for impl in (K, R):
        y, mean, rstd = impl.bn_relu_forward(x, w, b, eps)
        assert y.dtype == dtype and y.shape == x.shape and not y.isnan().any()
        assert y.stride() == x.stride()  # memory format kept
        name, f = impl.__name__, _factor(dtype)
        assert_close(f"{name} y", y, y_ref, factor=f)
        dx, dw, db = impl.bn_relu_backward(dy, x, w, b, mean, rstd)
        assert dx.dtype == dtype and dw.dtype == w.dtype and not dx.isnan().any()
        storages = {t.untyped_storage().data_ptr() for t in (dx, dw, db)}
        assert len(storages) == 3, "outputs of a custom op must not alias each other"
        assert_close(f"{name} dx", dx, dx_ref, factor=5 * f)
        assert_close(f"{name} dweight", dw, dw_ref, dtype=dtype, factor=5 * f)
        assert_close(f"{name} dbias", db, db_ref, dtype=dtype, factor=5 * f)


def test_large_mean_keeps_the_variance(kernel_device):
    """A channel mean 1e3 times its spread: naive float32 Σx² − (Σx)² loses the variance."""
    x, w, b, dy = _problem((1, 8, 33, 31), torch.float32, kernel_device, channels_last=True, offset=3000.0)
    y_ref = _autograd(x, w, b, dy, 1e-5)[0]
    y, _, _ = K.bn_relu_forward(x, w, b, 1e-5)
    assert_close("y", y, y_ref, factor=100)  # float32 with a channel mean 1e3 times its spread


def test_output_and_gradient_overwrite_poison(kernel_device):
    """Outputs come from empty buffers: fill the allocator with NaN first, so a skipped element shows."""
    x, w, b, dy = _problem((2, 67, 5, 7), torch.float32, kernel_device, channels_last=True, seed=3)
    for _ in range(3):
        torch.full((4 * x.numel(),), float("nan"), device=kernel_device)
    y, mean, rstd = K.bn_relu_forward(x, w, b, 1e-5)
    dx, dw, db = K.bn_relu_backward(dy, x, w, b, mean, rstd)
    assert torch.isfinite(y).all() and torch.isfinite(dx).all() and torch.isfinite(dw).all()


def test_strided_dy_and_non_mergeable_input(kernel_device):
    x, w, b, dy = _problem((2, 5, 8, 6), torch.float32, kernel_device, seed=4)
    xt = x.transpose(2, 3)  # spatial dims that do not merge: copied to contiguous
    dyt = dy.transpose(2, 3).contiguous(memory_format=torch.channels_last)
    y_ref, dx_ref, dw_ref, _ = _autograd(xt, w, b, dyt, 1e-5)
    y, mean, rstd = K.bn_relu_forward(xt, w, b, 1e-5)
    dx, dw, _ = K.bn_relu_backward(dyt, xt, w, b, mean, rstd)
    f = _factor(torch.float32)
    assert_close("y", y, y_ref, factor=f)
    assert_close("dx", dx, dx_ref, factor=5 * f)
    assert_close("dweight", dw, dw_ref, factor=5 * f)


def test_op_gradcheck_and_opcheck(device):
    x, w, b, _ = _problem((2, 3, 5, 4), torch.float64, device, seed=5)
    inputs = tuple(t.detach().double().requires_grad_(True) for t in (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w, b: FB.bn_relu(x, w, b), inputs)
    xf, wf, bf, _ = _problem((2, 3, 5, 4), torch.float32, device, seed=6)
    torch.library.opcheck(torch.ops.fastsd.bn_relu.default, (xf, wf, bf, 1e-5))
    torch.library.opcheck(torch.ops.fastsd.bn_relu.default, (xf.requires_grad_(True), wf.requires_grad_(True), bf, 1e-5))


def test_validation():
    x = torch.randn(2, 3, 4, 4)
    w, b = torch.ones(3), torch.zeros(3)
    with pytest.raises(ValueError, match="weight must have shape"):
        FB.bn_relu(x, torch.ones(4), b)
    with pytest.raises(ValueError, match="more than one value per channel"):
        FB.bn_relu(torch.randn(1, 3), w, b)
    with pytest.raises(ValueError, match="dtype"):
        FB.bn_relu(x.int(), w, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_unet_matches_unfused(dtype, device):
    """fuse_bn_relu keeps parameter names and computes the same network (train mode), forward and
    weight gradients, in float32 and under bf16 autocast."""
    torch.manual_seed(0)
    net = UNet(2, 2, width=4, depth=2, seed=1).to(device)
    fused = fuse_bn_relu(UNet(2, 2, width=4, depth=2, seed=1).to(device))
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in fused.named_parameters()]
    assert any(isinstance(m, BatchNormReLU) for m in fused.modules())
    x = torch.randn(2, 2, 16, 12, device=device)
    assert_same_network(net, fused, x, dtype)


def test_running_statistics_follow_batchnorm():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=0.3)
    fused = BatchNormReLU(3, momentum=0.3)
    fused.load_state_dict(bn.state_dict())
    for _ in range(2):
        x = torch.randn(4, 3, 5, 6) * 2 + 1
        y0, y1 = F.relu(bn(x)), fused(x)
        assert_close("y", y1, y0)
    assert_close("running_mean", fused.running_mean, bn.running_mean)
    assert_close("running_var", fused.running_var, bn.running_var)
    bn.eval(), fused.eval()
    x = torch.randn(2, 3, 5, 6)
    assert_close("y (eval)", fused(x), F.relu(bn(x)), factor=0.1)
