"""Scale-out: the shard function, torchrun environment parsing, directory reconstruction, and a
real two-rank ``torchrun`` (Gloo on CPU) run of ``fastsd reconstruct DIR`` checking that every
file is reconstructed exactly once, by the rank the shard assigns, with the same result as a
single-process run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastsd import distributed as fdist
from fastsd.cli import main
from fastsd.testing import assert_close

FAST = ["--T", "1", "--K", "1", "--acs", "4", "--quiet", "--device", "cpu"]


# -- shard / environment --------------------------------------------------------------------


@pytest.mark.parametrize("n_items,world", [(0, 1), (1, 3), (4, 2), (7, 3), (10, 4), (3, 5)])
def test_shard_covers_every_item_exactly_once(n_items, world):
    items = [f"f{i}" for i in range(n_items)]
    shards = [fdist.shard(items, r, world) for r in range(world)]
    flat = [x for s in shards for x in s]
    assert sorted(flat) == sorted(items) and len(flat) == n_items
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    for r, s in enumerate(shards):  # round robin in the given order
        assert s == [items[i] for i in range(r, n_items, world)]


def test_shard_rejects_bad_rank_or_world():
    with pytest.raises(ValueError, match="rank must lie"):
        fdist.shard([1, 2], 2, 2)
    with pytest.raises(ValueError, match="rank must lie"):
        fdist.shard([1, 2], -1, 2)
    with pytest.raises(ValueError, match="world_size must be a positive"):
        fdist.shard([1, 2], 0, 0)


def test_env_world(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert fdist.env_world() == (0, 1, 0, 1)
    ctx = fdist.init("cpu")  # no torchrun: a single process, no process group
    assert not ctx.distributed and ctx.is_main and fdist.gather({"a": 1}, ctx) == [{"a": 1}]
    fdist.barrier(ctx)
    fdist.finalize(ctx)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)  # not started by torchrun: left over
    with pytest.raises(ValueError, match="not started by torchrun"):
        fdist.env_world()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert fdist.env_world() == (3, 4, 1, 2)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4"):
        fdist.env_world()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        fdist.env_world()


# -- directory input ------------------------------------------------------------------------


def _scans(d: Path, n: int = 4) -> list[str]:
    d.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32] / 31.0
    names = []
    for i in range(n):
        img = np.exp(-((yy - 0.3 - 0.1 * i) ** 2 + (xx - 0.5) ** 2) * 8) + 0.05 * rng.random((32, 32))
        names.append(f"scan{i}.npy")
        np.save(d / names[-1], img.astype(np.float32))
    (d / "notes.txt").write_text("not an input")  # ignored: not .npy/.png/.h5
    return names


def test_directory_reconstruction_single_process(tmp_path):
    names = _scans(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.npy").write_bytes(b"not a numpy file")
    out = tmp_path / "out"
    rc = main(["reconstruct", str(tmp_path / "in"), "--task", "mri", "--out", str(out)] + FAST)
    assert rc == 2  # one bad file: recorded, the others still reconstructed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_files"] == 4 and summary["n_failed"] == 1 and summary["world_size"] == 1
    by_name = {Path(r["input"]).name: r for r in summary["files"]}
    assert sorted(by_name) == sorted(names + ["broken.npy"])
    assert by_name["broken.npy"]["status"] == "error" and "could not be read" in by_name["broken.npy"]["error"]
    for name in names:
        rec = by_name[name]
        assert rec["status"] == "ok" and rec["iterations"] == 1 and rec["sdi"]["psnr"] > 0
        assert np.load(out / Path(name).stem / "reconstruction.npy").shape == (32, 32)
        assert (out / Path(name).stem / "metrics.json").is_file()


def test_directory_errors_and_name_clashes(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["reconstruct", str(tmp_path / "empty"), "--out", str(tmp_path / "o")] + FAST) == 2
    assert "no .npy, .png, .h5 or .cfl files" in capsys.readouterr().err
    from fastsd.cli.results import output_names

    files = [Path("a.npy"), Path("a.png"), Path("b.npy")]
    assert output_names(files) == ["a_npy", "a_png", "b_npy"]
    assert output_names(files[1:]) == ["a", "b"]
    # names that would still clash, or take the summary's name, get a number
    clash = [Path("a.b.npy"), Path("a_b.npy"), Path("a_b.png"), Path("summary.json.npy"), Path("A_B.npy")]
    assert output_names(clash) == ["a_b_npy", "a_b_npy-2", "a_b_png", "summary_json_npy", "A_B_npy-3"]
    assert output_names([Path("summary.json.npy"), Path(".x.npy")]) == ["summary.json-2", "x"]


# -- torchrun -------------------------------------------------------------------------------


def _torchrun(args, nproc=2, timeout=600):  # a hang guard: two interpreters start slowly on a loaded machine
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    if not torch.cuda.is_available():  # interpreted Triton only without a GPU
        env.setdefault("TRITON_INTERPRET", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "fastsd.cli", "reconstruct"] + args
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def _check_sharded_run(tmp_path, names, out, r, world, device):
    summary_file = out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {"files": []}
    errors = [rec["error"] for rec in summary["files"] if "error" in rec]
    assert r.returncode == 0, (errors, r.stdout[-3000:], r.stderr[-3000:])
    assert summary["world_size"] == world and summary["n_files"] == len(names) and summary["n_failed"] == 0
    recs = summary["files"]
    assert [Path(x["input"]).name for x in recs] == sorted(names)  # every file exactly once
    for i, rec in enumerate(recs):  # by the rank the shard assigns (sorted order, round robin)
        assert rec["status"] == "ok" and rec["rank"] == i % world
        assert Path(rec["output"]) == out / Path(rec["input"]).stem
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(Path(n).stem for n in names)
    assert r.stdout.count("outputs in") == len(names)  # one reconstruction printed per file
    # a file's result does not depend on the rank or the world size
    single = tmp_path / "single"
    assert main(["reconstruct", str(tmp_path / "in" / names[1]), "--task", "mri", "--out", str(single)]
                + FAST[:-2] + ["--device", device, "--small"]) == 0
    assert_close("scan1 reconstruction", torch.from_numpy(np.load(out / "scan1" / "reconstruction.npy")),
                 torch.from_numpy(np.load(single / "reconstruction.npy")))


def test_torchrun_two_ranks_gloo(tmp_path):
    names = _scans(tmp_path / "in", 4)
    out = tmp_path / "out"
    r = _torchrun([str(tmp_path / "in"), "--task", "mri", "--out", str(out)] + FAST)
    _check_sharded_run(tmp_path, names, out, r, 2, "cpu")
    assert json.loads((out / "summary.json").read_text())["backend"] == "gloo"


@pytest.mark.gpu
def test_torchrun_two_ranks_cuda(tmp_path):
    """On CUDA: NCCL when every rank has a GPU of its own, else Gloo with shared GPUs."""
    import torch

    names = _scans(tmp_path / "in", 4)
    out = tmp_path / "out"
    args = [str(tmp_path / "in"), "--task", "mri", "--out", str(out)] + FAST[:-2] + ["--device", "cuda", "--small"]
    r = _torchrun(args, timeout=300)
    _check_sharded_run(tmp_path, names, out, r, 2, "cuda")
    backend = json.loads((out / "summary.json").read_text())["backend"]
    assert backend == ("nccl" if torch.cuda.device_count() >= 2 else "gloo")
