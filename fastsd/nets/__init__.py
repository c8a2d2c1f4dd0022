"""Denoiser networks: the paper's U-Nets (2-D, 3-D) and a small 1D network for vector unknowns."""
from fastsd.nets.unet import ConvNet1d, UNet, init_weights
from fastsd.nets.unet3d import UNet3d

__all__ = ["UNet", "UNet3d", "ConvNet1d", "init_weights"]
