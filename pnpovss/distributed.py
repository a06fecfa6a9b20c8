"""Multi-process runs under ``torchrun``: environment detection, sharding, exact reductions.

``torchrun --nproc_per_node N -m pnpovss eval ...`` starts N copies of the command with RANK /
WORLD_SIZE / MASTER_ADDR / MASTER_PORT set. Each copy takes every N-th image (strided, so shards
stay balanced when images are sorted by size or content) and the per-process integer confusion
matrices are summed with an all-reduce. Floating-point quantities (rewards) are all-reduced as a
per-image vector in which each entry has exactly one non-zero contributor, then summed in image
order on every process: the total is bit-identical to a single-process run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np
import torch

from .errors import PnpOvssError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share: items ``rank, rank + world, ...``."""
        return list(items[self.rank :: self.world_size])

    def all_reduce_sum(self, array: np.ndarray) -> np.ndarray:
        """Element-wise sum over processes (int64 and float64 are both exact for our uses)."""
        if not self.enabled:
            return array
        t = torch.from_numpy(np.ascontiguousarray(array))
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t.numpy()

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def gather(self, obj: object) -> list:
        """``obj`` (any picklable value) of every process, in rank order; ``[obj]`` alone."""
        if not self.enabled:
            return [obj]
        if torch.distributed.get_backend() == "nccl":
            torch.cuda.set_device(self.local_rank)  # all_gather_object's tensors go to the current device
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


def env_is_main() -> bool:
    """Whether this process is torchrun's rank 0 (or runs alone), readable before the process group
    starts: checks that create and remove test files must run in one process only, or one removes
    the directory another is writing its test file in."""
    return os.environ.get("RANK", "0") == "0"


def from_env(device: str = "cpu") -> DistContext:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a plain single
    process when WORLD_SIZE is absent or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    try:
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        raise PnpOvssError("WORLD_SIZE is set but RANK is not: start multi-process runs with torchrun") from None
    if not torch.distributed.is_initialized():
        backend = "nccl" if str(device).startswith(("cuda", "auto")) and torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistContext(rank, world, local_rank)


def process_device(device: str, ctx: DistContext) -> str:
    """One GPU per process under torchrun: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
    if ctx.enabled and device in ("cuda", "auto") and torch.cuda.is_available():
        return f"cuda:{ctx.local_rank}"
    return device


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
