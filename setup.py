"""Packaging: maps the repo dir ``kernels/`` to ``fastsd.kernels`` and builds the optional
CUDA extension ``fastsd._C`` from ``csrc/`` only when asked to and where a CUDA build of torch and
nvcc exist (never on CPU/CI).

``FASTSD_BUILD_CUDA``: unset or ``0`` skips the extension (the default, so an editable install on
a GPU machine costs no compile time and cannot fail on it), ``1`` builds it and makes a missing
prerequisite an error, ``auto`` builds it where it can. cuFFT and NVRTC come from the ``nvidia-*``
wheels that a CUDA build of torch installs, else from the CUDA toolkit."""
import os
import shutil

from setuptools import find_packages, setup


def cuda_library(header: str, name: str):
    """(include dir, library dir, library file) of a CUDA library: the nvidia wheel beside torch
    (``nvidia/cu13``, ``nvidia/cufft``, ...), else the toolkit; None where it is missing."""
    from torch.utils.cpp_extension import CUDA_HOME

    roots = []
    try:
        import nvidia

        roots = [os.path.join(p, d) for p in nvidia.__path__ for d in sorted(os.listdir(p))]
    except ImportError:
        pass
    for root in roots + ([CUDA_HOME] if CUDA_HOME else []):
        if not os.path.isfile(os.path.join(root, "include", header)):
            continue
        for sub in ("lib", "lib64"):
            d = os.path.join(root, sub)
            files = sorted(f for f in os.listdir(d) if f.startswith(f"lib{name}.so")) if os.path.isdir(d) else []
            if files:
                return os.path.join(root, "include"), d, files[0]
    return None


def cuda_extensions():
    """The cuFFT-callback extension, or nothing where it cannot be built."""
    mode = os.environ.get("FASTSD_BUILD_CUDA", "0")
    sources = sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith((".cpp", ".cu"))) \
        if os.path.isdir("csrc") else []

    def skip(why: str):
        if mode == "1":
            raise RuntimeError(f"FASTSD_BUILD_CUDA=1 but the CUDA extension cannot be built: {why}")
        return [], {}

    if mode not in ("1", "auto"):
        return [], {}
    if not sources:
        return skip("no sources in csrc/")
    if shutil.which("nvcc") is None:
        return skip("nvcc is not on PATH")
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CUDAExtension
    except ImportError:
        return skip("torch is not importable in the build environment (use --no-build-isolation)")
    if torch.version.cuda is None:
        return skip(f"torch {torch.__version__} is a CPU build")
    libs = [cuda_library("cufftXt.h", "cufft"), cuda_library("nvrtc.h", "nvrtc")]
    if None in libs:
        return skip("cuFFT or NVRTC headers/libraries not found")
    link = []
    for _, libdir, file in libs:
        link += [f"-L{libdir}", f"-l:{file}", f"-Wl,-rpath,{libdir}"]
    ext = CUDAExtension(
        "fastsd._C",
        sources,
        depends=sorted(os.path.join("csrc", f) for f in os.listdir("csrc")),  # e.g. the callback source
        include_dirs=sorted({inc for inc, _, _ in libs}),
        extra_compile_args={"cxx": ["-O2"], "nvcc": ["-O2"]},
        extra_link_args=link,
    )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extensions()
setup(
    packages=find_packages(include=["fastsd", "fastsd.*"]) + ["fastsd.kernels"],
    package_dir={"fastsd.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
