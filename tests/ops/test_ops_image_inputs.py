"""Image operators (Inpainting, Denoise, Blur, Downsample) refuse bad input before computing: wrong
shapes, dtypes and devices, mismatched pairs, masks that do not fit, non-finite data and negative
gamma each raise a ValueError that names the problem."""
import pytest
import torch

from fastsd.ops.image import Blur, Denoise, Downsample, Inpainting, gaussian_kernel, motion_kernel, random_pixel_mask


def test_bad_inputs():
    op = Inpainting(random_pixel_mask((6, 8), 0.5))
    x = torch.randn(1, 2, 6, 8)
    with pytest.raises(ValueError, match="shape"):
        op(torch.randn(1, 2, 6, 9))
    with pytest.raises(ValueError, match="dimensions"):
        op(torch.randn(2, 6, 8))
    with pytest.raises(ValueError, match="dtype"):
        op(torch.ones(1, 2, 6, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="on meta"):
        op(torch.empty(1, 2, 6, 8, device="meta"))
    with pytest.raises(ValueError, match="mask of shape"):
        Inpainting(random_pixel_mask((3, 6, 8), 0.5))(x)
    with pytest.raises(ValueError, match="0 and 1"):
        Inpainting(torch.full((6, 8), 0.5))
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    for fn in (lambda: op.fidelity(x, bad), lambda: op.prox_l2(x, bad, 1.0), lambda: op.project(x, bad),
               lambda: op.pinv(bad)):
        with pytest.raises(ValueError, match="non-finite"):
            fn()
    with pytest.raises(ValueError, match="dtype"):
        op.project(x, x.double())
    blur = Blur(gaussian_kernel(1.0), (6, 8))
    with pytest.raises(ValueError, match="dtype"):
        blur(x.half())
    with pytest.raises(ValueError, match="non-finite"):
        blur.prox_l2(x, bad, 0.1)
    with pytest.raises(ValueError, match="non-finite"):
        Blur(torch.full((3, 3), float("inf")), (6, 8))
    with pytest.raises(ValueError, match="divisible"):
        Downsample(4, "avg", (6, 8))
    with pytest.raises(ValueError, match="factor"):
        Downsample(3, "avg", (6, 9))
    with pytest.raises(ValueError, match="filter"):
        Downsample(2, "lanczos", (6, 8))
    down = Downsample(2, "avg", (6, 8))
    with pytest.raises(ValueError, match=r"expected \(B, C, 3, 4\)"):
        down.adjoint(x)
    with pytest.raises(ValueError, match="non-finite"):
        down.pinv(torch.full((1, 2, 3, 4), float("inf")))
    with pytest.raises(ValueError, match="gamma"):
        blur.prox_l2(x, x, -1.0)


BAD_OPS = {
    "inpaint": lambda: Inpainting(random_pixel_mask((6, 8), 0.5)),
    "denoise": Denoise,
    "blur": lambda: Blur(motion_kernel(3, 30), (6, 8)),
    "down": lambda: Downsample(2, "bicubic", (6, 8)),
}


@pytest.mark.parametrize("kind", list(BAD_OPS))
def test_bad_inputs_every_operator(kind):
    """Each method rejects wrong shapes, dtypes, devices, mismatched pairs and non-finite y with a
    ValueError that names the problem."""
    op = BAD_OPS[kind]()
    x = torch.randn(2, 3, 6, 8)
    y = op(x)
    pairs = [op.fidelity, lambda a, b: op.prox_l2(a, b, 0.5), op.project]
    if kind != "denoise":  # Denoise accepts any shape
        with pytest.raises(ValueError, match="shape"):
            op(torch.randn(2, 3, 6, 7))
        with pytest.raises(ValueError, match="shape"):
            op.adjoint(torch.randn(2, 3, 5, 8))
        with pytest.raises(ValueError, match="on meta"):
            op(x.to("meta"))
    with pytest.raises(ValueError, match="dtype"):
        op(x.to(torch.int64))
    with pytest.raises(ValueError, match="dtype"):
        op.adjoint(y.to(torch.complex64))
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        op(x.numpy())
    nan_y = y.clone()
    nan_y.view(-1)[5] = float("nan")
    inf_y = y.clone()
    inf_y.view(-1)[-1] = float("-inf")
    for fn in pairs:
        for bad in (nan_y, inf_y):
            with pytest.raises(ValueError, match="non-finite"):
                fn(x, bad)
        with pytest.raises(ValueError, match="dtype"):
            fn(x, y.double())
        with pytest.raises(ValueError, match="shape"):
            fn(x[:1], y)  # batch mismatch
        with pytest.raises(ValueError, match="on meta|is on"):
            fn(x, y.to("meta"))
    with pytest.raises(ValueError, match="non-finite"):
        op.pinv(nan_y)
    with pytest.raises(ValueError, match="gamma"):
        op.prox_l2(x, y, -0.1)
    with pytest.raises(ValueError, match="gamma"):
        op.prox_l2(x, y, torch.ones(3))


def test_inpainting_mask_mismatch():
    x = torch.randn(2, 3, 6, 8)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 6, 8\)"):
        Inpainting(torch.ones(2, 6, 8))(x)  # 2 channels vs 3
    with pytest.raises(ValueError, match=r"mask of shape \(4, 3, 6, 8\)"):
        Inpainting(torch.ones(4, 3, 6, 8)).fidelity(x, x)  # 4 problems vs 2
    with pytest.raises(ValueError, match="mask of shape"):
        Inpainting(torch.ones(2, 3, 6, 8)).project(x[:1], x[:1])
    with pytest.raises(ValueError, match="mask must have"):
        Inpainting(torch.ones(8))
    with pytest.raises(ValueError, match="bool or floating"):
        Inpainting(torch.ones(6, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="non-finite"):
        Inpainting(torch.full((6, 8), float("nan")))


def test_finite_check_sees_in_place_changes():
    op = Blur(gaussian_kernel(1.0), (6, 8))
    x, y = torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8)
    op.fidelity(x, y)
    op.fidelity(x, y)  # validated once, reused
    y[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        op.fidelity(x, y)
