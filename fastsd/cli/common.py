"""What every command shares: one-line errors and warnings, exit statuses, the device option and
memory checks. Exit status 0 ok, 2 bad input or options (argparse's own convention), 130 Ctrl-C
or SIGTERM, 1 a solve whose result was refused (:mod:`fastsd.sanity`: non-finite or diverged) or an
unexpected error (``FASTSD_DEBUG=1`` shows its traceback)."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable

import torch

from fastsd.sanity import ResultError

__all__ = ["Parser", "UsageError", "Interrupted", "one_line", "device", "check_memory", "run_command"]


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2 (argparse's own convention)
        self.exit(2, f"fastsd: error: {message}\n")


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


class Interrupted(Exception):
    """Ctrl-C, after whatever could be saved was saved; the message is the one line printed."""


def one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the command line: one line, no source excerpt."""
    print(f"fastsd: warning: {one_line(message)}", file=sys.stderr if file is None else file, flush=True)


def device(name: str | None) -> torch.device:
    """``--device``: cuda when available unless named; a named device must exist."""
    from fastsd._checks import check_device

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return check_device(name)
    except ValueError as e:
        raise UsageError(f"--device {name}: {one_line(e)}") from None


def _memory_bytes(dev: torch.device) -> int | None:
    """Total memory of the device (RAM for the CPU); None where it cannot be told."""
    try:
        if dev.type == "cuda":
            return int(torch.cuda.get_device_properties(dev).total_memory)
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def check_memory(needed: float, dev: torch.device, what: str) -> None:
    have = _memory_bytes(dev)
    if have is not None and needed > have:
        where = "GPU memory" if dev.type == "cuda" else "memory"
        raise UsageError(f"{what} needs about {needed / 2**30:.3g} GiB, more than this machine's "
                         f"{have / 2**30:.3g} GiB of {where}")


def run_command(command: Callable[[], int]) -> int:
    """Run one command with the command line's reporting: warnings and errors in one line each,
    exit status 2 for bad input or options and 130 for Ctrl-C."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _warning_line
            return command()
    except KeyboardInterrupt:
        print("fastsd: interrupted", file=sys.stderr)
        return 130
    except Interrupted as e:
        print(f"fastsd: {e}", file=sys.stderr)
        return 130
    except ResultError as e:  # the input was fine, its solve failed (fastsd.sanity)
        print(f"fastsd: error: {one_line(e)}", file=sys.stderr)
        return 1
    except (ValueError, UsageError, ImportError, OSError) as e:
        print(f"fastsd: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)) or "not enough memory" in str(e):
            print(f"fastsd: error: out of memory ({one_line(e)[:200]}); lower --size or --batch-size", file=sys.stderr)
            return 2
        if os.environ.get("FASTSD_DEBUG"):
            raise
        print(f"fastsd: error: {type(e).__name__}: {one_line(e)[:500]} (FASTSD_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
