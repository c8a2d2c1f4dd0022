"""Scale-out over inputs: shard independent reconstructions across the ranks of a ``torchrun`` launch.

``torchrun --nproc_per_node=N -m fastsd.cli reconstruct DIR ...`` starts N processes with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` set. :func:`init` joins them
into one process group, rank r takes ``items[r::N]`` (:func:`shard`), every rank writes its own
outputs; :func:`share` hands rank 0's word to the others and :func:`gather` brings per-rank
records to rank 0. The ranks exchange only such small objects, never tensors.

Backend: NCCL when the run is on CUDA and every process of a node has a GPU of its own (rank on
node i uses GPU i), Gloo otherwise: on CPU, and when more processes than GPUs share a node (they
then share GPUs round-robin, which can pay off for small images). Without torchrun
(``WORLD_SIZE`` unset or 1) everything runs in the one process and no group is created.

``WORLD_SIZE`` > 1 in a process that torchrun did not start (no ``TORCHELASTIC_RUN_ID``) is refused
at once: such variables are left over from an earlier launch, and the process would otherwise
wait for ranks that never come. The group's rendezvous and collectives time out after
:data:`TIMEOUT` instead of torch's 30 minutes (the ranks meet only at the start).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["Context", "env_world", "init", "shard", "share", "gather", "barrier", "finalize", "TIMEOUT"]

TIMEOUT = timedelta(minutes=5)


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` and the backend (None: alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owned: bool = False  # whether init() created the process group (and finalize() ends it)

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_world() -> tuple[int, int, int, int]:
    """(rank, world_size, local_rank, local_world_size) from torchrun's variables; (0, 1, 0, 1) without."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world})")
    if not 0 <= local_rank < max(local_world, 1):
        raise ValueError(f"LOCAL_RANK={local_rank} must lie in [0, LOCAL_WORLD_SIZE={local_world})")
    if world > 1 and not os.environ.get("TORCHELASTIC_RUN_ID"):
        raise ValueError(f"WORLD_SIZE={world} and RANK={rank} are set but this process was not started by torchrun "
                         f"(no TORCHELASTIC_RUN_ID): unset WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT "
                         f"(left over from an earlier launch?) or launch with torchrun")
    return rank, world, local_rank, local_world


def init(device_type: str = "cpu") -> Context:
    """Join the torchrun process group (env:// rendezvous) if there is more than one rank.

    ``device_type`` is where this run computes ('cpu' or 'cuda'); on CUDA the current device is
    set to this rank's GPU before the group is created. A group that already exists is reused
    (and left alone by :func:`finalize`).
    """
    rank, world, local_rank, local_world = env_world()
    if world == 1:
        return Context()
    cuda = device_type == "cuda"
    if cuda:
        n_gpus = torch.cuda.device_count()
        if n_gpus == 0:
            raise ValueError("a CUDA run was requested but no CUDA device is visible")
        torch.cuda.set_device(local_rank % n_gpus)
    if dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend(), owned=False)
    backend = "nccl" if cuda and torch.cuda.device_count() >= local_world else "gloo"
    try:
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=TIMEOUT)
    except (RuntimeError, ValueError) as e:  # no rendezvous: wrong MASTER_ADDR/PORT, a rank that never came
        raise ValueError(f"rank {rank} of {world} could not join the process group at "
                         f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}: {' '.join(str(e).split())[:300]}"
                         ) from None
    return Context(rank, world, local_rank, backend, owned=True)


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """The items rank ``rank`` of ``world_size`` processes: ``items[rank::world_size]``.

    Round-robin over the given order, so every item goes to exactly one rank and the ranks'
    loads differ by at most one item.
    """
    if int(world_size) != world_size or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    if int(rank) != rank or not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank!r}")
    return list(items)[int(rank) :: int(world_size)]


def share(obj, ctx: Context):
    """Rank 0's picklable ``obj`` on every rank (``obj`` itself in a single process). A collective."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, ctx: Context) -> list | None:
    """Every rank's picklable ``obj`` in rank order on rank 0 (``None`` on the other ranks);
    ``[obj]`` in a single process. A collective: every rank must call it."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(ctx: Context) -> None:
    """Wait for all ranks (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()


def finalize(ctx: Context) -> None:
    """End the process group if :func:`init` created it."""
    if ctx.owned and dist.is_initialized():
        dist.destroy_process_group()
