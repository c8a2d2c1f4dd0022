"""Former name of :mod:`fastsd.kernels.mri`, kept so that old imports keep working."""
from fastsd.kernels.mri import *  # noqa: F403
from fastsd.kernels.mri import __all__  # noqa: F401
