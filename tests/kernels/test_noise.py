"""Noisy network input with in-kernel Philox noise: the PyTorch Philox port against published
Random123 known answers and against Triton's own ``tl.randint4x`` (bit for bit), the kernel against
the reference, noise statistics, graph safety (step read from device memory), autograd, opcheck
and input validation. Kernels run in the interpreter on CPU and compiled on CUDA."""
import pytest
import torch
import triton
import triton.language as tl

import fastsd.functional.noise as FN
from fastsd.kernels import noise as K
from fastsd.kernels import utils as KU
from fastsd.reference import noise as R
from fastsd.testing import assert_close, poisoned_like

M32 = 0xFFFFFFFF

# Random123 tests/kat_vectors (github.com/DEShawResearch/random123): rounds, counter[4], key[2] -> out[4]
KAT = [
    (10, (0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (10, (M32, M32, M32, M32), (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (10, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    (7, (M32, M32, M32, M32), (M32, M32), (0x5207DDC2, 0x45165E59, 0x4D8EE751, 0x8C52F662)),
    (7, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A)),
]


def _i64(*vals, device="cpu"):
    return torch.tensor(vals, dtype=torch.int64, device=device)


def _rand(shape, dtype, seed, device):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        return torch.randn(shape, generator=g, dtype=dtype).to(device)
    return torch.randn(shape, generator=g).to(dtype).to(device)


def _pack(x):
    """Plain-expression packing of complex (B,H,W) to real (B,2,H,W)."""
    return torch.view_as_real(x).permute(0, 3, 1, 2) if x.is_complex() else x


# -- Philox reference -----------------------------------------------------------------------------


@pytest.mark.parametrize("rounds,ctr,key,want", KAT)
def test_philox_known_answers(rounds, ctr, key, want):
    k = [torch.tensor([v], dtype=torch.int64) for v in key]
    c = [torch.tensor([v], dtype=torch.int64) for v in ctr]
    got = R.philox(*k, *c, rounds=rounds)
    assert [int(w) for w in got] == list(want)


@triton.jit
def _randint_words_kernel(seed_ptr, step_ptr, w0_ptr, w1_ptr, n, total, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < n
    counter = tl.load(step_ptr) * total + offs.to(tl.int64)
    w0, w1, _, _ = tl.randint4x(tl.load(seed_ptr), counter)
    tl.store(w0_ptr + offs, w0.to(tl.int64), mask=valid)
    tl.store(w1_ptr + offs, w1.to(tl.int64), mask=valid)


@pytest.mark.parametrize("seed,step", [(0, 0), (123456789, 7), (-3, 2**33 // 300), (2**40 + 5, 2**34)],
                         ids=["zero", "small", "neg-seed-hi-counter", "big-seed"])
def test_reference_words_equal_triton_randint4x(seed, step, kernel_device):
    """The reference's Philox words equal Triton's for int64 counters (hi word in use) and 64-bit
    seeds (both key words in use): the integer stream is bit-identical."""
    n = 300
    s, t = _i64(seed, device=kernel_device)[0], _i64(step, device=kernel_device)[0]
    w0 = torch.full((n,), -1, dtype=torch.int64, device=kernel_device)
    w1 = torch.full_like(w0, -1)
    _randint_words_kernel[(triton.cdiv(n, 128),)](s, t, w0, w1, n, n, BLOCK=128)
    r0, r1 = R.philox_words((3, 100), s, t)
    assert torch.equal(w0, r0.flatten()) and torch.equal(w1, r1.flatten())
    assert int(w0.min()) >= 0 and int(w0.max()) <= M32


def test_reference_normals_follow_box_muller():
    """philox_normal is sqrt(-2 ln u1) cos(2 pi u2) of the words mapped to [0, 1), in float64."""
    seed, step = torch.tensor(11), torch.tensor(3)
    w0, w1 = R.philox_words((4, 250), seed, step)
    fold = lambda w: torch.where(w >= 2**31, M32 - w, w).double() * 4.6566127342e-10  # noqa: E731
    u1, u2 = fold(w0).clamp_min(1e-7), fold(w1)
    want = torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)
    got = R.philox_normal((4, 250), seed, step)
    assert got.dtype == torch.float32
    assert_close("philox_normal", got, want)


# -- kernel vs reference --------------------------------------------------------------------------

CASES = [  # shape, dtype, per-problem sigma, scale ('none' | 'value' | 'tensor'), per-problem seeds
    ((3, 5, 7, 9), torch.float32, False, "none", False),
    ((2, 1, 13, 11), torch.float32, True, "tensor", True),
    ((3, 5, 7, 9), torch.float16, True, "value", False),
    ((2, 1, 13, 11), torch.bfloat16, False, "tensor", True),
    ((4, 37), torch.float32, True, "value", True),
    ((2, 13, 11), torch.complex64, True, "tensor", False),
]


def _args(case, device, seed=0):
    shape, dtype, per_sigma, scale, per_seed = case
    x = _rand(shape, dtype, seed, device)
    B = shape[0]
    sigma = (torch.rand(B, dtype=torch.float64) + 0.1 if per_sigma else torch.tensor(0.7)).to(device)
    sc = {"none": None, "value": None, "tensor": torch.rand(B) + 0.5}[scale]
    sc = sc.to(device) if sc is not None else None
    value = 1.7 if scale == "value" else 1.0
    seeds = _i64(*range(40, 40 + B), device=device) if per_seed else torch.tensor(99, device=device)
    return x, sigma, sc, value, seeds, torch.tensor(5, device=device)


def _ids(c):
    return f"{'x'.join(map(str, c[0]))}-{str(c[1])[6:]}-{c[3]}" + ("-seeds" if c[4] else "")


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_kernel_matches_reference(case, kernel_device):
    x, sigma, sc, value, seed, step = _args(case, kernel_device)
    want = R.noisy_input(x, sigma, seed, step, sc, value)
    out = poisoned_like(torch.empty(want.shape, device=kernel_device))
    got = K.noisy_input(x, sigma, seed, step, sc, value, out=out)
    assert got.data_ptr() == out.data_ptr() and got.dtype == torch.float32
    assert not got.isnan().any()
    # integers are bit-equal (see above); normals differ by float ulps of log/cos only (the
    # max-abs bound leaves room for r = sqrt(-2 ln u1) near u1 = 1, where an ulp of ln is large)
    assert_close("noisy_input", got, want)
    assert (got - want).abs().max() < 1e-3
    # independent plain expression around the reference noise
    eps = R.philox_normal(want.shape, seed, step).to(kernel_device)
    B, nd = x.shape[0], want.ndim
    per = lambda v: v.float().reshape((-1,) + (1,) * (nd - 1))  # noqa: E731
    expr = value * (per(sc) if sc is not None else 1.0) * (_pack(x).float() + per(sigma) * eps)
    assert_close("noisy_input vs expression", got, expr, dtype=x.dtype)
    assert got.shape == ((B, 2) + x.shape[1:] if x.is_complex() else x.shape)


@pytest.mark.parametrize("block", [1024, 64])
def test_gaussian_noise_kernel_matches_reference(kernel_device, block):
    like = torch.empty(3, 5, 20, device=kernel_device)
    for seed in (torch.tensor(1, device=kernel_device), _i64(4, 5, 6, device=kernel_device)):
        out = poisoned_like(like)
        got = K.gaussian_noise(like, seed, torch.tensor(2, device=kernel_device), out=out, block=block)
        assert got.data_ptr() == out.data_ptr()
        want = R.gaussian_noise(like, seed, torch.tensor(2, device=kernel_device))
        assert (got - want).abs().max() < 1e-3
        assert_close("gaussian_noise", got, want)


def test_strided_inputs(kernel_device):
    """Non-contiguous x (permuted, sliced, 5-D with unmergeable dims, complex transposed) is read
    through its strides and gives the noise of its contiguous copy."""
    sigma, seed, step = (torch.tensor(v, device=kernel_device) for v in (0.3, 8, 1))
    base = _rand((2, 6, 5, 4, 3), torch.float32, 1, kernel_device)
    xs = [base.permute(0, 3, 1, 2, 4)[..., 1], base[:, ::2, :, ::2], base.permute(0, 4, 3, 2, 1),
          _rand((3, 9, 8), torch.complex64, 2, kernel_device).transpose(1, 2)]
    for x in xs:
        assert not x.is_contiguous()
        got = K.noisy_input(x, sigma, seed, step)
        want = K.noisy_input(x.contiguous(), sigma, seed, step)
        assert torch.equal(got, want)
        assert_close("strided noisy_input", got, R.noisy_input(x, sigma, seed, step))


def test_int64_index_path(kernel_device, monkeypatch):
    """The int64 within-problem index path (taken for > 2^31 elements per problem) gives the same
    result; forced here on a small tensor so it is compiled and checked."""
    x, sigma, sc, value, seed, step = _args(CASES[1], kernel_device)
    want = K.noisy_input(x, sigma, seed, step, sc, value, block=64)
    monkeypatch.setattr(KU, "needs_int64", lambda n, b: True)
    assert torch.equal(K.noisy_input(x, sigma, seed, step, sc, value, block=64), want)


def test_complex_packing_is_real_then_imag(kernel_device):
    x = _rand((2, 5, 6), torch.complex64, 3, kernel_device)
    seed, step = torch.tensor(4, device=kernel_device), torch.tensor(0, device=kernel_device)
    got = K.noisy_input(x, torch.tensor(0.0, device=kernel_device), seed, step)
    assert torch.equal(got[:, 0], x.real) and torch.equal(got[:, 1], x.imag)


def test_empty_batch(kernel_device):
    x = torch.empty(0, 3, 4, device=kernel_device)
    out = K.noisy_input(x, torch.tensor(1.0, device=kernel_device), torch.tensor(0, device=kernel_device),
                        torch.tensor(0, device=kernel_device))
    assert out.shape == (0, 3, 4)


# -- statistics and stream properties -------------------------------------------------------------

N_STAT = (2, 50_000)  # 1e5 samples


def _eps(seed, step, device, shape=N_STAT):
    """Noise through the public op: the reference on CPU, the kernel on CUDA (the two streams are
    equal, see the kernel-vs-reference tests; the interpreter is too slow for 1e5 samples)."""
    like = torch.empty(shape, device=device)
    eps = FN.gaussian_noise(like, torch.as_tensor(seed, device=device), torch.tensor(step, device=device))
    return eps.cpu().double()


def _corr(a, b):
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_noise_statistics(device):
    """1e5 samples: mean within 0.02 (~6 standard errors of 0.0032), std within 0.015 (~7 s.e.),
    mass within 1σ / 2σ / beyond 3σ within 0.01 / 0.006 / 0.001 of N(0,1)'s 0.6827 / 0.9545 /
    0.0027, lag-1 autocorrelation below 0.02."""
    e = _eps(12345, 0, device)
    a = e.abs()
    assert abs(float(e.mean())) < 0.02
    assert abs(float(e.std()) - 1) < 0.015
    assert abs(float((a < 1).double().mean()) - 0.6827) < 0.01
    assert abs(float((a < 2).double().mean()) - 0.9545) < 0.006
    assert abs(float((a > 3).double().mean()) - 0.0027) < 0.001
    f = e.flatten()
    assert abs(_corr(f[1:], f[:-1])) < 0.02


def test_noise_streams_across_steps_and_seeds(device):
    """Steps s and s+1 are uncorrelated (|r| < 0.02 on 1e5 pairs, s.e. 0.0032); equal (seed, step)
    give equal noise; different seeds give different, uncorrelated noise; per-problem seeds
    reproduce the single-problem streams; a counter beyond 2^32 still gives N(0,1)."""
    d = device
    e0, e1 = _eps(7, 3, d), _eps(7, 4, d)
    assert abs(_corr(e0, e1)) < 0.02
    assert torch.equal(e0, _eps(7, 3, d))
    e_other = _eps(8, 3, d)
    assert not torch.equal(e0, e_other) and abs(_corr(e0, e_other)) < 0.02
    rows = _eps(_i64(7, 9), 3, d, shape=(2, 1000))
    assert torch.equal(rows[0], _eps(7, 3, d, shape=(1, 1000))[0])
    assert torch.equal(rows[1], _eps(9, 3, d, shape=(1, 1000))[0])
    far = _eps(7, 2**33, d, shape=(1, 20_000))  # counter hi word != 0
    assert abs(float(far.mean())) < 0.03 and abs(float(far.std()) - 1) < 0.03


def test_step_read_from_device_memory(device):
    """Graph safety: bumping the step tensor in place (same tensor object) changes the noise to
    the noise of the new step; seeds work likewise. Public API on every device."""
    x = torch.zeros(2, 3, 8, device=device)
    sigma, seed, step = torch.tensor(1.0, device=device), torch.tensor(3, device=device), torch.tensor(0, device=device)
    a = FN.noisy_input(x, sigma, seed, step)
    step.add_(1)
    b = FN.noisy_input(x, sigma, seed, step)
    assert not torch.allclose(a, b)
    assert torch.equal(b, FN.noisy_input(x, sigma, seed, torch.tensor(1, device=device)))
    step.sub_(1)
    assert torch.equal(a, FN.noisy_input(x, sigma, seed, step))
    assert torch.equal(a, FN.gaussian_noise(x, seed, step))


@pytest.mark.gpu
def test_cuda_graph_replay_draws_new_noise():
    """Captured once, replayed after in-place step bumps: each replay equals the reference noise
    of the current step."""
    x = torch.randn(2, 2, 33, 17, device="cuda")
    sigma, seed, step = (torch.tensor(v, device="cuda") for v in (0.5, 21, 0))
    out = FN.noisy_input(x, sigma, seed, step, validate=False)  # warm-up (compile)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = FN.noisy_input(x, sigma, seed, step, validate=False)
    for s in range(3):
        step.fill_(s)
        g.replay()
        torch.cuda.synchronize()
        want = R.noisy_input(x.cpu(), sigma.cpu(), seed.cpu(), torch.tensor(s))
        assert_close("replayed noisy_input", out, want)


# -- public op: autograd, opcheck, validation ------------------------------------------------------


@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[5]], ids=_ids)
def test_public_op_matches_reference_and_autograd(case, device, maybe_compile):
    """Value and backward against the reference and autograd through the plain expression, eager
    and under torch.compile(fullgraph=True)."""
    x, sigma, sc, value, seed, step = _args(case, device)
    scale = sc if sc is not None else value
    xl = x.clone().requires_grad_(True)
    out = maybe_compile(lambda *a: FN.noisy_input(*a, validate=False))(xl, sigma, seed, step, scale)
    assert_close("noisy_input op", out, R.noisy_input(x, sigma, seed, step, sc, value))
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(device)
    (out * w).sum().backward()
    # autograd through the plain expression scale * (pack(x) + sigma * eps)
    xr = x.clone().requires_grad_(True)
    eps = FN.gaussian_noise(x, seed, step)
    per = lambda v: v.float().reshape((-1,) + (1,) * (out.ndim - 1))  # noqa: E731
    expr = (per(sc) if sc is not None else value) * (_pack(xr).float() + per(sigma) * eps)
    (expr * w).sum().backward()
    assert xl.grad.dtype == x.dtype
    assert_close("x.grad", xl.grad, xr.grad, dtype=x.dtype)


@pytest.mark.parametrize("complex_x", [False, True])
def test_opcheck(device, complex_x):
    shape, dtype = ((2, 5, 6), torch.complex64) if complex_x else ((2, 3, 5, 6), torch.float32)
    x = _rand(shape, dtype, 4, device).requires_grad_(True)
    seed, step = torch.tensor(1, device=device), torch.tensor(2, device=device)
    sigma = torch.tensor([0.2, 0.4], device=device)
    ops = torch.ops.fastsd
    if complex_x:  # per-problem seeds and a scale tensor
        args = (x, sigma, _i64(3, 4, device=device), step, sigma + 1, 1.0)
    else:
        args = (x, sigma, seed, step, None, 1.5)
    torch.library.opcheck(ops.noisy_input.default, args)
    torch.library.opcheck(ops.gaussian_noise.default, (x.detach(), seed, step))


def test_bad_inputs_raise():
    x = torch.randn(2, 3, 4)
    s, seed, step = torch.tensor(0.5), torch.tensor(1), torch.tensor(0)
    cases = [
        (lambda: FN.noisy_input(x.long(), s, seed, step), "x has dtype int64"),
        (lambda: FN.noisy_input(x.double(), s, seed, step), "x has dtype float64"),
        (lambda: FN.noisy_input(torch.tensor(1.0), s, seed, step), "batch dimension"),
        (lambda: FN.noisy_input(torch.randn(2, 3, 4, 5, dtype=torch.complex64), s, seed, step),
         r"complex x must have shape \(B, H, W\)"),
        (lambda: FN.noisy_input(x, torch.ones(3), seed, step), r"sigma must be 0-d or have shape \(2,\)"),
        (lambda: FN.noisy_input(x, torch.tensor(1), seed, step), "sigma has dtype int64"),
        (lambda: FN.noisy_input(x, torch.tensor(float("nan")), seed, step), "sigma contains non-finite"),
        (lambda: FN.noisy_input(x, s, seed, step, scale=torch.tensor(float("inf"))), "scale contains non-finite"),
        (lambda: FN.noisy_input(x, s, seed, step, scale=float("nan")), "scale must be finite"),
        (lambda: FN.noisy_input(x, s, seed, step, scale=torch.ones(5)), r"scale must be 0-d or have shape \(2,\)"),
        (lambda: FN.noisy_input(x, s, seed.int(), step), "seed has dtype int32"),
        (lambda: FN.noisy_input(x, s, 7, step), "seed must be a torch.Tensor"),
        (lambda: FN.noisy_input(x, s, _i64(1, 2, 3), step),
         r"seed must be an int64 tensor of shape 0-d or shape \(2,\)"),
        (lambda: FN.noisy_input(x, s, seed, _i64(1, 2)), "step must be an int64 tensor of shape 0-d"),
        (lambda: FN.noisy_input(x, s, seed.to("meta"), step), "seed is on meta but x is on cpu"),
        (lambda: FN.noisy_input(x, s.to("meta"), seed, step), "same device"),
        (lambda: FN.gaussian_noise(x, seed, step.float()), "step has dtype float32"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fn()


def test_launcher_rejects_wrong_out_buffer():
    x = torch.randn(2, 3)
    s, seed, step = torch.tensor(0.5), torch.tensor(1), torch.tensor(0)
    with pytest.raises(ValueError, match="out must be a contiguous float32"):
        K.noisy_input(x, s, seed, step, out=torch.empty(2, 3, dtype=torch.float16))
    with pytest.raises(ValueError, match="out must be a contiguous float32"):
        K.noisy_input(x, s, seed, step, out=torch.empty(3, 2).t())

