"""Former path of :mod:`fastsd.interop.deepinv.stack` (stacked physics): the same module object under its old
name, so old imports (and ``pytest -p``) keep working."""
import sys

from fastsd.interop.deepinv import stack

sys.modules[__name__] = stack
