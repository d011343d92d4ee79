"""Process-group helpers for data-parallel training (DDP launched by ``torchrun``).

``torchrun --nproc-per-node N -m lrprec train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`setup` reads
them, joins the group (gloo on CPU, nccl on GPU) and picks the device (``cuda:LOCAL_RANK``
when CUDA is available). A plain ``lrprec train`` is a world of one: every helper here then
degenerates to a no-op, so the trainer has a single code path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lrprec.errors import UsageError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: rank, world size, device, and whether it owns the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """True when more than one process trains (gradients and metrics are reduced)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints and writes files."""
        return self.rank == 0


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but CUDA is not available")
    if preference != "cpu" and torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def setup(device: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment (or none: a world of one).

    An already initialized default group (e.g. a caller that spawned the processes itself)
    is reused and left for the caller to destroy.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        dev = _pick_device(device, local_rank)
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, dist.get_backend(), owns_group=False)
    if world <= 1:
        return DistContext(device=_pick_device(device, local_rank))
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    dev = _pick_device(device, local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"backend": backend}
    if dev.type == "cuda":
        kwargs["device_id"] = dev
    dist.init_process_group(**kwargs)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend, owns_group=True)


def teardown(ctx: DistContext) -> None:
    """Leave the group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _reduce_device(ctx: DistContext) -> torch.device:
    # nccl reduces GPU tensors only; gloo reduces CPU tensors
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Sum a few scalars over all ranks (float64, so counts and loss sums stay exact enough)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_reduce_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_gather_object(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (picklable objects; used for per-rank RNG states)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(ctx: DistContext, obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, but every rank then updates its
    own copy; before evaluating or saving, all ranks must agree on rank 0's statistics.
    """
    if not ctx.enabled:
        return
    for buf in module.buffers():
        if buf.is_floating_point() or buf.dtype in (torch.int64, torch.int32):
            dist.broadcast(buf.data, src=src)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
    if ctx.enabled:
        dist.barrier()


def shard(n: int, ctx: DistContext) -> slice:
    """This rank's strided share of ``n`` items: disjoint across ranks, together all of them."""
    return slice(ctx.rank, n, ctx.world_size)
