"""How many images share one forward/backward pass (``--batch-size auto``).

The pipeline's passes take a batch of images; a batch is faster per image only where the device
has idle parallelism (a GPU; barely a 2-thread CPU, docs/results/throughput.md) and it must fit in memory. The
automatic size is measured, not guessed from the architecture: the first image runs alone, its
peak memory above what was allocated before is read (CUDA: ``torch.cuda.max_memory_allocated``;
CPU: the growth of the process's peak RSS, which is 0 when loading the model peaked higher, leaving
the cap), and the batch is what fits in half of the memory free at that moment, capped at
:data:`MAX_BATCH` on a GPU and :data:`CPU_MAX_BATCH` on a CPU.
Results do not depend on the batch: each image's caption, padding and dropped patches are its own
(tests check batch 1 against batch 4).
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")

MAX_BATCH = 16
CPU_MAX_BATCH = 4
"""On a CPU, batches bring little (docs/results/throughput.md); a small cap keeps memory and the latency of
the progress bar low."""
MEMORY_FRACTION = 0.5


def batch_for_memory(per_image_bytes: int, free_bytes: int, cap: int) -> int:
    """Images per batch: as many as fit in ``MEMORY_FRACTION`` of ``free_bytes``, within 1..cap."""
    if per_image_bytes <= 0:
        return cap
    return max(1, min(cap, int(free_bytes * MEMORY_FRACTION // per_image_bytes)))


def free_bytes(device: torch.device) -> int:
    """Memory free for new tensors on ``device`` now (CPU: MemAvailable; 0 if unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakMemory:
    """Context measuring the peak memory its block adds on ``device`` (``.bytes`` after exit)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.bytes = device, 0

    def _peak(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = int(torch.cuda.memory_allocated(self.device))
        else:
            self._base = self._peak()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes = max(0, self._peak() - self._base)


def auto_batch_size(device: torch.device, per_image_bytes: int) -> int:
    """The batch size for the images after a first one that needed ``per_image_bytes``."""
    cap = MAX_BATCH if device.type == "cuda" else CPU_MAX_BATCH
    free = free_bytes(device)
    return batch_for_memory(per_image_bytes, free, cap) if free else 1


class Batches:
    """The batch sizes of a stream of images, for every loop that batches (``segment_stream``, the
    folder runner's workers, ``eval``): ``batch_size`` images at a time, or with ``None`` the first
    image alone, its peak memory measured (:meth:`measured`), then :func:`auto_batch_size`."""

    def __init__(self, device: torch.device, batch_size: int | None) -> None:
        self.device = device
        self.size = batch_size or 1
        self.sizing = batch_size is None

    def full(self, count: int) -> bool:
        """Whether ``count`` gathered images make a batch."""
        return count >= self.size

    def chunks(self, items: Iterable[T]) -> Iterator[list[T]]:
        """``items`` in consecutive batches; a size measured while a batch ran applies to the next."""
        batch: list[T] = []
        for item in items:
            batch.append(item)
            if self.full(len(batch)):
                yield batch
                batch = []
        if batch:
            yield batch

    @contextlib.contextmanager
    def measured(self) -> Iterator[None]:
        """Run one batch; while sizing, its peak memory sets the size of the batches after it."""
        if not self.sizing:
            yield
            return
        with PeakMemory(self.device) as peak:
            yield
        self.size, self.sizing = auto_batch_size(self.device, peak.bytes), False


__all__ = ["MAX_BATCH", "CPU_MAX_BATCH", "Batches", "PeakMemory", "auto_batch_size", "batch_for_memory",
           "free_bytes"]
