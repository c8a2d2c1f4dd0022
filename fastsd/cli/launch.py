"""``fastsd reconstruct DIR --nproc N``: N ranks on this machine, started the way ``torchrun
--standalone --nproc_per_node=N -m fastsd.cli reconstruct DIR ...`` starts them (torch's elastic
launcher, :func:`torch.distributed.run.run`), with the command line's own exit statuses.

torchrun turns any rank's non-zero exit into a ``ChildFailedError`` that it raises uncaught: a
traceback and exit status 1, whatever the rank reported. Here the ranks' own one-line messages
are all that is printed and the exit status is the first failed rank's (2 bad input or a failed
file, 130 Ctrl-C, 143 SIGTERM; 128 + the signal for a rank that was killed, with one line).
"""
from __future__ import annotations

import logging
import os
import signal
import sys

from fastsd.cli.common import UsageError

__all__ = ["launch", "without_nproc"]


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` with ``--nproc N`` / ``--nproc=N`` taken out (what each rank runs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``fastsd argv`` in ``nproc`` ranks; returns the exit status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if os.environ.get("TORCHELASTIC_RUN_ID"):
        raise UsageError("--nproc starts its own ranks: leave it out under torchrun")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # what torchrun sets (and would warn about)
    for name in list(logging.root.manager.loggerDict):  # its log lines repeat what the ranks said
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "fastsd.cli", *argv]))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode >= 0:
            return failure.exitcode  # the rank printed its own line
        name = signal.Signals(-failure.exitcode).name
        print(f"fastsd: error: rank {rank} was killed by {name}; the finished inputs and summary.json are in --out",
              file=sys.stderr)
        return 128 - failure.exitcode
    except SignalException as e:  # Ctrl-C or SIGTERM to the launcher: the ranks were stopped too
        return 128 + int(e.sigval)
    return 0
