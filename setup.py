"""Packaging: maps the repo dir ``kernels/`` to ``fastsd.kernels`` and builds the optional
CUDA extension in ``csrc/`` only where a CUDA build of torch and nvcc exist (never on CPU/CI)."""
import os
import shutil

from setuptools import find_packages, setup


def cuda_extensions():
    """The cuFFT-callback extension, or nothing where it cannot be built."""
    if os.environ.get("FASTSD_BUILD_CUDA", "auto") == "0" or not os.path.isdir("csrc"):
        return [], {}
    sources = [os.path.join("csrc", f) for f in sorted(os.listdir("csrc")) if f.endswith((".cpp", ".cu"))]
    if not sources or shutil.which("nvcc") is None:
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CUDAExtension
    except ImportError:
        return [], {}
    if torch.version.cuda is None:
        return [], {}
    ext = CUDAExtension("fastsd._C", sources, libraries=["cufft"])
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extensions()
setup(
    packages=find_packages(include=["fastsd", "fastsd.*"]) + ["fastsd.kernels"],
    package_dir={"fastsd.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
