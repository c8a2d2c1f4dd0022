"""fastsd: Triton-accelerated self-diffusion and diffusion-style solvers for imaging inverse problems.

``fastsd.solve(y, op, method="sdi")`` reconstructs ``x`` from ``y = A x``; operators live in
:mod:`fastsd.ops`, the fused custom ops in :mod:`fastsd.functional`, their plain-PyTorch
references in :mod:`fastsd.reference`, solvers in :mod:`fastsd.solvers`."""
from importlib.metadata import PackageNotFoundError, version

from fastsd import functional, ops  # noqa: F401  (registers the torch.ops.fastsd custom ops)
from fastsd.api import solve
from fastsd.solvers import available_solvers

try:
    __version__ = version("fastsd")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = ["solve", "available_solvers", "ops", "functional", "__version__"]
