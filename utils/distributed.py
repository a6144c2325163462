"""One process of a `torchrun` launch, or the only one: its rank, the world size, and the few
collectives the search needs (averaged gradients, summed totals, gathered batches, one agreed flag).

With one process every collective is the identity, so the single-process code path is the
distributed one with `world == 1`: nothing branches on whether a run is distributed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.distributed as dist

from utils.errors import UserError


@dataclass(frozen=True)
class Distributed:
    """Rank and world size of this process (rank 0 writes every file of a run)."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"  # where collectives' own tensors live (nccl reduces device tensors only)

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files and prints its log."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch (its `rank`-th of `world` equal slices)."""
        if self.world == 1:
            return batch
        n = batch.shape[0] // self.world
        return batch[self.rank * n:(self.rank + 1) * n]

    def gather(self, part: torch.Tensor) -> torch.Tensor:
        """The global batch from every rank's equal share (in rank order), on every rank."""
        if self.world == 1:
            return part
        parts = [torch.empty_like(part) for _ in range(self.world)]
        dist.all_gather(parts, part.contiguous())
        return torch.cat(parts)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """`value` summed over the ranks (in place, and returned)."""
        if self.world > 1:
            dist.all_reduce(value)
        return value

    def average(self, tensors: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """The rank mean of each tensor (None stays None: every rank has the same Nones, since every
        rank holds the same architecture). One flat all-reduce for all of them, as DDP's buckets."""
        if self.world == 1:
            return list(tensors)
        present = [t for t in tensors if t is not None]
        if not present:
            return list(tensors)
        flat = torch.cat([t.reshape(-1) for t in present]).div_(self.world)
        dist.all_reduce(flat)
        out, offset = [], 0
        for t in tensors:
            if t is None:
                out.append(None)
                continue
            out.append(flat[offset:offset + t.numel()].view_as(t).to(t.dtype))
            offset += t.numel()
        return out

    def average_grads(self, params: Iterable[torch.Tensor]) -> None:
        """Replace every `.grad` of `params` by its rank mean (what DDP's reducer does after backward)."""
        if self.world == 1:
            return
        params = [p for p in params if p.grad is not None]
        for p, g in zip(params, self.average([p.grad for p in params])):
            p.grad.copy_(g)

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (a stop requested on one rank stops all)."""
        if self.world == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value)
        return bool(value.item() > 0)

    def check_same(self, tensors: Iterable[torch.Tensor], what: str) -> None:
        """Raise if the ranks hold different values (a bug: every rank must compute the same state)."""
        if self.world == 1:
            return
        flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
        low, high = flat.clone(), flat.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise RuntimeError(f"the processes hold different {what}: {int((low != high).sum())} values differ")

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (a path, a decision)."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


class _Summed(torch.autograd.Function):
    """All-reduce (sum) that autograd differentiates: the gradient of a sum over ranks, for each
    rank's input, is the sum over ranks of the output's gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def summed(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over the ranks of the joined process group, differentiably (a new tensor)."""
    return _Summed.apply(tensor)


def setup(device_name: str) -> tuple[Distributed, str]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns this process and the
    device name it should use (`cuda:LOCAL_RANK` for CUDA). gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device_name
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available (use --device cpu)")
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    elif device_name == "auto":
        device_name = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Distributed(rank=rank, world=world, device=device_name), device_name


def teardown() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
