"""deepinv's own tests, with fastsd's physics substituted for deepinv's.

The test files installed with the pinned deepinv wheel (``deepinv/tests``, not copies) run three
times in subprocesses, on a selection of the tests that build ``MRI``, ``MultiCoilMRI``,
``Inpainting``, ``BlurFFT`` or ``Downsampling``: once with deepinv's own classes and twice with
fastsd's (:mod:`fastsd.interop.deepinv_substitute`), on their fused ops (what CUDA runs) and on
their direct path (the CPU default). Every test that passes natively on this machine must pass
with fastsd's classes in both runs (a test that fails natively does not count against fastsd),
fastsd's classes must actually have been built, and the fused, respectively direct, path must
actually have run.
Skipped where deepinv cannot be imported (the main environment: run ``scripts/test.sh --deepinv``).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import deepinv
except Exception as e:  # not installed, or a torchvision build that does not match torch
    pytest.skip(f"deepinv not usable: {type(e).__name__}: {e}", allow_module_level=True)

TESTS = Path(deepinv.__file__).parent / "tests"

# file -> (-k selection, classes it must build, least number of selected tests that build one).
# The selections take the tests that build these physics, less repeats of deepinv's slowest
# checks on configurations that run deepinv's own code anyway (power iterations and clones with
# non-circular padding), to keep the CI run short.
SELECTIONS = {
    "test_physics.py": (
        "(mri or inpainting or fftdeblur or super_resolution or composition or downsampling or upsampling "
        "or concatenation or stacking) and not matlab "
        "and not (test_clone and (reflect or replicate or constant or valid or composition or aliased or 3D "
        "or Dynamic or inpainting_clone)) "
        "and not (test_operators_norm and (replicate or valid or reflect or constant))",
        {"MRI", "MultiCoilMRI", "Inpainting", "BlurFFT", "Downsampling"},
        250,
    ),
    "test_optim.py": (
        "(test_least_square_solvers or test_least_squares_implicit_backward) "
        "and (inpainting or MultiCoilMRI or (super_resolution and lsqr))",
        {"MultiCoilMRI", "Inpainting", "Downsampling"},
        30,
    ),
    "test_unfolded.py": ("(test_unfolded and PGD-False) or (test_DEQ and False-False-False)", {"BlurFFT"}, 3),
    "test_loss.py": ("test_reducedresolution_shapes or (test_measplit and not weighted and not robust)",
                     {"Inpainting", "BlurFFT", "Downsampling"}, 4),
    "test_models.py": ("test_varnet or test_wiener_deconvolution", {"MRI", "BlurFFT"}, 2),
}


RUNS = ("native", "fused", "direct")  # deepinv's classes; fastsd's on its fused ops; fastsd's CPU default


def _start(file: str, run: str, out_dir: str):
    # Each run in its own cwd: the runs overlap, and deepinv's tests write and delete files in theirs
    # (test_physics_state_dict removes ./cache_test_physics, which failed the other run's torch.load).
    run_dir = Path(out_dir) / run
    run_dir.mkdir(exist_ok=True)
    report = run_dir / f"{file}.json"
    env = dict(os.environ, FASTSD_DEEPINV_SUBSTITUTE="0" if run == "native" else "1", FASTSD_DEEPINV_REPORT=str(report))
    if run != "native":
        env["FASTSD_DEEPINV_CPU_PATH"] = run
    env.setdefault("OMP_NUM_THREADS", "1")  # the runs share the cores
    cmd = [sys.executable, "-m", "pytest", str(TESTS / file), "-k", SELECTIONS[file][0], "-q", "-p", "no:cacheprovider",
           "-p", "fastsd.interop.deepinv_substitute", "--rootdir", str(TESTS), "-W", "ignore", "-o", "addopts="]
    proc = subprocess.Popen(cmd, cwd=run_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, report


def _run_all(file: str, out_dir: str) -> dict[str, dict]:
    """The runs (RUNS) of one selection, side by side: {run: {node id: {outcome, built, ...}}}."""
    runs = [_start(file, run, out_dir) for run in RUNS]
    results = []
    for proc, report in runs:
        out, _ = proc.communicate(timeout=3000)
        if proc.returncode not in (0, 1) or not report.exists():  # 1: some test failed (compared below)
            pytest.fail(f"deepinv's {file} did not run (exit {proc.returncode}):\n{out[-4000:]}")
        results.append(json.loads(report.read_text()))
    return dict(zip(RUNS, results))


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("deepinv-upstream"))


@pytest.mark.parametrize("file", SELECTIONS)
def test_deepinv_tests_pass_with_fastsd_physics(file, out_dir):
    runs = _run_all(file, out_dir)
    native = runs["native"]
    assert native, f"no test of {file} selected"
    assert not any(native[n]["built"] for n in native)  # the native run really was native
    _, classes, least = SELECTIONS[file]
    passed = sum(r["outcome"] == "passed" for r in native.values())
    for run, path in (("fused", "fastsd"), ("direct", "direct")):
        ours = runs[run]
        assert native.keys() == ours.keys()
        regressions = {n: ours[n]["outcome"] for n in native
                       if native[n]["outcome"] == "passed" and ours[n]["outcome"] != "passed"}
        assert not regressions, f"pass with deepinv's classes, not with fastsd's ({run}): {sorted(regressions)}"
        built = {c for r in ours.values() for c in r["built"]}
        assert built >= classes, f"fastsd classes never built: {sorted(classes - built)}"
        exercised = [n for n, r in ours.items() if r["built"] and r["outcome"] == "passed"]
        assert len(exercised) >= least, f"only {len(exercised)} passing tests built a fastsd class ({run})"
        calls = {p: sum(r["paths"].get(p, 0) for r in ours.values()) for p in ("fastsd", "deepinv", "direct")}
        assert calls[path] > 0, f"the {path} path never ran ({run})"
        print(f"{file} ({run}): {len(native)} selected, {passed} pass natively, "
              f"{sum(r['outcome'] == 'passed' for r in ours.values())} with fastsd's classes "
              f"({len(exercised)} of them build one; calls by path {calls})")
