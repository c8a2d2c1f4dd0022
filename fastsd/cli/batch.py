"""Directory runs: ``fastsd reconstruct DIR`` over every input file, sharded over the ranks of a
torchrun launch (:mod:`fastsd.distributed`).

Rank 0 sets up ``--out`` (:class:`~fastsd.cli.results.ResultFolder`: checked, locked, earlier
results cleared with ``--overwrite``) and tells the other ranks whether it could; that is the only
time the ranks talk. Each rank then takes ``files[rank::world]`` and commits each input's folder
``OUT/<name>/`` as soon as it is done. Every input's state lives in a journal (one small JSON file
per input in the staging folder), and ``OUT/summary.json`` is rewritten from it after every input,
so at any moment it says which inputs are done ('ok'), failed ('error', with the message), running,
interrupted or not run.

At the end rank 0 waits until every other rank has marked itself done (``rank<r>.done`` in the
journal, after its last record), writes the final summary, removes the staging folder and lock, and
alone returns the run's status (2 if any input failed): a rank that exits non-zero makes torchrun
stop all the others, so the other ranks exit 0 once their inputs are recorded. On Ctrl-C or SIGTERM
(which torchrun sends to every rank when one dies) a rank records its input as interrupted and
writes the summary, in which whatever is still running counts as interrupted and the rest as not
run; after such a torchrun run the hidden staging folder and lock file stay until the next run
into ``--out`` takes them over.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fastsd import distributed as fdist
from fastsd.cli.common import Exit, Interrupted, UsageError, one_line, stopped
from fastsd.cli.results import ResultFolder, output_names
from fastsd.outputs import record, summary_text, to_json

__all__ = ["run_directory", "Journal"]

POLL_S = 1.0  # how often rank 0 looks whether the other ranks are done


class Journal:
    """Each input's record in ``STAGE/journal/<index>.json``; ``summary()`` builds ``summary.json``."""

    def __init__(self, folder: ResultFolder, files: list[Path], names: list[str], header: dict):
        self.folder, self.files, self.names, self.header = folder, files, names, header
        self.dir = folder.stage / "journal"
        self.started = time.time()

    def put(self, i: int, rank: int, status: str, metrics: dict | None = None, error: str | None = None) -> None:
        """Record input ``i``'s status and rewrite the summary."""
        rec = record(self.files[i], self.folder.path / self.names[i], rank, status, metrics, error)
        tmp = self.dir / f".{i}.{os.getpid()}"
        tmp.write_text(to_json(rec))
        os.replace(tmp, self.dir / f"{i}.json")
        self.write_summary()

    def records(self) -> list[dict]:
        out = []
        for i, path in enumerate(self.files):
            try:
                out.append(json.loads((self.dir / f"{i}.json").read_text()))
            except (FileNotFoundError, ValueError):
                out.append(record(path, self.folder.path / self.names[i], -1, "not run"))
        return out

    def write_summary(self, final: bool = False) -> dict:
        """Rewrite ``OUT/summary.json`` from the journal (under a lock: the last writer saw every record).
        ``final``: the run is over, so an input still 'running' was interrupted (its rank died)."""
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            files = self.records()
            if final:
                for r in files:
                    if r["status"] == "running":
                        r["status"] = "interrupted"
            counts = {s: sum(r["status"] == s for r in files) for s in ("ok", "error", "running", "interrupted",
                                                                         "not run")}
            summary = {**self.header, "n_files": len(files), "n_failed": len(files) - counts["ok"],
                       "counts": counts, "finished": final,
                       "interrupted": final and counts["interrupted"] + counts["not run"] > 0,
                       "wall_time_s": time.time() - self.started, "files": files}
            tmp = self.folder.stage / f".summary.{os.getpid()}"
            tmp.write_text(to_json(summary))
            os.replace(tmp, self.folder.final / "summary.json")
        return summary


def _file_error(path: Path, e: BaseException) -> str:
    """One line naming the file; unexpected exceptions keep their type."""
    msg = one_line(e)
    if not isinstance(e, (ValueError, UsageError, OSError, ImportError)):
        msg = f"{type(e).__name__}: {msg}"
    return msg if str(path) in msg else f"{path}: {msg}"


def _setup(args, ctx: fdist.Context, files: list[Path], names: list[str], header: dict) -> Journal:
    """Rank 0 sets up ``--out`` and the journal; the others join once it says it could."""
    folder, error = None, ""
    if ctx.is_main:
        try:
            folder = ResultFolder(Path(args.out), args.overwrite)
            folder.clear()  # --overwrite: the earlier results go now, before the first input is committed
            (folder.stage / "journal").mkdir()
        except (ValueError, OSError) as e:
            error = one_line(e)
            if folder is not None:
                folder.close()
    error = fdist.share(error, ctx)
    if error:
        raise UsageError(error) if ctx.is_main else Exit(2)  # rank 0 prints it
    journal = Journal(folder or ResultFolder(Path(args.out), args.overwrite, main=False), files, names, header)
    if ctx.is_main:
        journal.write_summary()
    return journal


def run_directory(args, src: Path, files: list[Path], dev, reconstruct: Callable[[Path, Path, bool], dict],
                  baseline_name: str) -> int:
    """Reconstruct every file of ``src``: ``reconstruct(path, folder, progress)`` writes one input's
    files into ``folder`` and returns its metrics."""
    ctx = fdist.init(dev.type)
    try:
        header = {"input_dir": str(src), "task": args.task, "method": args.method, "world_size": ctx.world_size,
                  "backend": ctx.backend}
        journal = _setup(args, ctx, files, output_names(files), header)
        return _run(journal, ctx, reconstruct, not args.quiet and ctx.is_main, baseline_name)
    finally:
        fdist.finalize(ctx)


def _run(journal: Journal, ctx: fdist.Context, reconstruct, progress: bool, baseline_name: str) -> int:
    folder, files, names = journal.folder, journal.files, journal.names
    tag = f"[rank {ctx.rank}/{ctx.world_size}] " if ctx.distributed else ""
    try:
        for i in fdist.shard(range(len(files)), ctx.rank, ctx.world_size):
            path, name = files[i], names[i]
            journal.put(i, ctx.rank, "running")
            try:
                metrics = reconstruct(path, folder.entry(name), progress)
                out = folder.commit(name)
            except KeyboardInterrupt:
                folder.drop(name)
                journal.put(i, ctx.rank, "interrupted")
                raise
            except Exception as e:  # any failure: recorded, and the run goes on
                folder.drop(name)
                msg = _file_error(path, e)
                print(f"{tag}fastsd: error: {msg}", file=sys.stderr, flush=True)
                journal.put(i, ctx.rank, "error", error=msg)
                continue
            journal.put(i, ctx.rank, "ok", metrics)
            print(f"{tag}{path.name}:")
            print(summary_text(metrics, baseline_name))
            print(f"{tag}outputs in {out}", flush=True)
        if not ctx.is_main:
            (journal.dir / f"rank{ctx.rank}.done").touch()  # after its last summary write
            return 0  # rank 0 reports the run's status
        while not all((journal.dir / f"rank{r}.done").exists() for r in range(1, ctx.world_size)):
            time.sleep(POLL_S)
    except KeyboardInterrupt as e:
        word, code = stopped(e)
        summary = journal.write_summary(final=True)
        if not ctx.distributed:
            folder.close()
        raise Interrupted(f"{word}: {_done(summary, folder)}", code) from None
    summary = journal.write_summary(final=True)
    folder.close()
    print(_done(summary, folder))
    return 2 if summary["n_failed"] else 0


def _done(summary: dict, folder: ResultFolder) -> str:
    n_ok = summary["counts"]["ok"]
    return f"{n_ok}/{summary['n_files']} files reconstructed; summary in {folder.path / 'summary.json'}"
