"""Capture one optimisation step as a CUDA graph and replay it; the same step runs eagerly on CPU.

Self-diffusion spends nearly all its time in one small step repeated T·K times: add noise, run
the network, evaluate the data loss through the fused operator, back-propagate, Adam. At the
image sizes of the paper that step is launch-bound, so on CUDA :class:`StepGraph` warms it up on
a side stream (cuFFT plans, Triton compilation, Adam state), captures it once with
``torch.cuda.graphs`` and replays it. Everything a replay must see change — the noise level
σ_t, the noise seeds, the step counter — lives in device tensors that are updated in place, so the
graph never bakes in a Python number.

Three pieces:

* :class:`BatchedNet` — B independent copies of one network (one per problem, e.g. per MRI slice)
  evaluated in one call: parameters are stacked along a new dim 0 and each problem's network runs
  through ``torch.func.functional_call`` on its slice (or all at once under ``vmap``). BatchNorm layers are switched to batch statistics only
  (``track_running_stats=False``), so each problem normalises with its own statistics and no
  running buffer is mutated inside ``vmap`` or a graph.
* :class:`SDIStep` — the self-diffusion inner step on those B problems.
* :class:`StepGraph` — runs any such zero-argument step function ``n`` times, through a CUDA
  graph or eagerly.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

from fastsd.functional.noise import noisy_input
from fastsd.profiling import nvtx_range

__all__ = ["BatchedNet", "SDIStep", "StepGraph", "graph_enabled", "graph_safe_adam"]


def graph_enabled(use_graph: bool | None, device: torch.device | str) -> bool:
    """The one rule for whether a step is CUDA-graphed: ``use_graph=None`` means exactly on CUDA
    devices; ``use_graph=True`` on any other device is an error."""
    device = torch.device(device)
    if use_graph is None:
        return device.type == "cuda"
    if use_graph and device.type != "cuda":
        raise ValueError(f"use_graph=True needs a CUDA device, got {device}")
    return bool(use_graph)


def graph_safe_adam(params, lr: float, device) -> torch.optim.Adam:
    """Adam as every solver builds it. On CUDA: state and step counters on the device (capturable,
    so a CUDA graph can replay the step) and one fused multi-tensor kernel per update (fused: for
    the paper's U-Net the foreach update is several passes over 31 M parameters). Eager and
    captured steps share it, so both do the same arithmetic. On CPU: the default implementation."""
    cuda = torch.device(device).type == "cuda"
    return torch.optim.Adam(params, lr=lr, capturable=cuda, fused=True if cuda else None)


class BatchedNet(nn.Module):
    """B independent networks with one architecture, evaluated as one batched call.

    ``nets`` is a list of modules with identical structure (problem b uses ``nets[b]``'s initial
    weights). ``forward(x)`` maps ``(B, C, ...)`` to ``(B, C_out, ...)``, running problem b's
    network on ``x[b:b+1]``. Parameters are leaf tensors of shape ``(B, ...)``; any optimiser
    over :meth:`parameters` acts on each problem's weights independently (Adam is elementwise).

    By default the B networks run one after another (``functional_call`` on slices of the
    stacked parameters): inside a CUDA graph the loop costs no launch overhead, and each problem's
    arithmetic is exactly that of a separate run. ``vectorize=True`` runs them as one
    ``vmap`` call instead (grouped convolutions: fewer, larger kernels; results then differ from
    separate runs in the last bits).

    ``channels_last`` (default: on CUDA; never with ``vectorize``) keeps 2D convolution weights and activations in NHWC, the
    layout of cuDNN's fastest kernels: without it cuDNN transposes every tensor around every
    convolution (measured 1.5x on the paper U-Net's forward + backward at 256x256 on an H100).

    ``shared=True`` takes one network (``nets == [net]``) for a batch of any size: the slices of
    one scan train one set of weights, each step runs the network once on the whole batch (large
    convolutions, one optimiser update for all slices) and BatchNorm takes its statistics over
    the batch.
    """

    def __init__(self, nets: list[nn.Module], vectorize: bool = False, channels_last: bool | None = None,
                 shared: bool = False):
        super().__init__()
        self.vectorize, self.channels_last, self.shared = vectorize, channels_last, shared
        if not nets:
            raise ValueError("BatchedNet needs at least one network")
        if shared and len(nets) != 1:
            raise ValueError(f"BatchedNet(shared=True) takes one network, got {len(nets)}")
        template = copy.deepcopy(nets[0])
        replace_all_batch_norm_modules_(template)  # batch statistics only, nothing mutated per call
        template.train()
        names = [n for n, _ in template.named_parameters()]
        signature = [(n, p.shape) for n, p in nets[0].named_parameters()]
        for net in nets[1:]:
            if [(n, p.shape) for n, p in net.named_parameters()] != signature:
                raise ValueError("BatchedNet: all networks must have the same architecture")
        self.n = len(nets)
        self.params = {
            name: self._layout(torch.stack([dict(net.named_parameters())[name].detach() for net in nets]))
            .requires_grad_(True)
            for name in names
        }
        self.buffers_ = {
            name: torch.stack([dict(net.named_buffers())[name].detach() for net in nets])
            for name, _ in template.named_buffers()
        }
        self.template = template.to("meta")  # structure only; weights come from self.params

    @staticmethod
    def gather(picks: list[tuple[BatchedNet, int]]) -> BatchedNet:
        """A new BatchedNet whose problem j starts from the current weights of problem ``i`` of
        ``net`` for ``(net, i) = picks[j]`` (copies: new leaves, no shared gradients)."""
        first = picks[0][0]
        if first.shared:
            raise ValueError("BatchedNet.gather takes per-problem networks, not a shared one")
        out = copy.copy(first)
        nn.Module.__init__(out)
        out.vectorize, out.channels_last, out.shared, out.n = first.vectorize, first.channels_last, False, len(picks)
        out.params = {k: out._layout(torch.stack([net.params[k][i].detach() for net, i in picks])).requires_grad_(True)
                      for k in first.params}
        out.buffers_ = {k: torch.stack([net.buffers_[k][i] for net, i in picks]) for k in first.buffers_}
        out.template = first.template
        return out

    def parameters(self, recurse: bool = True):  # noqa: D102 - the stacked leaves
        return iter(self.params.values())

    def numel_per_problem(self) -> int:
        return sum(p[0].numel() for p in self.params.values())

    def _apply(self, fn, recurse=True):  # .to(device/dtype) moves the stacked tensors too
        self.params = {k: self._layout(fn(v.detach())).requires_grad_(True) for k, v in self.params.items()}
        self.buffers_ = {k: fn(v) for k, v in self.buffers_.items()}
        return self

    def _nhwc(self, t: torch.Tensor) -> bool:
        if self.vectorize:  # vmap's batched conv backward gets channels-last weight gradients wrong
            return False
        return self.channels_last if self.channels_last is not None else t.is_cuda

    def _layout(self, p: torch.Tensor) -> torch.Tensor:
        """Stacked 2D conv weights (B, O, I, kh, kw) laid out so that each p[b] is channels-last."""
        if p.dim() == 5 and self._nhwc(p):
            return p.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        return p

    def _one(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x.unsqueeze(0),)).squeeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.n and not self.shared:
            raise ValueError(f"BatchedNet holds {self.n} networks but got a batch of {x.shape[0]}")
        if x.dim() == 4 and self._nhwc(x):  # each problem's slice x[b] is then NHWC too
            x = x.contiguous(memory_format=torch.channels_last)
        if self.shared:
            p = {k: v[0] for k, v in self.params.items()}
            b = {k: v[0] for k, v in self.buffers_.items()}
            return functional_call(self.template, (p, b), (x,))
        if self.vectorize and self.n > 1:
            return vmap(self._one)(self.params, self.buffers_, x)
        outs = []
        for i in range(self.n):
            p = {k: v[i] for k, v in self.params.items()}
            b = {k: v[i] for k, v in self.buffers_.items()}
            outs.append(self._one(p, b, x[i]))
        return torch.stack(outs)


class SDIStep:
    """One inner self-diffusion step for B problems; call it with no arguments.

    ``out = net(x_in)`` (under ``torch.autocast`` to ``autocast_dtype`` when given: mixed precision
    with the optimiser's float32 weights; ``out`` is cast back to ``x_hat``'s dtype, so the loss and
    the operator run in full precision), ``loss = loss_fn(out)`` of shape (B,), backward of
    ``loss.sum()``, ``optimizer.step()``, where ``x_in = x_hat + σ ε`` (:meth:`noisy`: ε from
    :func:`fastsd.functional.noise.noisy_input`, seeded per problem by ``seeds[b]`` and the shared
    ``step`` counter). With ``resample_noise`` every call draws fresh ε and advances ``step`` (the
    paper); otherwise the caller fills ``x_in`` once per noise level (the official code), so the
    step itself does no RNG work.

    State read and written only in place, so a CUDA graph of this call stays valid:
    ``x_hat``, ``sigma`` (0-d), ``seeds`` (B,), ``step`` (0-d int64) are inputs; ``x_in``, ``out``,
    ``loss`` hold the latest values; ``history[i]`` receives the loss of iteration ``i`` where
    ``i = counter`` (incremented every call).
    """

    def __init__(
        self,
        net: BatchedNet,
        loss_fn: Callable[[torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        x_hat: torch.Tensor,
        *,
        sigma: torch.Tensor,
        seeds: torch.Tensor,
        step: torch.Tensor,
        resample_noise: bool = False,
        history_len: int = 0,
        autocast_dtype: torch.dtype | None = None,
    ):
        dev = x_hat.device
        for name, t in (("sigma", sigma), ("seeds", seeds), ("step", step)):
            if t.device != dev:
                raise ValueError(f"{name} must live on {dev} (graph-safe device tensor), got {t.device}")
        if seeds.shape != (x_hat.shape[0],) or seeds.dtype != torch.int64 or step.dtype != torch.int64 or step.ndim:
            raise ValueError("seeds must be int64 of shape (B,) and step an int64 0-d tensor")
        self.net, self.loss_fn, self.optimizer = net, loss_fn, optimizer
        self.x_hat, self.sigma, self.seeds, self.step = x_hat, sigma, seeds, step
        self.resample_noise, self.autocast_dtype = resample_noise, autocast_dtype
        self.x_in = torch.zeros_like(x_hat)
        self.out = torch.zeros_like(x_hat)
        self.loss = torch.zeros(x_hat.shape[0], dtype=x_hat.dtype, device=dev)
        self.counter = torch.zeros((), dtype=torch.int64, device=dev)
        self.history = torch.zeros(max(history_len, 1), x_hat.shape[0], dtype=x_hat.dtype, device=dev)

    def noisy(self) -> torch.Tensor:
        """``x_hat + σ ε`` with per-problem seeds, one op for all problems (no autograd)."""
        x = self.x_hat.detach().float()  # the noise op works in float32
        return noisy_input(x, self.sigma, self.seeds, self.step, validate=False).to(self.x_hat.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on ``x``, under autocast when ``autocast_dtype`` is set, in ``x_hat``'s dtype."""
        if self.autocast_dtype is None:
            return self.net(x)
        # no weight-cast cache: it must not outlive one step (CUDA-graph capture requires this)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype, cache_enabled=False):
            out = self.net(x)
        return out.to(self.x_hat.dtype)

    def __call__(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        if self.resample_noise:
            self.x_in.copy_(self.noisy())
            self.step.add_(1)
        out = self.forward(self.x_in)
        loss = self.loss_fn(out)
        loss.sum().backward()
        self.optimizer.step()
        with torch.no_grad():
            self.out.copy_(out)
            self.loss.copy_(loss)
            idx = self.counter.clamp(max=self.history.shape[0] - 1).reshape(1)
            self.history.index_copy_(0, idx, loss.detach().reshape(1, -1))
            self.counter.add_(1)
        return self.loss


class StepGraph:
    """Run a zero-argument step function ``n`` times: CUDA-graph replays on CUDA, a loop elsewhere.

    ``use_graph=None`` graphs exactly when ``device`` is CUDA. The first ``warmup`` calls run
    eagerly on a side stream and count as real steps; the next call is captured (capture does not
    execute it), after which every step is a replay. The function must keep its state in tensors
    updated in place and must not synchronise with the host.

    ``cudnn_benchmark=True`` lets cuDNN time its convolution algorithms during the warm-up (and
    keeps its choice for the capture and every eager step); the global flag is restored after
    each :meth:`run`.
    """

    def __init__(self, fn: Callable[[], object], device: torch.device | str, *, use_graph: bool | None = None,
                 warmup: int = 3, cudnn_benchmark: bool = False):
        device = torch.device(device)
        use_graph = graph_enabled(use_graph, device)
        if warmup < 1 and use_graph:
            raise ValueError("warmup must be >= 1 before capturing a CUDA graph")
        self.fn, self.device, self.use_graph, self.warmup = fn, device, use_graph, warmup
        self.cudnn_benchmark = cudnn_benchmark
        self.graph: torch.cuda.CUDAGraph | None = None
        self._warmed = 0
        self.steps_run = 0

    def run(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not self.cudnn_benchmark:
            return self._run(n)
        old = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            return self._run(n)
        finally:
            torch.backends.cudnn.benchmark = old

    def _run(self, n: int) -> None:
        self.steps_run += n
        if not self.use_graph:
            for _ in range(n):
                self.fn()
            return
        if self._warmed < self.warmup and n:
            w = min(self.warmup - self._warmed, n)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side), nvtx_range("StepGraph.warmup"):
                for _ in range(w):
                    self.fn()
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._warmed += w
            n -= w
        if n and self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.fn()
        with nvtx_range("StepGraph.replay"):
            for _ in range(n):
                self.graph.replay()
