"""Deep image prior (DIP; Ulyanov et al., CVPR 2018) and autoencoding sequential DIP (aSeqDIP;
Alkhouri et al., NeurIPS 2024). Untrained networks fitted to one measurement.

DIP: ``x = f_θ(z)`` for a fixed input ``z ~ U(0, 0.1)`` (``input_channels`` channels), Adam on
``‖A f_θ(z + reg_noise_std·ε) − y‖²``; the result is ``f_θ(z)``.

aSeqDIP: the input is the current estimate itself, starting at ``A^H y`` (or ``A^† y``); after
``updates_per_input`` Adam steps on ``‖A f_θ(z) − y‖² + λ ‖f_θ(z) − z‖²`` the input is replaced by
the output, ``z <- f_θ(z)``.

Problem ``b`` of the batch gets its own network, initialised with seed ``seed + b`` on the CPU (same
weights on every device; all problems run as one batched call through
:class:`fastsd.graphs.step_graph.BatchedNet`, BatchNorm with per-problem batch statistics). The
step (Adam update, and for aSeqDIP the input update) is fixed, so on CUDA it is captured once as a
CUDA graph and replayed (:func:`fastsd.solvers.diffusion.run_steps`); the input-noise ε comes from
the counter-based ``fastsd::gaussian_noise`` op, so it is the same on every device. Optional
ES-WMV early stopping returns the output at the lowest running variance.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from fastsd.functional.noise import gaussian_noise
from fastsd.graphs.step_graph import BatchedNet, graph_enabled, graph_safe_adam
from fastsd.nets.skip import SkipNet, max_depth
from fastsd.solvers.base import Callback, SolveResult, register_solver
from fastsd.solvers.ddgm import initial_estimate
from fastsd.solvers.diffusion import SeedSolver, check_count, check_positive, run_steps
from fastsd.solvers.early_stopping import ESWMV

__all__ = ["DIP", "ASeqDIP"]


class _Trace:
    """Per-step device state a (graphed) step writes in place: the latest output and loss, the loss
    history and the step counter; :meth:`hook` turns it into callbacks and ES-WMV updates."""

    def __init__(self, n: int, batch: int, out_shape, device, dtype):
        self.out = torch.zeros(out_shape, device=device, dtype=dtype)
        self.loss = torch.zeros(batch, device=device, dtype=torch.float64)
        self.history = torch.zeros(max(n, 1), batch, device=device, dtype=torch.float64)
        self.count = torch.zeros(1, dtype=torch.int64, device=device)

    @torch.no_grad()
    def record(self, out: torch.Tensor, loss: torch.Tensor) -> None:
        self.out.copy_(out)
        self.loss.copy_(loss)
        self.history.index_copy_(0, self.count.clamp(max=self.history.shape[0] - 1), self.loss.reshape(1, -1))
        self.count.add_(1)

    def hook(self, pb, callback, es, iteration=lambda i: i):
        """Host-side per-step function for :func:`run_steps`, or None when nothing needs it."""
        if callback is None and es is None:
            return None

        def run(i):
            stop = False
            if callback is not None:
                stop = bool(callback(iteration(i), {"x": pb.from_net(self.out.clone()), "loss": float(self.loss.mean())}))
            if es is not None:
                stop = es.update(self.out) or stop
            return stop

        return run

    def losses(self, done: int) -> list[float]:
        return self.history[:done].mean(1).tolist()


@register_solver("dip")
class DIP(SeedSolver):
    """Deep image prior.

    Args:
        iterations: Adam steps (DIP papers use 2000-6000).
        lr: Adam learning rate.
        net: 'skip' (:class:`~fastsd.nets.skip.SkipNet`), 'unet' (:class:`~fastsd.nets.unet.UNet`,
            2D only) or a factory ``(in_channels, out_channels) -> nn.Module``.
        depth, width, skip_channels: SkipNet/UNet size (depth is capped to what the image allows).
            The default width 32 won against widths 64 and 128 and against deepinv's
            DeepImagePrior at equal wall time (benchmark section ``deepinv_dip``; README "deepinv").
        sigmoid: sigmoid output (images in [0, 1]).
        input_channels, input_scale: DIP input ``z ~ U(0, input_scale)`` with that many channels.
        reg_noise_std: std of the noise added to ``z`` at every step (DIP's input regularisation).
        early_stop, es_window, es_patience: ES-WMV early stopping.
        use_graph: CUDA-graph the step (default: on CUDA); warmup: eager steps before capture.
        seed, device, dtype: see :class:`~fastsd.solvers.diffusion.SeedSolver`.
    """

    def __init__(self, *, iterations: int = 2000, lr: float = 1e-2, net="skip", depth: int = 5, width: int = 32,
                 skip_channels: int = 4, sigmoid: bool = False, input_channels: int = 32, input_scale: float = 0.1,
                 reg_noise_std: float = 0.0, early_stop: bool = False, es_window: int = 100,
                 es_patience: int = 1000, use_graph: bool | None = None, warmup: int = 3, **common):
        super().__init__(**common)
        check_count(iterations=iterations, depth=depth, width=width, input_channels=input_channels, warmup=warmup)
        check_positive(lr=lr, input_scale=input_scale)
        if not (net in ("skip", "unet") or callable(net)):
            raise ValueError(f"net must be 'skip', 'unet' or a factory (in_channels, out_channels) -> nn.Module, got {net!r}")
        if reg_noise_std < 0 or skip_channels < 0:
            raise ValueError("reg_noise_std and skip_channels must be >= 0")
        ESWMV(es_window, es_patience)  # validates the window and patience
        self.iterations, self.lr, self.net = int(iterations), float(lr), net
        self.depth, self.width, self.skip_channels, self.sigmoid = int(depth), int(width), int(skip_channels), bool(sigmoid)
        self.input_channels, self.input_scale = int(input_channels), float(input_scale)
        self.reg_noise_std = float(reg_noise_std)
        self.early_stop, self.es_window, self.es_patience = bool(early_stop), int(es_window), int(es_patience)
        self.use_graph, self.warmup = use_graph, int(warmup)
        self.net_: BatchedNet | None = None  # the fitted networks after solve()

    # -- networks --------------------------------------------------------------------------------
    def _make_net(self, cin: int, cout: int, spatial: tuple[int, ...]) -> nn.Module:
        if callable(self.net) and not isinstance(self.net, str):
            return self.net(cin, cout)
        if self.net == "unet":
            if len(spatial) != 2:
                raise ValueError("net='unet' needs 2D images; use net='skip' for vectors")
            from fastsd.nets.unet import UNet

            depth = min(self.depth, max_depth(min(spatial)))
            return UNet(cin, cout, width=self.width, depth=max(depth, 1),
                        out_activation="sigmoid" if self.sigmoid else None)
        depth = min(self.depth, max_depth(min(spatial)))
        if depth < 1:
            raise ValueError(f"images of spatial size {spatial} are too small for SkipNet (need >= 4)")
        return SkipNet(cin, cout, depth=depth, channels_down=self.width, channels_up=self.width,
                       channels_skip=self.skip_channels, sigmoid=self.sigmoid, dim=len(spatial))

    def _networks(self, pb, cin: int) -> BatchedNet:
        """One network per problem, problem b initialised from seed + b (CPU RNG, same on every device)."""
        cout, spatial = pb.net_shape[1], pb.net_shape[2:]
        nets = []
        for b in range(pb.batch):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + b)
                nets.append(self._make_net(cin, cout, spatial))
        return BatchedNet(nets).to(device=pb.device, dtype=pb.dtype)

    def _optimizer(self, params, device: torch.device) -> torch.optim.Adam:
        return graph_safe_adam(params, self.lr, device)

    def _early_stopping(self) -> ESWMV | None:
        return ESWMV(self.es_window, self.es_patience) if self.early_stop else None

    def _info(self, pb, t0: float, done: int, stopped: bool, es, graphed: bool) -> dict:
        info = dict(method=self.method, iterations=done, lr=self.lr,
                    net=self.net if isinstance(self.net, str) else "custom", early_stop=self.early_stop,
                    stopped_at=done - 1 if stopped else None, cuda_graph=graphed, seed=self.seed,
                    device=str(pb.device), runtime_s=time.perf_counter() - t0)
        if es is not None and es.best_iter is not None:
            info["es_best_iter"] = es.best_iter.tolist()
        return info

    # -- solve -------------------------------------------------------------------------------------
    def _inputs(self, pb) -> torch.Tensor:
        shape = (self.input_channels,) + pb.net_shape[2:]
        z = [torch.rand(shape, generator=torch.Generator().manual_seed(self.seed + b)) for b in range(pb.batch)]
        return (self.input_scale * torch.stack(z)).to(device=pb.device, dtype=pb.dtype)

    def solve(self, y: torch.Tensor, op, *, callback: Callback | None = None) -> SolveResult:
        """Fit the networks to ``y``; ``callback(i, {"x", "loss"})`` after every Adam step."""
        t0 = time.perf_counter()
        pb = self.problem(y, op)
        graphed = graph_enabled(self.use_graph, pb.device)
        z = self._inputs(pb)
        net = self._networks(pb, z.shape[1])
        opt = self._optimizer(net.parameters(), pb.device)
        trace = _Trace(self.iterations, pb.batch, pb.net_shape, pb.device, pb.dtype)
        seeds = torch.arange(pb.batch, dtype=torch.int64, device=pb.device) + self.seed
        counter = torch.zeros((), dtype=torch.int64, device=pb.device)
        z32 = z.float()

        def step():
            opt.zero_grad(set_to_none=True)
            z_in = z
            if self.reg_noise_std > 0:
                z_in = z + self.reg_noise_std * gaussian_noise(z32, seeds, counter).to(z.dtype)
                counter.add_(1)
            x = net(z_in)
            loss = pb.fidelity_loss(x)
            loss.sum().backward()
            opt.step()
            trace.record(x.detach(), loss.detach())

        es = self._early_stopping()
        hook = trace.hook(pb, callback, es)
        with torch.enable_grad():
            done = run_steps(step, self.iterations, pb.device, use_graph=graphed, warmup=self.warmup, hook=hook)
        with torch.no_grad():
            x = es.best if es is not None and es.best is not None else net(z)
        self.net_ = net
        return SolveResult(x=pb.from_net(x.detach()), history={"loss": trace.losses(done)},
                           info=self._info(pb, t0, done, done < self.iterations, es, graphed))


@register_solver("aseqdip")
class ASeqDIP(DIP):
    """Autoencoding sequential DIP: options of :class:`DIP` (``input_channels``/``input_scale``/
    ``reg_noise_std`` unused) plus

    Args:
        updates_per_input: Adam steps before the input is replaced by the output (paper: 2).
            ``iterations // updates_per_input`` input updates run (at least one).
        ae_weight: weight λ of the autoencoding term ``‖f_θ(z) − z‖²``.
        init: first input, 'adjoint' (A^H y) or 'pinv' (A^† y).
    """

    def __init__(self, *, updates_per_input: int = 2, ae_weight: float = 1.0, init: str = "adjoint", **options):
        options.setdefault("width", 128)  # DIP's width study did not cover aSeqDIP: its width stays
        super().__init__(**options)
        check_count(updates_per_input=updates_per_input)
        if ae_weight < 0:
            raise ValueError(f"ae_weight must be >= 0, got {ae_weight!r}")
        if init not in ("adjoint", "pinv"):
            raise ValueError(f"init must be 'adjoint' or 'pinv', got {init!r}")
        self.updates_per_input, self.ae_weight, self.init = int(updates_per_input), float(ae_weight), init

    def solve(self, y: torch.Tensor, op, *, callback: Callback | None = None) -> SolveResult:
        """Fit the network; ``callback(i, {"x", "loss"})`` after every input update (``i`` counts
        Adam steps, ``x`` is the new input)."""
        t0 = time.perf_counter()
        pb = self.problem(y, op)
        graphed = graph_enabled(self.use_graph, pb.device)
        z = initial_estimate(pb, self.init).clone()
        net = self._networks(pb, z.shape[1])
        opt = self._optimizer(net.parameters(), pb.device)
        upi = self.updates_per_input
        rounds = max(self.iterations // upi, 1)
        trace = _Trace(rounds, pb.batch, pb.net_shape, pb.device, pb.dtype)

        def step():  # one round: upi Adam steps on the current input, then z <- f(z)
            for _ in range(upi):
                opt.zero_grad(set_to_none=True)
                x = net(z)
                fid = pb.fidelity_loss(x)
                ae = (x - z).pow(2).flatten(1).sum(1)
                (fid + self.ae_weight * ae).sum().backward()
                opt.step()
            with torch.no_grad():
                z.copy_(net(z))
            trace.record(z, fid.detach())

        es = self._early_stopping()
        hook = trace.hook(pb, callback, es, iteration=lambda i: (i + 1) * upi - 1)
        with torch.enable_grad():
            done = run_steps(step, rounds, pb.device, use_graph=graphed, warmup=self.warmup, hook=hook)
        x = es.best if es is not None and es.best is not None else z
        self.net_ = net
        info = self._info(pb, t0, done * upi, done < rounds, es, graphed)
        info.update(updates_per_input=upi, ae_weight=self.ae_weight, init=self.init, rounds=done)
        return SolveResult(x=pb.from_net(x.detach()), history={"loss": trace.losses(done)}, info=info)
