"""Reference of the fused noisy-input op: a bit-compatible PyTorch port of Triton's Philox RNG.

``tl.randn(seed, offset)`` with an int64 ``offset`` runs Philox4x32-10 on the counter
``(offset_lo, offset_hi, 0, 0)`` with key ``(seed_lo, seed_hi)``, maps the first two output words
to uniforms and takes the cosine half of a Box-Muller pair. :func:`philox_normal` repeats those
steps with uint32 arithmetic emulated in int64 tensors, so CPU runs draw the same noise as the GPU
kernel (integers bit for bit, normals up to float ulps of log/cos). Seed and step stay tensors
throughout (no ``.item()``), which keeps the reference graph-safe too.

Counter convention (shared with :mod:`fastsd.kernels.noise`), for an output of ``N`` elements,
``n`` per problem, element ``j`` of problem ``b`` (flat index ``i = b n + j``) at step ``s``:

* 0-d seed: key ``seed``, counter ``s N + i``;
* per-problem seeds (B,): key ``seed[b]``, counter ``s n + j`` (problem b's noise alone).

Every step therefore draws fresh, independent noise, and equal (seed, step) pairs give equal noise.
"""
from __future__ import annotations

import torch

from fastsd._utils import noise_shape, per_problem

__all__ = ["philox", "philox_words", "philox_normal", "noise_shape", "noisy_input", "gaussian_noise"]

_M32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
# Triton's scale (largest value with (2^31 - 1) * scale < 1), as the float32 constant it compiles
# to; a 0-d CPU tensor multiplies CUDA tensors without a host-to-device copy (graph-safe).
_U32_TO_UNIFORM = torch.tensor(4.6566127342e-10, dtype=torch.float32)
_TWO_PI = 6.283185307179586


def _mul32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of the 64-bit product of constant ``a`` and uint32 values ``b``."""
    p_lo = a * (b & 0xFFFF)  # < 2^48, exact in int64
    p_hi = a * (b >> 16)
    high = (p_hi + (p_lo >> 16)) >> 16
    low = (p_lo + ((p_hi & 0xFFFF) << 16)) & _M32
    return high, low


def philox(k0, k1, c0: torch.Tensor, c1: torch.Tensor, c2=None, c3=None, rounds: int = 10):
    """Philox4x32-``rounds`` of counters ``(c0, c1, c2, c3)`` under key ``(k0, k1)``.

    All words are uint32 values held in int64 tensors (broadcastable); ``c2``/``c3`` default to 0
    as in ``tl.randint4x``. Returns the four output words."""
    c2 = torch.zeros_like(c0) if c2 is None else c2
    c3 = torch.zeros_like(c0) if c3 is None else c3
    for _ in range(rounds):
        hi_b, lo_b = _mul32(_ROUND_B, c2)
        hi_a, lo_a = _mul32(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _M32
        k1 = (k1 + _KEY_B) & _M32
    return c0, c1, c2, c3


def _uniform(u: torch.Tensor) -> torch.Tensor:
    """Triton's ``uint_to_uniform_float`` for uint32: fold the sign bit, scale to [0, 1) in fp32."""
    v = torch.where(u >= 2**31, _M32 - u, u)  # int32 bitcast, then x < 0 -> ~x
    return v.to(torch.float32) * _U32_TO_UNIFORM


def philox_words(shape, seed, step, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first two Philox output words (uint32 in int64) of every element of ``shape``.

    ``seed``: int64 tensor of shape () or (shape[0],) (or an int); ``step``: int64 0-d tensor or
    int. Follows the counter convention of the module docstring."""
    if device is None:
        device = seed.device if isinstance(seed, torch.Tensor) else torch.device("cpu")
    shape = tuple(shape)
    seed = torch.as_tensor(seed, dtype=torch.int64, device=device)
    step = torch.as_tensor(step, dtype=torch.int64, device=device)
    numel = 1
    for s in shape:
        numel *= s
    if seed.ndim == 1:  # per problem: key seed[b], counter step * n + j
        n = numel // shape[0] if shape[0] else 0
        counter = step * n + torch.arange(n, dtype=torch.int64, device=device)
        seed = seed[:, None]
    else:
        counter = step * numel + torch.arange(numel, dtype=torch.int64, device=device)
    k0, k1 = seed & _M32, (seed >> 32) & _M32  # arithmetic shift, then mask: the uint64 words
    w0, w1, _, _ = philox(k0, k1, counter & _M32, (counter >> 32) & _M32)
    return w0.reshape(shape), w1.reshape(shape)


def philox_normal(shape, seed, step, device=None) -> torch.Tensor:
    """Standard normal float32 noise of ``shape`` for (seed, step), as the Triton kernel draws it."""
    i1, i2 = philox_words(shape, seed, step, device)
    u1 = torch.clamp_min(_uniform(i1), 1.0e-7)
    th = _TWO_PI * _uniform(i2)
    r = torch.sqrt(-2.0 * torch.log(u1))
    return r * torch.cos(th)


def _pack(x: torch.Tensor) -> torch.Tensor:
    """Real float32 view of ``x`` in the output layout (complex (B,H,W) -> (B,2,H,W))."""
    if x.is_complex():
        return torch.view_as_real(x.resolve_conj()).permute(0, 3, 1, 2).to(torch.float32)
    return x.to(torch.float32)


def noisy_input(x, sigma, seed, step, scale=None, scale_value: float = 1.0, out=None) -> torch.Tensor:
    """``scale_value * scale * (x + sigma * eps)`` in float32; ``sigma``/``scale`` are 0-d or (B,),
    ``seed`` 0-d or (B,), ``step`` 0-d."""
    shape = noise_shape(x)
    eps = philox_normal(shape, seed, step, device=x.device)
    res = _pack(x) + per_problem(sigma.to(torch.float32), eps) * eps
    if scale is not None:
        res = per_problem(scale.to(torch.float32), eps) * res
    res = res * scale_value
    if out is None:
        return res.contiguous()
    return out.copy_(res)


def gaussian_noise(like: torch.Tensor, seed, step, out=None) -> torch.Tensor:
    """The noise ``eps`` that :func:`noisy_input` adds to ``like`` (float32, packed layout)."""
    eps = philox_normal(noise_shape(like), seed, step, device=like.device)
    return eps if out is None else out.copy_(eps)
