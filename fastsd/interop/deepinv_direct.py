"""Former path of :mod:`fastsd.interop.deepinv.direct` (the direct path): the same module object under its old
name, so old imports (and ``pytest -p``) keep working."""
import sys

from fastsd.interop.deepinv import direct

sys.modules[__name__] = direct
