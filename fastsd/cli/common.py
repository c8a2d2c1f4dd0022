"""What every command shares: one-line errors and warnings, exit statuses, the device option and
memory checks. Exit status 0 ok, 2 bad input or options (argparse's own convention), 130 Ctrl-C,
143 SIGTERM, 1 an unexpected error (``FASTSD_DEBUG=1`` shows its traceback)."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable

import torch

__all__ = ["Parser", "UsageError", "Terminated", "Interrupted", "Exit", "stopped", "one_line", "device", "check_memory",
           "run_command"]


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2 (argparse's own convention)
        self.exit(2, f"fastsd: error: {message}\n")


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch system, torchrun stopping its ranks), raised where the process is
    so that it is handled like Ctrl-C; exit status 143."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM, after whatever could be saved was saved; the message is the one line
    printed, ``code`` the exit status (130 or 143)."""

    def __init__(self, message: str, code: int = 130):
        super().__init__(message)
        self.code = code


class Exit(Exception):
    """Exit with ``code`` and print nothing (the cause was reported elsewhere, e.g. by rank 0)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def stopped(e: KeyboardInterrupt) -> tuple[str, int]:
    """How an interruption is reported: ('interrupted', 130) for Ctrl-C, ('terminated', 143) for SIGTERM."""
    return ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)


def _terminate(signum, frame):
    raise Terminated


def one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the command line: one line, no source excerpt."""
    print(f"fastsd: warning: {one_line(message)}", file=sys.stderr if file is None else file, flush=True)


def device(name: str | None) -> torch.device:
    """``--device``: cuda when available unless named; a named device must exist."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device: unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available")
    return dev


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
    exit status 2 for bad input or options, 130 for Ctrl-C and 143 for SIGTERM (handled like Ctrl-C
    while the command runs)."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _warning_line
            return command()
    except KeyboardInterrupt as e:
        word, code = stopped(e)
        print(f"fastsd: {word}", file=sys.stderr)
        return code
    except Interrupted as e:
        print(f"fastsd: {e}", file=sys.stderr)
        return e.code
    except Exit as e:
        return e.code
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
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
