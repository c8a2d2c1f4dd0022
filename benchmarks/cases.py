"""Problems, byte counts and step builders shared by the benchmark sections and the pytest suites.

Every fused op is paired with its plain-PyTorch reference on the same inputs; both count the same
``bytes_moved`` (the traffic of the fused pipeline, see :func:`mri_bytes`), so their GB/s ratio is
their speed ratio. SDI inner steps are assembled like :class:`fastsd.solvers.sdi.SelfDiffusion`
assembles them for MRI (un-squared residual norm + 1e-4 TV, Adam lr 1e-3, one
:class:`~fastsd.graphs.step_graph.SDIStep` run through a :class:`~fastsd.graphs.step_graph.StepGraph`).
"""
from __future__ import annotations

import os
import re
import statistics

import torch

# Compiled kernels on a GPU: the interpreter flag (tests set it on CPU-only machines) must not leak
# into a GPU benchmark. Kernel modules are imported lazily, so clearing it here is early enough.
TRITON_INTERPRET_CLEARED = False
if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") == "1":
    del os.environ["TRITON_INTERPRET"]
    TRITON_INTERPRET_CLEARED = True

from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import fastsd.functional.fidelity  # noqa: E402,F401  (registers fastsd::masked_fidelity)
import fastsd.functional.mri  # noqa: E402,F401  (registers fastsd::mri_*)
import fastsd.functional.noise  # noqa: E402,F401  (registers fastsd::noisy_input)
from fastsd.data import mri_slice  # noqa: E402
from fastsd.graphs.step_graph import BatchedNet, SDIStep, StepGraph, graph_safe_adam  # noqa: E402
from fastsd.nets.unet import UNet  # noqa: E402
from fastsd.ops.coils import birdcage_maps  # noqa: E402
from fastsd.ops.masks import equispaced_mask  # noqa: E402
from fastsd.ops.mri import MRI  # noqa: E402
from fastsd.reference import fidelity as ref_fidelity  # noqa: E402
from fastsd.reference import mri as ref_mri  # noqa: E402
from fastsd.reference import noise as ref_noise  # noqa: E402
from fastsd.solvers.sdi import total_variation  # noqa: E402
from fastsd.tasks import simulate_mri  # noqa: E402

_ops = torch.ops.fastsd

NETS = ("unet-paper", "unet-small")


def target_entry(value, threshold: float, rule: str) -> dict:
    """One named target of the results JSON: the measured value (None: not measured), its rule and
    whether it passes (None when unmeasured)."""
    ok = None if value is None else (value >= threshold if rule == ">=" else value <= threshold)
    return dict(value=value, threshold=threshold, rule=rule, **{"pass": ok})


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device) -> None:
    """Wait for ``device``'s queued work (CUDA; a no-op elsewhere), so host timers measure it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def find_result(results: list[dict], name: str) -> dict | None:
    """The timed record called ``name`` (not a skip or an error), or None."""
    return next((r for r in results if r["name"] == name and "median_s" in r), None)


def seed_summary(runs: list[dict], keys) -> dict:
    """The seeds of ``runs`` and, for each of ``keys`` that the runs report, its mean, min and max
    over them (``<key>_mean``, ``<key>_min``, ``<key>_max``)."""
    out = dict(seeds=[r["seed"] for r in runs])
    for key in keys:
        vals = [r[key] for r in runs if key in r]
        if vals:
            out.update({f"{key}_mean": statistics.mean(vals), f"{key}_min": min(vals), f"{key}_max": max(vals)})
    return out


def make_net(kind: str, seed: int = 0) -> UNet:
    """'unet-paper': width 64, depth 5 (~88 M parameters); 'unet-small': the CPU preset (width 8, depth 4)."""
    if kind == "unet-paper":
        return UNet(2, 2, width=64, depth=5, seed=seed)
    if kind == "unet-small":
        return UNet.small(2, 2, seed=seed)
    raise ValueError(f"unknown net {kind!r}; choose from {NETS}")


def case_name(H: int, W: int, C: int) -> str:
    return f"mri-{H}x{W}-{C}coil"


# ---------------------------------------------------------------------------------------------
# MRI problems


def mri_problem(B: int, C: int, H: int, W: int, device, seed: int = 0) -> dict:
    """Random image batch x (B,2,H,W), 4x equispaced mask with min(20, W/8) ACS lines, birdcage
    maps for C > 1, and y = A x; everything on ``device``."""
    g = torch.Generator().manual_seed(seed)
    mask = equispaced_mask((H, W), 4, acs_lines=max(2, min(20, W // 8)))
    smaps = birdcage_maps(C, (H, W)) if C > 1 else None
    op = MRI(mask, smaps).to(device)
    x = torch.randn(B, 2, H, W, generator=g).to(device)
    with torch.no_grad():  # the reference, so a kernel failure cannot take the reference timings with it
        y = ref_mri.mri_forward(x, op.mask, op.smaps)
    return dict(op=op, x=x, y=y, mask=op.mask, smaps=op.smaps, B=B, C=C, H=H, W=W)


def mri_bytes(kind: str, B: int, C: int, H: int, W: int, coil_maps: bool, x_bytes: int = 4) -> dict:
    """Bytes of DRAM traffic of the fused MRI pipeline, counted per pass.

    Kernel passes: ``pre_fft`` reads x (and the coil maps once) and writes the coil spectra;
    ``post_fft`` reads the spectrum (and y in residual/dc modes, and the mask once) and writes one
    spectrum; ``post_ifft`` reads the spectrum (and the maps) and writes the image. Each cuFFT call
    is counted as one read and one write of the spectra (a lower bound: large FFTs take more
    passes). ``io`` is the compulsory traffic (every input read once, every output written once).
    """
    N = H * W
    img = B * 2 * N * x_bytes  # real image (B,2,H,W)
    spec = B * C * N * 8  # complex64 spectra (B,C,H,W)
    maps = C * N * 8 if coil_maps else 0
    mask = N * 4
    pre = img + maps + spec
    fft = 2 * spec
    post_ifft = spec + maps + img
    if kind == "forward":
        passes = pre + fft + (spec + mask + spec)
        io = img + maps + mask + spec
    elif kind == "adjoint":
        passes = (spec + mask + spec) + fft + post_ifft
        io = spec + mask + maps + img
    elif kind == "normal":
        passes = pre + fft + (spec + mask + spec) + fft + post_ifft
        io = img + mask + maps + img
    elif kind in ("fidelity", "dc"):
        passes = pre + fft + (2 * spec + mask + spec) + fft + post_ifft
        io = img + spec + mask + maps + img + (B * 4 if kind == "fidelity" else 0)
    else:
        raise ValueError(kind)
    return dict(bytes_moved=passes, io_bytes=io)


def case_shape(name: str) -> tuple[int, int]:
    """(size, coils) from a case name ``mri-{N}x{N}-{C}coil``."""
    m = re.fullmatch(r"mri-(\d+)x\1-(\d+)coil", name)
    if m is None:
        raise ValueError(f"case names read 'mri-<N>x<N>-<C>coil', got {name!r}")
    return int(m.group(1)), int(m.group(2))


def mri_case(name: str, device, batch: int = 1) -> dict:
    """Truth x (batch, 2, N, N), operator and y = A x for a named full-solve problem (the bundled
    head slice with a smooth phase, birdcage maps, 4x equispaced mask). A batch holds ``batch``
    slices of a synthetic scan: the bundled slice shifted and rescaled per slice."""
    size, coils = case_shape(name)
    x = mri_slice(size, phase="smooth")
    if batch > 1:
        x = torch.cat([torch.roll(x, (2 * b, -b), dims=(-2, -1)) * (1.0 - 0.02 * b) for b in range(batch)])
    x = x.to(device)
    mask = equispaced_mask((size, size), 4, acs_lines=min(20, size // 8)).to(device)
    with torch.no_grad():
        y, op = simulate_mri(x, mask, coils)  # the CLI's simulated acquisition
    return dict(name=name, x=x, op=op, y=y, size=size, coils=coils)


# ---------------------------------------------------------------------------------------------
# op cases


@dataclass
class OpCase:
    """One fused op and its reference on the same inputs; ``fused`` runs the custom op
    (``torch.ops.fastsd.*``: Triton on CUDA, the reference on CPU), ``reference`` the plain
    PyTorch function of :mod:`fastsd.reference`."""

    op: str
    size: str
    params: dict
    fused: Callable[[], object]
    reference: Callable[[], object] | None
    bytes_moved: int
    io_bytes: int
    keep: list = field(default_factory=list, repr=False)  # tensors the closures use


def mri_op_calls(p: dict) -> dict:
    """Each MRI op on problem ``p`` (:func:`mri_problem`) as ``name -> (custom op, reference)``
    zero-argument calls: ``torch.ops.fastsd.mri_<name>`` runs whichever backend is selected."""
    x, y, mask, smaps = p["x"], p["y"], p["mask"], p["smaps"]
    return {
        "forward": (lambda: _ops.mri_forward(x, mask, smaps), lambda: ref_mri.mri_forward(x, mask, smaps)),
        "adjoint": (lambda: _ops.mri_adjoint(y, mask, smaps), lambda: ref_mri.mri_adjoint(y, mask, smaps)),
        "normal": (lambda: _ops.mri_normal(x, mask, smaps), lambda: ref_mri.mri_normal(x, mask, smaps)),
        "fidelity": (lambda: _ops.mri_fidelity(x, y, mask, smaps), lambda: ref_mri.mri_fidelity(x, y, mask, smaps)),
        "dc": (lambda: _ops.mri_dc(x, y, mask, smaps, float("inf")),
               lambda: ref_mri.mri_dc(x, y, mask, smaps, float("inf"))),
    }


def mri_op_cases(B: int, C: int, H: int, W: int, device, size: str,
                 ops=("forward", "adjoint", "fidelity", "dc")) -> list[OpCase]:
    p = mri_problem(B, C, H, W, device)
    x, y, mask, smaps = p["x"], p["y"], p["mask"], p["smaps"]
    params = dict(B=B, C=C, H=H, W=W, x_dtype="float32", coil_maps=smaps is not None)
    calls = mri_op_calls(p)
    out = []
    for name in ops:
        f, r = calls[name]
        nbytes = mri_bytes(name, B, C, H, W, smaps is not None)
        out.append(OpCase(f"mri_{name}", size, params, f, r, keep=[x, y, mask, smaps], **nbytes))
    return out


def mri_kernel_cases(B: int, C: int, H: int, W: int, device, size: str) -> list[OpCase]:
    """The three Triton kernels of the MRI pipeline alone (CUDA only; no reference counterpart).
    Byte counts are exact: every operand read once, the output written once."""
    from fastsd.kernels import mri as mri_kernels

    p = mri_problem(B, C, H, W, device)
    x, y, mask, smaps = p["x"], p["y"], p["mask"], p["smaps"]
    k = torch.fft.fft2(mri_kernels.pre_fft(x, smaps), norm="ortho")
    N, spec = H * W, B * C * H * W * 8
    img, maps = B * 2 * N * 4, (C * N * 8 if smaps is not None else 0)
    params = dict(B=B, C=C, H=H, W=W, coil_maps=smaps is not None)
    cases = [
        ("kernel_pre_fft", lambda: mri_kernels.pre_fft(x, smaps), img + maps + spec),
        ("kernel_post_fft_residual", lambda: mri_kernels.post_fft(k, y, mask, "residual"), 3 * spec + 4 * N),
        ("kernel_post_ifft", lambda: mri_kernels.post_ifft(k, smaps), spec + maps + img),
    ]
    return [OpCase(n, size, params, f, None, b, b, keep=[x, y, k, mask, smaps]) for n, f, b in cases]


def elementwise_op_cases(shape: tuple, device, size: str) -> list[OpCase]:
    """noisy_input on a real (B,2,H,W) float32 image; masked_fidelity with an (H,W) mask."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device)
    yv = torch.randn(shape, generator=g).to(device)
    H, W = shape[-2:]
    m = (torch.rand((H, W), generator=g) < 0.5).float().to(device)
    sigma = torch.tensor(0.3, device=device)
    seed = torch.tensor(1, dtype=torch.int64, device=device)
    step = torch.tensor(0, dtype=torch.int64, device=device)
    n = x.numel() * 4
    params = dict(shape=list(shape), dtype="float32")
    return [
        OpCase("noisy_input", size, params,
               lambda: _ops.noisy_input(x, sigma, seed, step, None, 1.0),
               lambda: ref_noise.noisy_input(x, sigma, seed, step, None, 1.0),
               2 * n, 2 * n, keep=[x, sigma, seed, step]),
        OpCase("masked_fidelity", size, dict(params, mask=[H, W]),
               lambda: _ops.masked_fidelity(x, yv, m),
               lambda: ref_fidelity.masked_fidelity(x, yv, m),
               3 * n + m.numel() * 4, 3 * n + m.numel() * 4, keep=[x, yv, m]),
    ]


# ---------------------------------------------------------------------------------------------
# SDI steps


def sdi_step(p: dict, net: torch.nn.Module, *, graphed: bool, resample_noise: bool = False, B: int | None = None,
             vectorize: bool = False, lr: float = 1e-3, tv_weight: float = 1e-4, warmup: int = 3):
    """An SDI inner step on MRI problem ``p`` for B problems (default p's batch), as the solver
    builds it: BatchedNet of copies of ``net``, the solver's Adam (fused + capturable on CUDA,
    eager or graphed, so both paths do the same arithmetic), loss
    ``sqrt(‖M(FSx − y)‖²) + tv_weight · TV(x)`` through the fused fidelity op. With
    ``resample_noise=False`` (solver default) the noisy input is drawn once here and the step has
    no RNG work. Returns ``(runner, inner)``; ``runner.run(1)`` is one step."""
    op, y = p["op"], p["y"]
    B = B or y.shape[0]
    if y.shape[0] != B:
        y = y[:1].expand(B, *y.shape[1:]).contiguous()
    dev = y.device
    bnet = BatchedNet([net] * B, vectorize=vectorize).to(dev)
    opt = graph_safe_adam(bnet.parameters(), lr, dev)
    H, W = op.img_size
    x_hat = torch.randn(B, 2, H, W, generator=torch.Generator().manual_seed(1)).to(dev)
    sigma = torch.tensor(0.3, device=dev)
    seeds = torch.arange(B, dtype=torch.int64, device=dev)
    step = torch.zeros((), dtype=torch.int64, device=dev)

    def loss_fn(z):
        return torch.sqrt(op.fidelity_loss(z, y).clamp_min(1e-30)) + tv_weight * total_variation(z)

    inner = SDIStep(bnet, loss_fn, opt, x_hat, sigma=sigma, seeds=seeds, step=step,
                    resample_noise=resample_noise, history_len=1)
    if not resample_noise:
        inner.x_in.copy_(inner.noisy())
    return StepGraph(inner, dev, use_graph=graphed, warmup=warmup), inner


def net_fwd_bwd(p: dict, net: torch.nn.Module, *, graphed: bool, B: int = 1, warmup: int = 3) -> StepGraph:
    """The network part of a step alone: forward of a fresh BatchedNet on a fixed input and
    backward with a fixed upstream gradient (no operator, loss, noise or optimiser)."""
    dev = p["y"].device
    H, W = p["H"], p["W"]
    bnet = BatchedNet([net] * B).to(dev)
    x_in = torch.randn(B, 2, H, W, generator=torch.Generator().manual_seed(2)).to(dev)
    g_out = torch.full_like(x_in, 1e-3)
    params = list(bnet.parameters())

    def f():
        for q in params:
            q.grad = None
        bnet(x_in).backward(g_out)

    runner = StepGraph(f, dev, use_graph=graphed, warmup=warmup)
    runner.keep = (bnet, x_in, g_out)
    return runner
