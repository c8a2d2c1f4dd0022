"""Former path of :mod:`fastsd.interop.deepinv.substitute` (the substitute plugin): the same module object under its old
name, so old imports (and ``pytest -p``) keep working."""
import sys

from fastsd.interop.deepinv import substitute

sys.modules[__name__] = substitute
