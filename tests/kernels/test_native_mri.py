"""The native backend of the 2-D MRI operators (optional extension ``fastsd._C``, cuFFT with LTO
callbacks): backend selection on CPU (the extension is absent or simulated), and on a GPU with the
extension built, native vs reference vs Triton on odd sizes, 1 and 15 coils, shared and
per-problem masks/maps, half images, NaN-poisoned memory, torch.compile and CUDA-graph capture."""
import math
import types

import pytest
import torch

from fastsd import _backend, _native
from fastsd.functional import mri as F
from fastsd.reference import mri as R
from fastsd.testing import assert_close, complex_randn

# ---------------------------------------------------------------------------------------------
# selection (CPU): a stand-in for a CUDA tensor, the extension's presence simulated


def _cuda_like(ndim=4):
    return types.SimpleNamespace(is_cuda=True, ndim=ndim)


@pytest.fixture
def extension(monkeypatch):
    """Set whether ``fastsd._C`` counts as importable: ``extension(None)`` present, else the reason."""
    monkeypatch.setitem(_native._state, "error", _native._state.get("error"))
    monkeypatch.setitem(_backend._state, "backend", _backend._state["backend"])
    return lambda reason: _native._state.__setitem__("error", reason)


def test_absent_extension_auto_runs_triton_and_reference(extension):
    extension("ImportError: No module named 'fastsd._C'")
    with _backend.use_backend("auto"):
        assert _backend.describe(_cuda_like()) == "triton"
        assert _backend.describe(torch.zeros(1, 2, 4, 4)) == "reference"
    with _backend.use_backend("triton"):
        assert _backend.describe(_cuda_like()) == "triton"


def test_present_extension_selection(extension):
    extension(None)
    with _backend.use_backend("auto"):  # the native path is opt-in
        assert _backend.describe(_cuda_like()) == "triton"
        assert _backend.describe(torch.zeros(1, 2, 4, 4)) == "reference"
    with _backend.use_backend("native"):
        assert _backend.describe(_cuda_like()) == "native"
        assert _backend.describe(_cuda_like(5)) == "triton"  # volumes have no native path
        assert _backend.describe(_cuda_like(), "fidelity") == "triton"
        assert _backend.describe(torch.zeros(1, 2, 4, 4)) == "reference"
    with _backend.use_backend("triton"):
        assert _backend.describe(_cuda_like()) == "triton"
    with _backend.use_backend("reference"):
        assert _backend.describe(_cuda_like()) == "reference"


def test_forcing_native_without_extension_is_a_one_line_error(extension, backend_from_env):
    extension("ImportError: No module named 'fastsd._C'")
    with pytest.raises(RuntimeError, match="needs the CUDA extension fastsd._C") as err:
        with _backend.use_backend("native"):
            pass
    assert "\n" not in str(err.value) and "FASTSD_BUILD_CUDA=1" in str(err.value)
    with pytest.raises(RuntimeError, match="FASTSD_BACKEND='native' needs"):
        backend_from_env("native")


def test_error_is_one_line_or_none():
    reason = _native.error()
    assert reason is None or (isinstance(reason, str) and "\n" not in reason)
    if not torch.cuda.is_available():
        assert _backend.describe(torch.zeros(1, 2, 4, 4)) == "reference"


# ---------------------------------------------------------------------------------------------
# GPU: native vs reference vs Triton

needs_native = pytest.mark.skipif(not (torch.cuda.is_available() and _native.available()),
                                  reason=f"needs the built extension fastsd._C ({_native.error()})"
                                  if torch.cuda.is_available() else "needs a CUDA GPU")

# (B, C, H, W, per-problem mask/maps); C = 0 means single coil without maps
CASES = [
    (2, 3, 17, 13, False),
    (2, 0, 16, 12, False),
    (3, 2, 9, 11, True),
    (2, 1, 10, 14, False),
    (2, 15, 32, 30, False),
    (2, 15, 33, 31, True),
]


def _problem(case, seed=0):
    B, C, H, W, batched = case
    g = torch.Generator().manual_seed(seed)

    x = torch.randn(B, 2, H, W, generator=g).cuda()
    smaps = None if C == 0 else complex_randn(*((B,) if batched else ()), C, H, W, gen=g, device="cuda")
    mask = (torch.rand(*((B,) if batched else ()), H, W, generator=g) < 0.4).float().cuda()
    y = complex_randn(B, max(C, 1), H, W, gen=g, device="cuda")
    return x, smaps, mask, y


def _poison_allocator(nbytes=64 << 20):
    """Fill free cached blocks with NaN, so outputs allocated next start as NaN."""
    torch.empty(nbytes // 4, device="cuda").fill_(float("nan"))
    torch.cuda.synchronize()


def _run(name, x, y, mask, smaps, lam=math.inf):
    return {
        "forward": lambda: F.mri_forward(x, mask, smaps),
        "adjoint": lambda: F.mri_adjoint(y, mask, smaps),
        "normal": lambda: F.mri_normal(x, mask, smaps),
        "fidelity": lambda: F.mri_fidelity(x, y, mask, smaps),
        "dc": lambda: F.mri_dc(x, y, mask, smaps, lam),
    }[name]()


@pytest.mark.gpu
@needs_native
@pytest.mark.parametrize("op", ["forward", "adjoint", "normal", "fidelity", "dc"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:4])) + ("-batched" if c[4] else ""))
def test_native_matches_reference_and_triton(case, op):
    x, smaps, mask, y = _problem(case)
    got = {}
    for backend in ("reference", "triton", "native"):
        with _backend.use_backend(backend):
            assert _backend.describe(x) == backend
            _poison_allocator()
            got[backend] = _run(op, x, y, mask, smaps)
    for lam in ((0.3, 0.0) if op == "dc" else ()):
        with _backend.use_backend("native"):
            dc = _run(op, x, y, mask, smaps, lam)
        assert_close(f"native dc, lam {lam}", dc, R.mri_dc(x, y, mask, smaps, lam))
    native = got["native"]
    for part in native if isinstance(native, tuple) else (native,):
        assert not torch.isnan(torch.view_as_real(part) if part.is_complex() else part).any()
    assert_close(f"native {op} vs reference", native, got["reference"])
    assert_close(f"native {op} vs triton", native, got["triton"])


@pytest.mark.gpu
@needs_native
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_native_half_images(dtype):
    x, smaps, mask, y = _problem(CASES[0])
    xh = x.to(dtype)
    with _backend.use_backend("native"):
        loss, grad = F.mri_fidelity(xh, y, mask, smaps)
        dc = F.mri_dc(xh, y, mask, smaps, 0.5)
        k = F.mri_forward(xh, mask, smaps)
    loss_ref, grad_ref = R.mri_fidelity(xh.float(), y, mask, smaps)
    assert grad.dtype == dtype and dc.dtype == dtype
    assert_close("loss", loss, loss_ref)
    assert_close("grad", grad, grad_ref, dtype=dtype)
    assert_close("dc", dc, R.mri_dc(xh.float(), y, mask, smaps, 0.5), dtype=dtype)
    assert_close("forward", k, R.mri_forward(xh.float(), mask, smaps))


@pytest.mark.gpu
@needs_native
def test_native_broadcast_mask_and_strided_input():
    """A readout mask (1,W) is expanded, a channels-last image made contiguous."""
    x, smaps, _, y = _problem(CASES[0])
    mask = (torch.rand(1, x.shape[-1]) < 0.5).float().cuda()
    xs = x.to(memory_format=torch.channels_last)
    with _backend.use_backend("native"):
        got = F.mri_fidelity(xs, y, mask, smaps)
    want = R.mri_fidelity(x, y, mask, smaps)
    assert_close("mri_fidelity", got, want)


@pytest.mark.gpu
@needs_native
def test_native_opcheck():
    x, smaps, mask, y = _problem(CASES[2])
    ops = torch.ops.fastsd_native
    for op, args in [
        (ops.mri_forward, (x, mask, smaps)),
        (ops.mri_adjoint, (y, mask, smaps)),
        (ops.mri_normal, (x, mask, smaps)),
        (ops.mri_fidelity, (x, y, mask, smaps)),
        (ops.mri_dc, (x, y, mask, smaps, 0.5)),
    ]:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.gpu
@needs_native
def test_native_compiled_fidelity_gradient(maybe_compile):
    x, smaps, mask, y = _problem(CASES[4])

    def loss_fn(x):
        return F.mri_fidelity(x, y, mask, smaps)[0].sum()

    xr = x.clone().requires_grad_()
    with _backend.use_backend("native"):
        xr.grad = None
        maybe_compile(loss_fn)(xr).backward()
    want = R.mri_fidelity(x, y, mask, smaps)[1]
    assert_close("mri_fidelity backward", xr.grad, want)


@pytest.mark.gpu
@needs_native
def test_native_cuda_graph_replay_and_capture_without_plan():
    x, smaps, mask, y = _problem(CASES[4])
    x_in = x.clone()
    with _backend.use_backend("native"):
        # creates the plans (capture runs on a side stream); dc shares fidelity's inverse plan, so
        # the graph below replays one plan with two argument blocks
        torch.ops.fastsd.mri_fidelity(x_in, y, mask, smaps)
        torch.ops.fastsd.mri_dc(x_in, y, mask, smaps, 0.5)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss, grad = torch.ops.fastsd.mri_fidelity(x_in, y, mask, smaps)
            dc = torch.ops.fastsd.mri_dc(grad, y, mask, smaps, 0.5)
        x2 = torch.randn_like(x)
        x_in.copy_(x2)
        graph.replay()
        torch.cuda.synchronize()
        loss_ref, grad_ref = R.mri_fidelity(x2, y, mask, smaps)
        assert_close("loss", loss, loss_ref)
        assert_close("grad", grad, grad_ref)
        assert_close("dc", dc, R.mri_dc(grad, y, mask, smaps, 0.5))
        # a shape never run before cannot create its plan inside a capture
        x3, s3, m3, y3 = _problem((1, 2, 21, 19, False))
        with pytest.raises(RuntimeError, match="before CUDA graph capture"):
            with torch.cuda.graph(torch.cuda.CUDAGraph()):
                torch.ops.fastsd.mri_fidelity(x3, y3, m3, s3)
