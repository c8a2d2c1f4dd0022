"""Denoiser networks: the paper's U-Net and a small 1D network for vector unknowns."""
from fastsd.nets.unet import ConvNet1d, UNet, init_weights

__all__ = ["UNet", "ConvNet1d", "init_weights"]
