"""Data parallelism for the search (torchrun): gloo on CPU, nccl on GPU.

No DistributedDataParallel wrapper: the bilevel step runs two backward passes over two
parameter sets (architecture, then weights), and DDP's hooks fire for whatever requires a
gradient (NNI's DARTS under DDP lets the ranks' architectures drift, nni#5013). Instead each
rank computes its shard's gradients and `average_grads` all-reduces them, flattened into one
buffer, before every optimiser step; every rank then applies the same update to the same
values, so weights and architecture logits stay identical on every rank (checked each epoch
by `assert_same`). Every tensor a collective sees lives on the search's device (NCCL takes
no CPU tensor): `DistInfo.device` says which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    device: str = "cpu"  # where the collectives' tensors live (this rank's GPU under nccl)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_from_env(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)  # binds this rank to its GPU
        else:
            dist.init_process_group("gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), str(device))


def average_grads(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """All-reduce (mean) the gradients of `params` in one flat buffer."""
    if not info.active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def broadcast_(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Rank 0's values everywhere (start of a run: same weights whatever each rank drew)."""
    if not info.active:
        return
    for t in tensors:
        dist.broadcast(t.data, 0)


def assert_same(tensors: list[torch.Tensor], info: DistInfo, what: str) -> None:
    """RuntimeError unless every rank holds bit-identical `tensors`."""
    if not info.active:
        return
    flat = torch.cat([t.detach().reshape(-1) for t in tensors]).double()
    lo, hi = flat.clone(), flat.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RuntimeError(f"{what} differ between ranks (max gap {float((hi - lo).max()):.3g})")


def barrier(info: DistInfo) -> None:
    """Wait for every rank (e.g. all have checked the run directory before rank 0 writes it)."""
    if info.active:
        on = torch.device(info.device)
        if on.type == "cuda":
            dist.barrier(device_ids=[on.index or 0])
        else:
            dist.barrier()


def all_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum of per-rank counters (accuracies, losses) over the ranks."""
    if not info.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()
