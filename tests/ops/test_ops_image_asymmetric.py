"""Blur with kernels whose transfer function is complex: random, even-sized and off-centre ones.

A point-symmetric kernel (every Gaussian or centred motion kernel of odd size) has a real transfer
function, so an adjoint that forgets the complex conjugate, or a forward that flips the kernel,
still passes every check on it. These kernels do not forgive that: adjointness, the dense matrix
(adjoint = transpose, normal, prox, pinv, project) and the forward against a direct circular
convolution by rolls, on odd and even image sizes.
"""
import math

import pytest
import torch

from fastsd.ops.image import Blur, anisotropic_gaussian_kernel, motion_kernel
from fastsd.testing import assert_adjoint, assert_close

KERNELS = {
    "random3x3": lambda: torch.rand(3, 3, generator=torch.Generator().manual_seed(7)),
    "random4x5": lambda: torch.rand(4, 5, generator=torch.Generator().manual_seed(8)),
    "anisotropic-even6": lambda: anisotropic_gaussian_kernel(1.5, 0.6, 25.0, size=6),
    "motion-even8": lambda: motion_kernel(5.0, 35.0, size=8),
    "motion-offcentre": lambda: torch.nn.functional.pad(motion_kernel(3.0, 0.0), (0, 2, 1, 0)),
}
SIZES = [(7, 9), (8, 10), (9, 6)]
CASES = [(k, s) for k in KERNELS for s in SIZES]
IDS = [f"{k}-{s[0]}x{s[1]}" for k, s in CASES]


def _kernel(name, dtype=torch.float64):
    k = KERNELS[name]().to(dtype)
    return k / k.sum()


def test_kernels_have_complex_transfer_functions():
    """Otherwise this file would test nothing that the symmetric kernels do not."""
    for name in KERNELS:
        op = Blur(_kernel(name), (8, 10))
        imag = torch.view_as_complex(op.transfer).imag.abs().max()
        assert float(imag) > 1e-3, name


def _rolled(x, k):
    """Circular convolution by rolls: y[i, j] = Σ k[a, b] x[i − (a − kh//2), j − (b − kw//2)]."""
    kh, kw = k.shape
    y = torch.zeros_like(x)
    for a in range(kh):
        for b in range(kw):
            y = y + k[a, b] * torch.roll(x, (a - kh // 2, b - kw // 2), dims=(-2, -1))
    return y


@pytest.mark.parametrize("kname,size", CASES, ids=IDS)
def test_forward_is_circular_convolution(kname, size):
    k = _kernel(kname)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert_close("blur", Blur(k, size)(x), _rolled(x, k))


@pytest.mark.parametrize("kname,size", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adjoint_identity(kname, size, dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2, *size, generator=g, dtype=dtype)
    y = torch.randn(2, 2, *size, generator=g, dtype=dtype)
    assert_adjoint(kname, Blur(_kernel(kname, dtype), size), x, y)


@pytest.mark.parametrize("kname,size", CASES, ids=IDS)
def test_dense_matrix(kname, size):
    op = Blur(_kernel(kname), size)
    n = math.prod(size)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *size)
    M = op(eye).reshape(n, n).T  # column j = A e_j
    assert_close("adjoint = transpose", op.adjoint(eye).reshape(n, n).T, M.T)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, n, generator=g, dtype=torch.float64)
    y = torch.randn(1, n, generator=g, dtype=torch.float64)
    xi, yi = x.reshape(1, 1, *size), y.reshape(1, 1, *size)
    assert_close("forward", op(xi).reshape(1, n), x @ M.T)
    assert_close("normal", op.normal(xi).reshape(1, n), x @ (M.T @ M))
    gamma = 0.7
    prox = torch.linalg.solve(torch.eye(n, dtype=torch.float64) + gamma * M.T @ M, (x + gamma * y @ M).T).T
    assert_close("prox_l2", op.prox_l2(xi, yi, gamma).reshape(1, n), prox, factor=100)  # a solve
    P = torch.linalg.pinv(M, rtol=op.pinv_threshold)
    assert_close("pinv", op.pinv(yi).reshape(1, n), y @ P.T, factor=1e3)  # ill-conditioned solves
    assert_close("project", op.project(xi, yi).reshape(1, n), x - (x @ M.T - y) @ P.T, factor=1e3)
