#!/usr/bin/env bash
# The native MRI backend (csrc/, fastsd._C) on a GPU machine, in the order that matters when time
# runs out: build the extension there (a .so built elsewhere is tied to that torch and Python),
# a one-call smoke test of each op against the reference (prints cuFFT/NVRTC errors plainly), the
# GPU tests of native vs reference vs Triton, then the side-by-side benchmark. Everything goes to
# ${OUT:-gpu-out}: native_gpu.txt, native_install.log, build.log, smoke.log, native_tests.log,
# native_bench.log and the benchmark's results <date>-<gpu>[-N].{json,md} (sections copy and native),
# named apart from benchmarks/gpu_check.sh's files, so that scripts/gpu_session.sh keeps both.
#   bash scripts/native_gpu_check.sh [test timeout s] [bench timeout s]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/native_gpu.txt"
NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null) || { echo "no nvcc: cannot build fastsd._C"; exit 1; }
export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")} PATH="$(dirname "$NVCC"):$PATH"
ARCH=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
"$NVCC" --version | tail -2 | tee -a "$OUT/native_gpu.txt"  # its CUDA major should match torch.version.cuda
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/native_install.log" 2>&1 || { tail -5 "$OUT/native_install.log"; exit 1; }
start=$(date +%s)
FASTSD_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=16 python3 setup.py build_ext --inplace >"$OUT/build.log" 2>&1
echo "build rc=$? in $(( $(date +%s) - start )) s (arch $ARCH, CUDA_HOME $CUDA_HOME)"; grep -iE "error|warning: " "$OUT/build.log" | head -20
ls -l fastsd/_C*.so 2>/dev/null | tee -a "$OUT/build.log"
# CUDA_LAUNCH_BLOCKING: a fault inside a callback is reported by the op that caused it
CUDA_LAUNCH_BLOCKING=1 python3 - <<'PY' 2>&1 | tee "$OUT/smoke.log"
import math, time, torch
from fastsd import _backend, _native
from fastsd.functional import mri as F
from fastsd.reference import mri as R
from fastsd.testing import rel_err
print("torch", torch.__version__, "cuda", torch.version.cuda, "| fastsd._C:", _native.error() or "loaded")
if _native.available():
    print(torch.ops.fastsd_native.native_info(), "| device arch", torch.cuda.get_device_capability())
g = torch.Generator().manual_seed(0)
for B, C, H, W in [(2, 15, 32, 30), (2, 3, 17, 13), (1, 1, 320, 320)]:
    x = torch.randn(B, 2, H, W, generator=g).cuda()
    smaps = torch.randn(C, H, W, dtype=torch.complex64, generator=g).cuda()
    mask = (torch.rand(H, W, generator=g) < 0.4).float().cuda()
    y = torch.randn(B, C, H, W, dtype=torch.complex64, generator=g).cuda()
    for name, fn, ref in [("forward", F.mri_forward, R.mri_forward), ("adjoint", F.mri_adjoint, R.mri_adjoint),
                          ("normal", F.mri_normal, R.mri_normal), ("fidelity", F.mri_fidelity, R.mri_fidelity),
                          ("dc", F.mri_dc, R.mri_dc)]:
        args = {"forward": (x,), "adjoint": (y,), "normal": (x,)}.get(name, (x, y))
        try:
            with _backend.use_backend("native"):
                t = time.perf_counter(); out = fn(*args, mask, smaps); torch.cuda.synchronize()
                ms = 1e3 * (time.perf_counter() - t)
            want = ref(*args, mask, smaps)
            print(f"{B}x{C}x{H}x{W} {name:8s} rel_err {rel_err(out, want):.2e}  first call {ms:.0f} ms")
        except Exception as e:  # report and go on: the next op may work
            print(f"{B}x{C}x{H}x{W} {name:8s} FAILED {type(e).__name__}: {str(e)[:400]}")
print("plans:", torch.ops.fastsd_native.plan_count() if _native.available() else 0)
# which cuFFT / nvJitLink / NVRTC the process loaded (cuFFT dlopens nvJitLink to link the callbacks)
libs = {l.split()[-1] for l in open("/proc/self/maps") if any(k in l for k in ("cufft", "nvJitLink", "nvrtc"))}
print("\n".join(sorted(libs)))
PY
timeout "${1:-240}" python3 -m pytest -q -p no:cacheprovider tests/kernels/test_native_mri.py tests/kernels/test_backend.py \
  2>&1 | tee "$OUT/native_tests.log" | tail -15
timeout "${2:-300}" python3 -m benchmarks.run --only copy,native --budget-s "$(( ${2:-300} - 30 ))" --out "$OUT" 2>&1 \
  | tee "$OUT/native_bench.log" | tail -40
