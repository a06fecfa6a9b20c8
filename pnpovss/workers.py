"""The batches of a ``pnpovss segment`` run: the network in this process, decoding and
post-processing overlapped with it in worker processes.

Overlap (``workers > 0``): a ``torch.utils.data.DataLoader`` with ``workers`` processes decodes the
next images while the network runs, and a pool of ``workers`` processes finishes each batch
(:meth:`~pnpovss.result.PendingResult.finish`: upsampling, blur, CRF; then the overlay, PNG
encoding and the write). Both run the same functions on the same inputs as the serial path
(``workers=0``), so the files are identical. The job, its sharding and its summary are
:mod:`pnpovss.runner`.
"""

from __future__ import annotations

import multiprocessing
import signal
import warnings
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from .errors import ImageLoadError
from .fileio import MAX_PIXELS, load_image
from .outputs import write_result


@dataclass
class FolderJob:
    """What to segment and how (the ``segment`` command's options that are not pipeline settings)."""

    paths: list[Path]
    classes: list[str]
    out: Path
    keep_all: bool = False
    batch_size: int | None = None
    """None: the first image alone, then batches sized to the memory it took."""
    workers: int = 0
    skip_bad: bool = False
    overwrite: bool = False
    max_pixels: int | None = MAX_PIXELS
    coco: Path | None = None
    """Also write one COCO annotation file of the whole run here (:mod:`pnpovss.interop`)."""


class _Images(torch.utils.data.Dataset):
    """Decoded images of ``paths`` as ``(position, rgb, None)``, or ``(position, None, reason)``
    for one that cannot be read."""

    def __init__(self, paths: Sequence[Path], max_pixels: int | None, kept: dict[Path, Any]) -> None:
        self.paths, self.max_pixels, self.kept = list(paths), max_pixels, kept

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        p = self.paths[i]
        if p in self.kept:
            return i, self.kept.pop(p), None
        try:
            return i, load_image(p, max_pixels=self.max_pixels), None
        except ImageLoadError as exc:
            return i, None, str(exc)


def _as_is(item: Any) -> Any:
    return item


def _worker_init(*_worker_id: int) -> None:
    """Both kinds of worker: one torch thread (the main process's network has the cores), and
    Ctrl-C left to the main process, which stops them (a worker interrupted on its own would
    print a traceback and leave the main process waiting for it)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _context() -> Any:
    """fork where the platform has it: workers start at once and share the imported modules
    (they never touch a GPU)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def finish_and_write(pending: Any, out: Path, stem: str, meta: dict[str, Any], image: str, model: str,
                     classes: list[str], keep_all: bool, ran: dict[str, Any]) -> None:
    """Post-process one image and write its three files (runs in a worker process or inline)."""
    res = pending.finish()
    record = {**meta, **res.to_json(image=image, model=model, candidates=classes, keep_all=keep_all), **ran}
    write_result(out, stem, res.labels, res.overlay(), record)


def _decoded(job: FolderJob, todo: list[Path], kept: dict[Path, Any]) -> Iterator[tuple[int, Any, str | None]]:
    """``(position, rgb, None)`` or ``(position, None, reason)`` of each image of ``todo`` in order,
    decoded ahead in ``job.workers`` DataLoader processes (none: here, as they are asked for)."""
    loader = torch.utils.data.DataLoader(
        _Images(todo, job.max_pixels, kept), batch_size=None, shuffle=False, collate_fn=_as_is,
        num_workers=job.workers, multiprocessing_context=_context() if job.workers else None,
        worker_init_fn=_worker_init if job.workers else None)
    with warnings.catch_warnings():  # torch warns about more workers than cores when built (shown) and again here
        warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        return iter(loader)


class _Finisher:
    """Post-processing and writing of each batch (:func:`finish_and_write`): in a pool of
    ``workers`` processes, at most two batches behind the network, or inline without workers."""

    def __init__(self, workers: int, bar: Any) -> None:
        self.pool = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_worker_init) if workers else None
        self.running: deque[tuple[list[int], list[Future]]] = deque()
        self.bar = bar

    def add(self, positions: list[int], calls: list[tuple]) -> Iterator[tuple[int, None]]:
        """Finish one batch (``calls``: :func:`finish_and_write`'s arguments per image); yields the
        positions of every batch finished meanwhile."""
        jobs = []
        for args in calls:
            if self.pool is None:
                finish_and_write(*args)
            else:
                jobs.append(self.pool.submit(finish_and_write, *args))
        self.running.append((positions, jobs))
        while self.running and (self.pool is None or len(self.running) > 2
                                or all(f.done() for f in self.running[0][1])):
            yield from self._collect()

    def drain(self) -> Iterator[tuple[int, None]]:
        while self.running:
            yield from self._collect()

    def _collect(self) -> Iterator[tuple[int, None]]:
        positions, futures = self.running.popleft()
        for f in futures:
            f.result()  # a worker's exception surfaces here
        self.bar.add(len(positions))
        for i in positions:
            yield i, None

    def close(self, now: bool = False) -> None:
        """Shut the pool down (``now``: Ctrl-C, its workers ended at once)."""
        if self.pool is not None:
            if now:
                _stop_now(self.pool)
            self.pool.shutdown(wait=True, cancel_futures=True)


def segment_in_batches(seg: Any, job: FolderJob, todo: list[Path], keys: dict[Path, dict[str, Any]],
                       kept: dict[Path, Any], model: str, ran: dict[str, Any],
                       bar: Any) -> Iterator[tuple[int, str | None]]:
    """Yield ``(position in todo, None)`` for each image written and ``(position, reason)`` for each
    skipped, in batches: decoding ahead in DataLoader workers and post-processing in a pool when
    ``job.workers`` > 0, else everything in this process, in order. ``bar.add(n)`` counts the
    finished images (the run's progress over all processes)."""
    from .batching import Batches

    if not todo:
        return
    decoded = _decoded(job, todo, kept)
    finisher = _Finisher(job.workers, bar)
    batches = Batches(seg.backbone.device, job.batch_size)
    batch: list[tuple[int, Any]] = []

    def flush() -> Iterator[tuple[int, None]]:
        nonlocal batch
        chunk, batch = batch, []
        with batches.measured():
            pending = seg.segment_batch_pending([rgb for _, rgb in chunk], job.classes, keep_all=job.keep_all)
        calls = [(p, job.out, todo[i].stem, keys[todo[i]], str(todo[i]), model, job.classes, job.keep_all, ran)
                 for (i, _), p in zip(chunk, pending)]
        return finisher.add([i for i, _ in chunk], calls)

    try:
        for i, rgb, error in decoded:
            if error is not None:
                if not job.skip_bad:
                    raise ImageLoadError(error)
                bar.add(1)
                yield i, error
                continue
            batch.append((i, rgb))
            if batches.full(len(batch)):
                yield from flush()
        if batch:
            yield from flush()
        yield from finisher.drain()
    except (KeyboardInterrupt, GeneratorExit):  # Ctrl-C here, or in the caller while this generator waits
        finisher.close(now=True)
        raise
    finally:
        finisher.close()
        decoded = None  # noqa: F841  (the DataLoader's workers stop now, not at interpreter exit)


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """Ctrl-C: end the post-processing workers at once instead of letting them finish their
    images (seconds each for large ones). Safe: results are written to temporary files renamed
    into place, so a killed write leaves no partial result, and a rerun redoes those images.
    ``_processes`` is the executor's own table of its workers (CPython 3.8+); without it the
    workers finish their current image as before."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()


__all__ = ["FolderJob", "finish_and_write", "segment_in_batches"]
