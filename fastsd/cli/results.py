"""Result folders: ``--out`` checked, locked, and filled one finished entry at a time.

Every command writes the same way. ``--out`` is followed if it is a symlink (the link stays) and
written inside, never renamed, so a mount point works too. Work is staged in the hidden
``OUT/.fastsd-partial/`` (same filesystem, so each commit is one atomic rename) and each finished
entry is renamed into place as soon as it is done: a single run's files (``metrics.json`` last),
or a directory run's ``OUT/<name>/`` per input. A failed or interrupted entry is dropped and
never replaces anything.

``--out`` may be new, empty, or (only with ``--overwrite``) an earlier fastsd result, which is then
replaced entirely; anything else is refused before any work. ``OUT/.fastsd-lock`` holds the pid of
the run writing there under an exclusive ``flock``: a second run into the same ``--out`` refuses
in one line, and a lock left by a dead process (whose ``flock`` the kernel released) is taken over.
Problems with a path raise ``ValueError`` naming the path and the option that gave it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

__all__ = ["STAGE", "LOCK", "is_result", "check_target", "writable_parent", "ResultFolder", "output_names"]

STAGE, LOCK = ".fastsd-partial", ".fastsd-lock"
RESERVED = {"summary.json", "metrics.json"}  # names a directory run's per-input folders must not take


def _visible(path: Path) -> list[Path]:
    """The entries of ``path`` other than fastsd's own lock and staging folder (and the
    ``lost+found`` of a filesystem's root, where ``--out`` is a mount point)."""
    return [e for e in path.iterdir() if e.name not in (STAGE, LOCK, "lost+found")]


def is_result(path: Path) -> bool:
    """Whether ``path`` holds the results of an earlier run."""
    return (path / "metrics.json").is_file() or (path / "summary.json").is_file()


def check_target(path: Path, overwrite: bool, option: str = "--out") -> None:
    """A result folder may be new, empty, or (with ``overwrite``) an earlier fastsd result."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: exists and is not a folder")
    if path.is_dir() and _visible(path):
        if not is_result(path):
            raise ValueError(f"{option} {path}: folder is not empty and holds no fastsd results; choose a new "
                             f"or empty folder")
        if not overwrite:
            raise ValueError(f"{option} {path}: holds the results of an earlier run; pass --overwrite to replace them")


def writable_parent(path: Path, option: str) -> Path:
    """The (created) parent folder of ``path``, checked to be writable."""
    parent = path.parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot create {parent} ({e.strerror or e})") from None
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: folder {parent} is not writable")
    return parent


def output_names(files: list[Path]) -> list[str]:
    """One distinct folder name per input of a directory run: the stems, or, where two stems clash,
    every name with '_' for '.'; '-2', '-3', ... where even those clash (compared without case, for
    case-insensitive filesystems) or would take a name the run writes itself (``summary.json``)."""
    stems = [p.stem.lower() for p in files]
    unique = len(set(stems)) == len(stems)
    used, names = set(RESERVED), []
    for p in files:
        base = (p.stem if unique else p.name.replace(".", "_")).lstrip(".") or "input"  # no hidden folders
        name, n = base, 1
        while name.lower() in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name.lower())
        names.append(name)
    return names


class _Lock:
    """An exclusive ``flock`` on ``path``, which records the holder's pid."""

    def __init__(self, path: Path, what: str):
        self.path, self.fd = path, None
        for _ in range(3):  # the file may be removed by its last holder between open and flock
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    raise ValueError(f"{what}: another fastsd run (pid {holder}) is writing there; wait for it to "
                                     f"finish or choose another folder") from None
                return  # a filesystem without locks: go on unlocked
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None


class ResultFolder:
    """``--out`` for one run. The main process (``main=True``) resolves, checks and locks it and
    empties the staging folder; the other ranks of a torchrun launch only join it (after the main
    rank has set it up). ``entry(name)`` is a fresh staged folder, ``commit(name)`` renames it into
    ``OUT/<name>``, ``commit_files(name)`` moves its files into ``OUT`` itself (a single run's
    layout). ``with ResultFolder(...) as folder:`` stages ``folder.tmp`` and commits its files when
    the block succeeds; ``close()`` removes the staging folder and the lock (and ``OUT`` itself if
    this run made it and nothing was committed)."""

    def __init__(self, out: Path, overwrite: bool, option: str = "--out", main: bool = True):
        self.path = Path(os.path.abspath(out))  # as the user names it (messages, summary)
        self.final = Path(os.path.realpath(self.path))  # where files go: a symlink followed
        self.stage, self.overwrite, self.option = self.final / STAGE, overwrite, option
        self.lock, self.owner, self.created, self.tmp = None, False, False, None
        self.cleared = not (overwrite and main)  # only the main rank clears earlier results
        if not main:
            return
        what = f"{option} {self.path}"
        if self.final.exists() and not self.final.is_dir():
            raise ValueError(f"{what}: exists and is not a folder")
        if not self.final.exists():
            writable_parent(self.final, option)
            try:
                self.final.mkdir()
                self.created = True
            except FileExistsError:  # made by a run starting at the same moment: the lock decides
                pass
            except OSError as e:
                raise ValueError(f"{what}: cannot create it ({e.strerror or e})") from None
        if not os.access(self.final, os.W_OK | os.X_OK):
            raise ValueError(f"{what}: folder is not writable")
        try:
            self.lock = _Lock(self.final / LOCK, what)
            self.owner = True
            check_target(self.final, overwrite, option)
            shutil.rmtree(self.stage, ignore_errors=True)  # left by a dead run: the lock is ours now
            self.stage.mkdir()
        except BaseException:
            self.close()
            raise

    def entry(self, name: str) -> Path:
        """A fresh staged folder for ``name``."""
        work = self.stage / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        return work

    def drop(self, name: str) -> None:
        shutil.rmtree(self.stage / name, ignore_errors=True)

    def clear(self) -> None:
        """With ``--overwrite``: remove the earlier results (once, before the first commit)."""
        if not self.cleared:
            for e in _visible(self.final):
                shutil.rmtree(e) if e.is_dir() and not e.is_symlink() else e.unlink()
            self.cleared = True

    def commit(self, name: str) -> Path:
        """Rename the staged folder ``name`` to ``OUT/<name>``; returns that path as the user names it."""
        self.clear()
        os.replace(self.stage / name, self.final / name)
        return self.path / name

    def commit_files(self, name: str) -> None:
        """Move the files of the staged folder ``name`` into ``OUT`` itself, ``metrics.json`` last."""
        self.clear()
        work = self.stage / name
        for e in sorted(work.iterdir(), key=lambda e: e.name == "metrics.json"):
            os.replace(e, self.final / e.name)
        work.rmdir()

    def close(self) -> None:
        """End the run: staging folder and lock removed (by the run that holds the lock only)."""
        if self.owner:
            shutil.rmtree(self.stage, ignore_errors=True)
            self.lock.release()
            self.owner = False
        if self.created and self.final.is_dir() and not any(self.final.iterdir()):
            self.final.rmdir()

    def __enter__(self) -> ResultFolder:
        self.tmp = self.entry("result")
        return self

    def __exit__(self, kind, value, traceback) -> None:
        """Commit when the block succeeded; drop the staged files when it raised (Ctrl-C included)."""
        try:
            if kind is None:
                self.commit_files("result")
        finally:
            self.close()
