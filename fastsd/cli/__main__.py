"""``python -m fastsd.cli`` (and ``torchrun -m fastsd.cli``): the ``fastsd`` command."""
import sys

from fastsd.cli import main

sys.exit(main())
