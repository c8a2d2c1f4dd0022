"""Self-diffusion (SDI; Luo, Huang & Yang, arXiv 2510.21417; official code ggluo/Self-Diffusion).

No pretrained model: one randomly initialised network ``D`` is trained on the measurement alone
while the input noise level is annealed::

    x̂ ~ N(0, I)
    for σ_t in σ_{T-1} > ... > σ_0:           # sqrt(1 - cumprod(1 - β)), linear β, largest first
        ε ~ N(0, I)                            # once per level (official code) or per inner step
        repeat K times:                        # one Adam, default betas, kept for the whole run
            θ ← Adam step on loss(A D_θ(x̂ + σ_t ε), y)
        x̂ ← D_θ(x̂ + σ_t ε)                   # the network output (no gradient)

Losses: ``'mse'`` mean ``|A x − y|²`` (image tasks), ``'norm_tv'`` un-squared ``‖A x − y‖`` plus
``1e-4·TV(x)`` (MRI), ``'cs1d'`` ``‖A x − y‖ + 0.01·Σ|FFT x|`` (1D compressed sensing). The data
term always goes through ``op.fidelity_loss`` (the fused residual-norm op). For MRI the
measurements are scaled once by ``s = ‖D(noise)‖ / ‖A^H y‖`` and the result divided by ``s``.

Batch dimension 0 of ``y`` holds independent problems: problem b gets its own network (seeded
``seed + b``), its own x̂ and its own noise stream, and a batched run equals separate runs with
those seeds up to floating-point summation order. Images in the operator's layout ``(B, C, H, W)``
use the paper's :class:`~fastsd.nets.UNet`; vector unknowns (``(B, n)`` or ``(B, C, n)``, e.g.
:class:`~fastsd.ops.matrix.MatrixOp` for 1D compressed sensing or radar) use the 1D
:class:`~fastsd.nets.ConvNet1d`; complex unknowns are fed to the network as (re, im) channels.
On CUDA the inner step is captured once as a CUDA graph and replayed (:mod:`fastsd.graphs`).
"""
from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from fastsd._checks import check_device, check_dtype, check_problem, check_seed, check_tensor
from fastsd._utils import per_problem
from fastsd.graphs.step_graph import BatchedNet, SDIStep, StepGraph, graph_enabled, graph_safe_adam
from fastsd.nets.fused import fuse_bn_relu, fuse_upsample_concat
from fastsd.nets.unet import ConvNet1d, UNet, check_norm, init_weights, per_sample_norm
from fastsd.nets.unet3d import UNet3d
from fastsd.solvers.base import Callback, SolveResult, register_solver
from fastsd.solvers.diffusion import MAX_COUNT, check_count
from fastsd.solvers.layout import NetLayout
from fastsd.solvers.losses import fourier_l1, total_variation
from fastsd.solvers.schedules import sdi_sigmas
from fastsd.solvers.sdi_run import PLATEAU_CHECKS, SDIRun, WarmStart
from fastsd.solvers.volume import default_warm_levels

__all__ = ["SelfDiffusion", "SDIRun", "PRESETS", "PLATEAU_CHECKS", "VOLUMES", "WarmStart", "total_variation",
           "fourier_l1"]

# (T, K, lr) and loss per task, from the paper; 'mri' also rescales the measurements.
PRESETS: dict[str, dict] = {
    "mri": dict(T=40, K=50, lr=1e-3, loss="norm_tv", scale=True),
    "mri3d": dict(T=40, K=50, lr=1e-3, loss="norm", scale=True),  # official 3-D loss: no TV
    # Half the paper's work: chosen by benchmarks/sections/frontier.py's rule (least work within 0.3 dB
    # of 'mri'), see README "Cost and quality".
    "mri-fast": dict(T=10, K=100, lr=1e-3, loss="norm_tv", scale=True),
    "image": dict(T=40, K=150, lr=1e-3, loss="mse", scale=False),
    "denoise": dict(T=30, K=100, lr=2e-3, loss="mse", scale=False),
    "radar": dict(T=30, K=100, lr=1e-3, loss="mse", scale=False, out_activation="sigmoid"),
    "cs1d": dict(T=40, K=200, lr=1e-5, loss="cs1d", scale=False),
}
# How the B problems of a batch that are the slices of one scan are solved (see ``volume``).
VOLUMES = ("independent", "shared", "warm")
_LOSSES = {"mse": {}, "norm": {}, "norm_tv": {"tv_weight": 1e-4}, "cs1d": {"fourier_weight": 0.01}}
# Network arithmetic: 'bf16' runs the network under bf16 autocast (float32 master weights, Adam,
# BatchNorm statistics, loss and operator).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@register_solver("sdi")
class SelfDiffusion:
    """Self-diffusion solver. Options (``None`` = take the preset's value):

    Args:
        preset: 'mri', 'mri3d', 'image', 'denoise', 'radar' or 'cs1d' (T, K, lr, loss, scaling and
            output activation of the paper), or 'mri-fast' ('mri' with T=10, K=100: half the work,
            measured within 0.3 dB of 'mri'). ``None`` picks 'mri' for :class:`~fastsd.ops.mri.MRI`,
            'mri3d' for :class:`~fastsd.ops.mri.MRI3D` (volumes: :class:`~fastsd.nets.UNet3d`) and
            'image' otherwise.
        T, K, lr: noise levels, Adam steps per level, Adam learning rate.
        beta_start, beta_end, schedule_factor: the linear-beta schedule (see
            :func:`fastsd.solvers.schedules.sdi_sigmas`).
        resample_noise: draw fresh ε at every inner step (paper) instead of once per level (code).
        no_noise: the "w/o ε" ablation (σ = 0 throughout).
        loss: 'mse', 'norm' (un-squared), 'norm_tv' or 'cs1d'; ``tv_weight`` / ``fourier_weight``
            override its weights.
        scale: rescale the measurements by ‖D(noise)‖ / ‖A^H y‖ (MRI).
        net: a user network (``nn.Module`` mapping the network layout to itself); each problem
            starts from a copy of its weights. Default: the paper's U-Net (images) or ConvNet1d.
        small: the CPU-sized network (``UNet.small``: width 8, 4 levels; ``UNet3d.small``: width 4,
            2 levels; ConvNet1d width 32).
        width, depth, out_activation: override the default network's size / output activation.
        norm: the network's normalisation layers, 'batch' (the paper's train-mode BatchNorm),
            'sample' (per-sample statistics, equal to 'batch' at batch 1) or 'none'.
        update: 'last' sets x̂ to the network output of the K-th inner step (official code);
            'refresh' runs one more forward with the updated weights on the same noisy input.
        plateau: end a level's inner loop early once its loss stops improving: every
            ``K // PLATEAU_CHECKS`` steps the mean loss of those steps is compared with the previous
            ones', and the level ends when it fell by less than the fraction ``plateau`` (None: the
            preset's; the paper presets run all K steps).
        volume: the B problems as the slices of one scan: 'independent' (one network per slice,
            all in one batched step), 'shared' (one network and one step for all slices, each
            slice normalised over itself: BatchNorm becomes per-sample, so a one-slice run equals
            'independent'), or 'warm' (slices from the centre outwards, each starting from its
            neighbour's trained network, x̂ and scaling and entering the noise schedule at level
            ``T - warm_levels``; the first runs all levels). ``shared_net=True`` means 'shared'.
        warm_levels: noise levels run by each non-centre slice of a 'warm' volume (default
            ``ceil(T / 5)``).
        seed: problem b uses seed + b for weights, x̂₀, the scaling noise and its noise stream;
            CPU runs are bit-reproducible.
        device, dtype: where and in which precision to run (default: ``y``'s device, float32).
        precision: 'fp32' (default) or 'bf16' (network under bf16 autocast; weights, Adam,
            BatchNorm statistics, loss and operator stay float32). Measured on an H200 (MRI 320²,
            16 coils): bf16 steps 1.2x faster, solves 0.26 dB below fp32 and 0.63 dB below the
            official loop on average (benchmarks/results/2026-12-04-nvidia-h200-run1.md), so fp32
            stays the default.
        fused_norm: train-mode BatchNorm + ReLU as one fused op (:mod:`fastsd.nets.fused`; same
            arithmetic). Default: on CUDA with bf16, where it saves the float32 copies around
            cuDNN's BatchNorm (measured 6.66 -> 6.49 ms per step; neutral in fp32).
        fused_upsample: the U-Net decoder's bilinear upsample + pad + concat as one fused op
            (:func:`fastsd.nets.fused.fuse_upsample_concat`; same arithmetic). Off by default;
            ``python -m benchmarks.run --only levers`` times it against the unfused step.
        cudnn_benchmark: let cuDNN time its convolution algorithms during warm-up, before the
            graph is captured (default off: measured no change for the paper U-Net).
        compile: ``torch.compile`` the network's forward (and so its backward) inside the step:
            ``True`` for inductor or a backend name; the compiled code runs inside the captured
            CUDA graph. Off by default; ``python -m benchmarks.run --only levers`` times it.
        use_graph: CUDA-graph the inner step (default: on CUDA). warmup: eager steps before capture.
    """

    def __init__(
        self,
        preset: str | None = None,
        *,
        T: int | None = None,
        K: int | None = None,
        lr: float | None = None,
        beta_start: float = 1e-4,
        beta_end: float = 1e-2,
        schedule_factor: float = 1.0,
        resample_noise: bool = False,
        no_noise: bool = False,
        loss: str | None = None,
        tv_weight: float | None = None,
        fourier_weight: float | None = None,
        scale: bool | None = None,
        net: nn.Module | None = None,
        small: bool = False,
        width: int | None = None,
        depth: int | None = None,
        out_activation: str | None = None,
        norm: str = "batch",
        update: str = "last",
        plateau: float | None = None,
        volume: str = "independent",
        warm_levels: int | None = None,
        shared_net: bool = False,
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        precision: str = "fp32",
        fused_norm: bool | None = None,
        fused_upsample: bool = False,
        cudnn_benchmark: bool = False,
        compile: bool | str = False,
        use_graph: bool | None = None,
        warmup: int = 3,
    ):
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        if loss is not None and loss not in _LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(_LOSSES)}")
        if update not in ("last", "refresh"):
            raise ValueError(f"update must be 'last' or 'refresh', got {update!r}")
        if net is not None and not isinstance(net, nn.Module):
            raise ValueError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        check_dtype(dtype, (torch.float32, torch.float64))
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if not isinstance(compile, (bool, str)):
            raise ValueError(f"compile must be a bool or a torch.compile backend name, got {compile!r}")
        if precision != "fp32" and dtype != torch.float32:
            raise ValueError(f"precision={precision!r} needs dtype float32 (its master weights), got {dtype}")
        check_count(T=T, K=K, width=width, depth=depth, warm_levels=warm_levels)
        if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if plateau is not None and not 0 <= plateau < 1:
            raise ValueError(f"plateau must be a fraction in [0, 1), got {plateau!r}")
        if volume not in VOLUMES:
            raise ValueError(f"volume must be one of {', '.join(VOLUMES)}, got {volume!r}")
        if shared_net and volume not in ("independent", "shared"):
            raise ValueError(f"shared_net=True means volume='shared', got volume={volume!r}")
        volume = "shared" if shared_net else volume
        if volume == "shared" and fused_norm:
            raise ValueError("fused_norm computes statistics over the batch; volume='shared' needs per-slice statistics")
        self.preset = preset
        self.overrides = dict(T=T, K=K, lr=lr, loss=loss, scale=scale, out_activation=out_activation, plateau=plateau)
        self.beta_start, self.beta_end, self.schedule_factor = beta_start, beta_end, schedule_factor
        self.resample_noise, self.no_noise = bool(resample_noise), bool(no_noise)
        self.tv_weight, self.fourier_weight = tv_weight, fourier_weight
        self.net, self.small, self.width, self.depth, self.update = net, small, width, depth, update
        self.norm, self.volume, self.warm_levels = check_norm(norm), volume, warm_levels
        self.seed, self.device, self.dtype = check_seed(seed), check_device(device), dtype
        self.shared_net, self.precision, self.fused_norm = volume == "shared", precision, fused_norm
        self.fused_upsample = bool(fused_upsample)
        self.cudnn_benchmark, self.compile = cudnn_benchmark, compile
        self.use_graph, self.warmup = use_graph, warmup
        self.net_: BatchedNet | None = None  # the trained networks after solve()

    # -- configuration ---------------------------------------------------------------------------
    def config(self, op=None) -> dict:
        """The settings a solve with ``op`` uses (preset values with overrides applied)."""
        preset = self.preset
        if preset is None:
            preset = {"MRI": "mri", "MRI3D": "mri3d"}.get(type(op).__name__, "image")
        cfg = dict(PRESETS[preset], preset=preset)
        cfg.setdefault("out_activation", None)
        cfg.setdefault("plateau", None)
        cfg.update({k: v for k, v in self.overrides.items() if v is not None})
        weights = {"tv_weight": 0.0, "fourier_weight": 0.0, **_LOSSES[cfg["loss"]]}
        if self.tv_weight is not None:
            weights["tv_weight"] = self.tv_weight
        if self.fourier_weight is not None:
            weights["fourier_weight"] = self.fourier_weight
        cfg.update(weights)
        cfg.update(beta_start=self.beta_start, beta_end=self.beta_end, schedule_factor=self.schedule_factor,
                   resample_noise=self.resample_noise, no_noise=self.no_noise, update=self.update,
                   seed=self.seed, small=self.small, shared_net=self.shared_net, precision=self.precision,
                   norm=self.norm, volume=self.volume)
        if self.net is None:  # the default U-Net's size, for the record
            cfg["width"], cfg["depth"] = self._unet_size(3 if preset == "mri3d" else 2)
        if self.volume == "warm":
            cfg["warm_levels"] = min(int(cfg["T"]), self.warm_levels or default_warm_levels(int(cfg["T"])))
        return cfg

    def _unet_size(self, spatial_dims: int) -> tuple[int, int]:
        """(width, depth) of the default U-Net for 2-D or 3-D images."""
        three_d = spatial_dims == 3
        size = (UNet3d if three_d else UNet).SMALL if self.small else dict(width=32 if three_d else 64, depth=5)
        return self.width or size["width"], self.depth or size["depth"]

    def min_image_size(self, spatial_dims: int = 2) -> int:
        """Smallest image side of the default U-Net, ``2**(depth + 1)``: it halves the image ``depth``
        times and needs 2 pixels a side at the bottom (train-mode BatchNorm). 1 for a user's net."""
        return 1 if self.net is not None else 2 ** (self._unet_size(spatial_dims)[1] + 1)

    def _make_net(self, layout: NetLayout, cfg: dict, gen: torch.Generator, fused: bool) -> nn.Module:
        """Problem b's network from its generator ``gen``, with the fused layers asked for."""
        if self.net is not None:
            net = copy.deepcopy(self.net)
        else:
            c = layout.net_shape[1]
            if layout.spatial_dims == 3:  # UNet3d initialises itself (its transposed convs too) from gen
                width, depth = self._unet_size(3)
                net = UNet3d(c, c, width=width, depth=depth, out_activation=cfg["out_activation"], generator=gen)
            elif layout.spatial_dims == 2:
                width, depth = self._unet_size(2)
                net = init_weights(UNet(c, c, width=width, depth=depth, out_activation=cfg["out_activation"],
                                        norm=self.norm), generator=gen)
            else:
                net = init_weights(ConvNet1d(c, c, width=self.width or (32 if self.small else 64),
                                             out_activation=cfg["out_activation"]), generator=gen)
        if self.norm != "batch" and (self.net is not None or layout.spatial_dims != 2):
            raise ValueError(f"norm={self.norm!r} applies to the default 2-D U-Net only")
        if self.shared_net:  # each slice normalised over itself, as in a one-slice run
            net = per_sample_norm(net)
        if fused:
            net = fuse_bn_relu(net)
        return fuse_upsample_concat(net) if self.fused_upsample else net

    # -- solve -----------------------------------------------------------------------------------
    def prepare(self, y: torch.Tensor, op, *, x_true: torch.Tensor | None = None,
                start: WarmStart | None = None, seeds: list[int] | None = None) -> SDIRun:
        """Build everything a solve runs (networks, scaled measurements, Adam, the inner step and its
        :class:`StepGraph`) and set the first noise level, without running a step. ``solve`` runs
        the levels on it; benchmarks time ``run.runner.run(1)`` on the very same step. ``x_true``,
        if given, is checked against the operator's image shape before any network is built.
        ``start`` continues trained networks (a warm start) instead of new ones; ``seeds`` are the
        problems' seeds (default ``seed + b``)."""
        y = check_problem(y, op, self.dtype)  # validation shared with every solver (fastsd._checks)
        cfg = self.config(op)
        dev = self.device if self.device is not None else y.device
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        graphed = graph_enabled(self.use_graph, dev)  # use_graph=True off CUDA fails before any work
        op = op.to(dev)  # nn.Module.to moves the operator's buffers in place
        y = op.check_measurement(y.to(dev))
        dtype = self.dtype
        T, K = int(cfg["T"]), int(cfg["K"])

        with torch.no_grad():
            x_like = op.adjoint(y)
        if x_true is not None and check_tensor("x_true", x_true).shape != x_like.shape:
            raise ValueError(f"x_true has shape {tuple(x_true.shape)}; the operator's images are {tuple(x_like.shape)}")
        layout = NetLayout(x_like)
        need, size = self.min_image_size(layout.spatial_dims), tuple(layout.net_shape[2:])
        if layout.spatial_dims in (2, 3) and min(size) < need:
            raise ValueError(f"images of {'x'.join(map(str, size))} are smaller than the U-Net's minimum of {need} a "
                             f"side; use larger images or a smaller depth (each level halves the size)")
        if T * K > MAX_COUNT:
            raise ValueError(f"T x K = {T} x {K} steps exceeds the limit of {MAX_COUNT:.0e}")
        B = y.shape[0]

        # Per-problem initial draws (CPU generators: identical on every device).
        on_cuda = dev.type == "cuda"
        fused = self.fused_norm if self.fused_norm is not None else (
            on_cuda and self.precision == "bf16" and not self.shared_net)
        nets, x0, z0 = [], [], []
        seeds = list(seeds) if seeds is not None else [self.seed + b for b in range(B)]
        if len(seeds) != B:
            raise ValueError(f"seeds holds {len(seeds)} values for {B} problems")
        for b in range(B):
            gen = torch.Generator().manual_seed(seeds[b])
            if start is None and (b == 0 or not self.shared_net):
                nets.append(self._make_net(layout, cfg, gen, fused))
            x0.append(torch.randn(layout.net_shape[1:], generator=gen, dtype=torch.float64))
            z0.append(torch.randn(layout.net_shape[1:], generator=gen, dtype=torch.float64))
        if start is not None:
            if start.x_hat.shape != (B, *layout.net_shape[1:]) or start.net.n != B:
                raise ValueError(f"warm start holds {start.net.n} problems of shape {tuple(start.x_hat.shape[1:])}; "
                                 f"this solve has {B} of {tuple(layout.net_shape[1:])}")
            bnet, x_hat = start.net.to(device=dev, dtype=dtype), start.x_hat.to(device=dev, dtype=dtype).clone()
        else:
            bnet = BatchedNet(nets, shared=self.shared_net).to(device=dev, dtype=dtype)
            x_hat = torch.stack(x0).to(device=dev, dtype=dtype)

        scale = torch.ones(B, dtype=dtype, device=dev)
        if start is not None:
            scale = start.scale.to(device=dev, dtype=dtype).clone()
            y = y * per_problem(scale, y).to(y.dtype)
        elif cfg["scale"]:
            with torch.no_grad():
                num = torch.linalg.vector_norm(bnet(torch.stack(z0).to(dev, dtype)).flatten(1), dim=1)
                den = torch.linalg.vector_norm(layout.to_net(x_like).flatten(1), dim=1).to(dtype)
                scale = num / den.clamp_min(torch.finfo(dtype).tiny)
            y = y * per_problem(scale, y).to(y.dtype)

        # Capturable Adam on every CUDA run, so the eager and the graphed path do the same arithmetic.
        opt = graph_safe_adam(bnet.parameters(), float(cfg["lr"]), dev)
        sigmas = sdi_sigmas(T, cfg["beta_start"], cfg["beta_end"], cfg["schedule_factor"], device=dev, dtype=dtype)
        if cfg["no_noise"]:
            sigmas = torch.zeros_like(sigmas)
        seeds = torch.tensor(seeds, dtype=torch.int64, device=dev)

        m = y[0].numel()
        mse, tvw, fw = cfg["loss"] == "mse", float(cfg["tv_weight"]), float(cfg["fourier_weight"])

        def loss_fn(z: torch.Tensor) -> torch.Tensor:
            x = layout.from_net(z)
            fid = op.fidelity_loss(x, y).to(z.dtype)
            val = fid / m if mse else torch.sqrt(fid.clamp_min(1e-30))
            if tvw:
                val = val + tvw * total_variation(z)
            if fw:
                val = val + fw * fourier_l1(x)
            return val

        step_net = bnet if not self.compile else torch.compile(
            bnet, backend="inductor" if self.compile is True else self.compile)
        inner = SDIStep(step_net, loss_fn, opt, x_hat, sigma=torch.zeros((), dtype=dtype, device=dev), seeds=seeds,
                        step=torch.zeros((), dtype=torch.int64, device=dev),
                        resample_noise=cfg["resample_noise"], history_len=T * K,
                        autocast_dtype=PRECISIONS[self.precision])
        benchmark = bool(self.cudnn_benchmark)
        runner = StepGraph(inner, dev, use_graph=graphed, warmup=self.warmup, cudnn_benchmark=benchmark)
        self.net_ = bnet
        run = SDIRun(cfg=cfg, device=dev, layout=layout, x_like=x_like, net=bnet, scale=scale, sigmas=sigmas,
                     inner=inner, runner=runner, info=dict(cuda_graph=bool(graphed), fused_norm=fused, fused_upsample=self.fused_upsample,
                                                           cudnn_benchmark=benchmark, compile=self.compile))
        run.set_level(start.level if start is not None else 0)
        return run

    def solve(self, y: torch.Tensor, op, *, x_true: torch.Tensor | None = None,
              callback: Callback | None = None) -> SolveResult:
        """Reconstruct from measurements ``y`` of operator ``op``; returns x in the operator's layout.

        ``x_true`` (optional, operator layout) adds a per-level ``'psnr'`` trace to the history.
        ``callback(iteration, state)`` runs after every noise level with ``state`` holding ``x``,
        ``loss``, ``sigma``, ``level`` (and ``psnr``); returning True stops early.
        """
        if self.volume == "warm":
            from fastsd.solvers.volume import solve_warm

            return solve_warm(self, y, op, x_true=x_true, callback=callback)
        t_start = time.perf_counter()
        run = self.prepare(y, op, x_true=x_true)
        return self.run_levels(run, t_start, x_true=x_true, callback=callback)

    def run_levels(self, run: SDIRun, t_start: float, *, first: int = 0, x_true: torch.Tensor | None = None,
                   callback: Callback | None = None) -> SolveResult:
        """Run noise levels ``first .. T-1`` of a prepared run (:meth:`prepare`, whose level is
        ``first``) and return its result; ``t_start`` is when the solve began (for the timings)."""
        cfg, dev, inner, T, K = run.cfg, run.device, run.inner, int(run.cfg["T"]), int(run.cfg["K"])
        history: dict[str, list[float]] = {"level_loss": [], "sigma": [], "level_steps": []}
        if x_true is not None:
            history["psnr"] = []
        t_setup = time.perf_counter() - t_start
        for t in range(first, T):
            if t != first:
                run.set_level(t)
            history["level_steps"].append(run.run_level(K, cfg["plateau"]))
            with torch.no_grad():
                if self.update == "refresh":
                    inner.x_hat.copy_(run.net(inner.x_in))
                else:
                    inner.x_hat.copy_(inner.out)
            lvl_loss = float(inner.loss.sum())
            history["level_loss"].append(lvl_loss)
            history["sigma"].append(float(run.sigmas[t]))
            state = {"x": None, "loss": lvl_loss, "sigma": history["sigma"][-1], "level": t}
            if x_true is not None:
                state["psnr"] = self._psnr(run.current(), x_true.to(dev), cfg["preset"])
                history["psnr"].append(state["psnr"])
            if callback is not None:
                state["x"] = run.current()
                if callback(sum(history["level_steps"]), state) is True:
                    break
        x = run.current().detach()
        elapsed = time.perf_counter() - t_start
        iters = sum(history["level_steps"])
        history["loss"] = inner.history[:iters].sum(1).tolist()
        B = inner.x_hat.shape[0]
        info = dict(cfg, T=T, K=K, iterations=iters, slice_steps=iters * B, runtime_s=elapsed, setup_s=t_setup,
                    it_per_s=iters / max(elapsed - t_setup, 1e-9), device=str(dev),
                    dtype=str(self.dtype).replace("torch.", ""), batch=B,
                    params_per_problem=run.net.numel_per_problem(), scale=run.scale.tolist(), method="sdi",
                    **run.info)
        return SolveResult(x=x, history=history, info=info)

    @staticmethod
    def _psnr(x: torch.Tensor, x_true: torch.Tensor, preset: str) -> float:
        """Mean PSNR over problems (magnitude images for MRI, data range = max of the target)."""
        from fastsd.metrics import magnitude, psnr

        vals = []
        for b in range(x.shape[0]):
            a, t = x[b], x_true[b]
            if preset in ("mri", "mri3d"):
                a, t = magnitude(a[None])[0], magnitude(t[None])[0]
            elif a.is_complex():
                a, t = a.abs(), t.abs()
            vals.append(psnr(a, t))
        return float(sum(vals) / len(vals)) if all(math.isfinite(v) for v in vals) else float("inf")
