"""Result folders of every command (fastsd.cli.results, fastsd.cli.batch): --out followed through
a symlink and written inside (never renamed, as a mount point must be), one lock per --out, unique
folder names, each input committed as soon as it is done, and a summary that says what happened
to every input after Ctrl-C, SIGTERM or a dead torchrun rank; stale distributed variables."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastsd.cli import main, recon2d
from fastsd.cli.results import LOCK, STAGE, ResultFolder

FAST = ["--T", "2", "--K", "2", "--quiet", "--small", "--device", "cpu"]
INPAINT = ["--task", "inpaint"] + FAST
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and locks")


def _run(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _gray(path, size=32, seed=0):
    np.save(path, np.random.default_rng(seed).random((size, size)).astype(np.float32))
    return path


def _inputs(d, names=("a.npy", "b.npy", "c.npy")):
    d.mkdir()
    for i, name in enumerate(names):
        _gray(d / name, seed=i)
    return d


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TRITON_INTERPRET=env.get("TRITON_INTERPRET", "1"))
    return env


# -- --out: symlinks, mount points, what may be replaced --------------------------------------------


def test_symlinked_out_is_followed_not_replaced(tmp_path, capsys):
    src, target = _gray(tmp_path / "g.npy"), tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    assert _run(["reconstruct", str(src), "--out", str(tmp_path / "link")] + INPAINT, capsys)[0] == 0
    assert (tmp_path / "link").is_symlink() and (target / "metrics.json").is_file()
    assert [p.name for p in target.iterdir() if p.name.startswith(".")] == []  # no lock or staging left


def test_out_is_never_renamed_so_a_mount_point_works(tmp_path, capsys, monkeypatch):
    """Renaming a mount point (or onto one) fails with EBUSY: every command writes inside --out."""
    out = tmp_path / "mnt"
    out.mkdir()
    real_replace, real_rename = os.replace, os.rename

    def busy(real):
        def call(a, b, *rest, **kw):
            if out in (Path(a), Path(b)):
                raise OSError(errno.EBUSY, "Device or resource busy", str(out))
            return real(a, b, *rest, **kw)
        return call

    monkeypatch.setattr(os, "replace", busy(real_replace))
    monkeypatch.setattr(os, "rename", busy(real_rename))
    src = _gray(tmp_path / "g.npy")
    assert _run(["reconstruct", str(src), "--out", str(out)] + INPAINT, capsys)[0] == 0
    assert (out / "metrics.json").is_file()
    assert _run(["reconstruct", str(src), "--out", str(out), "--overwrite"] + INPAINT, capsys)[0] == 0
    d = _inputs(tmp_path / "in")
    assert _run(["reconstruct", str(d), "--out", str(out), "--overwrite"] + INPAINT, capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c", "summary.json"]


def test_3d_results_need_overwrite_and_user_folders_are_refused(tmp_path, capsys):
    pytest.importorskip("nibabel")
    vol = tmp_path / "v.npy"
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (8, 16, 16)], indexing="ij"))
    np.save(vol, ((g**2).sum(0) < 0.7).astype(np.float32))
    argv = ["reconstruct", str(vol), "--task", "mri3d", "--coils", "2", "--acceleration", "2", "--calib", "4",
            "--T", "1", "--K", "1", "--quiet", "--device", "cpu"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = _run(argv + ["--out", str(mine), "--overwrite"], capsys)
    assert code == 2 and "holds no fastsd results" in err and (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "o"
    assert _run(argv + ["--out", str(out)], capsys)[0] == 0
    code, _, err = _run(argv + ["--out", str(out)], capsys)
    assert code == 2 and "pass --overwrite" in err
    (out / "stale.txt").write_text("from the earlier run")
    assert _run(argv + ["--out", str(out), "--overwrite"], capsys)[0] == 0
    assert not (out / "stale.txt").exists() and (out / "metrics.json").is_file()


# -- the lock ---------------------------------------------------------------------------------------


@POSIX
def test_a_second_run_into_a_locked_out_refuses_in_one_line(tmp_path, capsys, no_solve):
    out = tmp_path / "o"
    held = ResultFolder(out, overwrite=False)  # another run, writing there now
    try:
        for argv in (["reconstruct", str(_gray(tmp_path / "g.npy"))] + INPAINT,
                     ["reconstruct", str(_inputs(tmp_path / "in"))] + INPAINT, ["demo", "--quiet"]):
            code, _, err = _run(argv + ["--out", str(out), "--overwrite"], capsys)
            assert code == 2 and err.count("\n") == 1, err
            assert f"another fastsd run (pid {os.getpid()}) is writing there" in err
        assert (out / STAGE).is_dir()  # the other run's staging folder survives
    finally:
        held.close()
    assert not out.exists()  # it made the folder and committed nothing


@POSIX
def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK).write_text(dead.stdout)
    (out / STAGE).mkdir()
    (out / STAGE / "leftover").write_text("a killed run's staged file")
    assert _run(["reconstruct", str(_gray(tmp_path / "g.npy")), "--out", str(out)] + INPAINT, capsys)[0] == 0
    assert not (out / LOCK).exists() and not (out / STAGE).exists() and (out / "metrics.json").is_file()


@pytest.fixture
def no_solve(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("the solve started before the error was found")

    monkeypatch.setattr("fastsd.api.solve", forbidden)


# -- directory runs: per-input commits, names, summary ---------------------------------------------------


def test_colliding_names_get_their_own_folders(tmp_path, capsys):
    import matplotlib.image as mpimg

    d = _inputs(tmp_path / "in", ("a.b.npy", "a_b.npy", "summary.json.npy"))

    mpimg.imsave(d / "a_b.png", np.random.default_rng(1).random((32, 32)), cmap="gray")
    out = tmp_path / "o"
    code, _, err = _run(["reconstruct", str(d), "--out", str(out)] + INPAINT, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    outputs = [Path(r["output"]).name for r in summary["files"]]
    assert len(set(outputs)) == 4 and all((out / o / "metrics.json").is_file() for o in outputs)
    assert summary["counts"]["ok"] == 4 and summary["finished"] is True


def test_each_input_is_committed_as_soon_as_it_is_done(tmp_path, capsys, monkeypatch):
    d = _inputs(tmp_path / "in")
    out = tmp_path / "o"
    real, seen = recon2d._reconstruct, []

    def watch(args, task, path, *rest, **kw):  # what --out holds when each input starts
        summary = json.loads((out / "summary.json").read_text())
        seen.append((sorted(p.name for p in out.iterdir() if not p.name.startswith(".")),
                     [r["status"] for r in summary["files"]], summary["finished"]))
        return real(args, task, path, *rest, **kw)

    monkeypatch.setattr(recon2d, "_reconstruct", watch)
    assert _run(["reconstruct", str(d), "--out", str(out)] + INPAINT, capsys)[0] == 0
    assert seen == [(["summary.json"], ["running", "not run", "not run"], False),
                    (["a", "summary.json"], ["ok", "running", "not run"], False),
                    (["a", "b", "summary.json"], ["ok", "ok", "running"], False)]


@POSIX
def test_sigterm_keeps_finished_inputs_and_writes_the_summary(tmp_path):
    d = _inputs(tmp_path / "in", ("a.npy", "b.npy", "c.npy"))
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "fastsd.cli", "reconstruct", str(d), "--task", "inpaint",
                             "--T", "20", "--K", "10", "--small", "--device", "cpu", "--quiet", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "a").is_dir():  # a done, b running
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().startswith("fastsd: terminated: ") and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    status = [r["status"] for r in summary["files"]]
    assert status[0] == "ok" and "interrupted" in status and summary["interrupted"] and summary["finished"]
    assert (out / "a" / "metrics.json").is_file() and not (out / STAGE).exists() and not (out / LOCK).exists()
    # the next run does not delete them silently
    r = subprocess.run([sys.executable, "-m", "fastsd.cli", "reconstruct", str(d), "--out", str(out)] + INPAINT,
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 2 and "pass --overwrite" in r.stderr and (out / "a" / "metrics.json").is_file()


# -- torchrun ---------------------------------------------------------------------------------------


def test_stale_distributed_variables_fail_at_once(tmp_path):
    d = _inputs(tmp_path / "in", ("a.npy",))
    env = dict(_env(), WORLD_SIZE="2", RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29431")
    r = subprocess.run([sys.executable, "-m", "fastsd.cli", "reconstruct", str(d), "--out", str(tmp_path / "o")]
                       + INPAINT, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not started by torchrun" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_nproc_needs_a_directory_and_no_torchrun(tmp_path, capsys, monkeypatch):
    src = _gray(tmp_path / "g.npy")
    code, _, err = _run(["reconstruct", str(src), "--nproc", "2", "--out", str(tmp_path / "o")] + INPAINT, capsys)
    assert code == 2 and "is not a directory" in err
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    code, _, err = _run(["reconstruct", str(tmp_path), "--nproc", "2", "--out", str(tmp_path / "o")] + INPAINT, capsys)
    assert code == 2 and "leave it out under torchrun" in err
    code, _, err = _run(["reconstruct", str(tmp_path), "--nproc", "0"] + INPAINT, capsys)
    assert code == 2 and "--nproc must be a positive integer" in err


def test_nproc_passes_the_ranks_exit_status_through_without_a_traceback(tmp_path):
    d = _inputs(tmp_path / "in", ("a.npy", "b.npy", "c.npy"))
    (d / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "fastsd.cli", "reconstruct", str(d), "--nproc", "2", "--out", str(out)]
                       + INPAINT, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "ChildFailedError" not in r.stderr and "exitcode" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "fastsd: error:" in ln]
    assert len(errors) == 1 and str(d / "bad.png") in errors[0], r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["counts"] == {"ok": 3, "error": 1, "running": 0,
                                                                 "interrupted": 0, "not run": 0}


@POSIX
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks through /proc")
def test_a_dead_rank_keeps_the_finished_inputs_and_the_summary_says_what_happened(tmp_path):
    d = _inputs(tmp_path / "in", tuple(f"s{i}.npy" for i in range(6)))
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "fastsd.cli", "reconstruct", str(d), "--nproc", "2", "--out",
                             str(out), "--task", "inpaint", "--T", "30", "--K", "10", "--small", "--device", "cpu",
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline, rank1 = time.time() + 600, None
    while time.time() < deadline and rank1 is None:  # rank 1 has finished an input and runs the next
        time.sleep(0.2)
        try:
            files = json.loads((out / "summary.json").read_text())["files"]
        except (OSError, ValueError):
            continue
        mine = [r["status"] for r in files if r["rank"] == 1]
        if "ok" in mine and "running" in mine:
            rank1 = _rank_pid(proc.pid, "1")
    assert rank1 is not None
    os.kill(rank1, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGKILL, err
    assert "rank 1 was killed by SIGKILL" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    by_rank = {r["input"]: (r["rank"], r["status"]) for r in summary["files"]}
    assert summary["finished"] and summary["interrupted"]
    assert all(s in ("ok", "interrupted", "not run") for _, s in by_rank.values())
    assert ("ok" in [s for r, s in by_rank.values() if r == 1]) and "interrupted" in [s for _, s in by_rank.values()]
    for r in summary["files"]:
        assert (Path(r["output"]) / "metrics.json").is_file() == (r["status"] == "ok")


def _rank_pid(launcher: int, rank: str) -> int | None:
    """The pid of the launcher's child process whose RANK is ``rank``."""
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                env = dict(kv.split("=", 1) for kv in Path(f"/proc/{child}/environ").read_text().split("\0") if "=" in kv)
            except OSError:
                continue
            if env.get("RANK") == rank:
                return int(child)
    return None
