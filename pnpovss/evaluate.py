"""Dataset evaluation: run the one :class:`~pnpovss.Segmenter` pipeline over a dataset and score
it with an accumulated confusion matrix (mmsegmentation ``IoUMetric`` semantics).

Per image the caption holds the image-level labels (the classes present in its ground truth, the
paper's protocol) or, with ``all_classes``, every foreground class of the dataset. The pipeline's
label map indexes [background] + caption classes; it is mapped back to dataset class ids. Datasets
with a background class (VOC-21, Context-60, COCO-Object, toy world) run with the background
channel on (pipeline label 0 = dataset class 0); the others run with ``background=False``. An image
with no foreground label gets an all-background prediction (its pixels are then either background
or ignored).

Resuming: an evaluation keeps its progress (the confusion matrix of the images scored so far and
their indices) in the user cache, under a key made of everything that defines the run (dataset,
root, images, model, configuration, processes). It is written every ``save_seconds`` and when the
run is interrupted (Ctrl-C, an exception); rerunning the same command continues from it. The CLI
deletes it once the result is out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .datasets.base import SegDataset, SegSample
from .distributed import DistContext
from .errors import PnpOvssError
from .imageio import atomic_write_text
from .metrics import ConfusionMatrix
from .pipeline import Segmenter


def caption_class_ids(dataset: SegDataset, sample: SegSample, all_classes: bool) -> list[int]:
    """Dataset class ids named in the caption of ``sample``."""
    return list(dataset.foreground_ids) if all_classes else dataset.image_labels(sample.label)


def predict(segmenter: Segmenter, dataset: SegDataset, sample: SegSample, all_classes: bool = False) -> np.ndarray:
    """(H, W) prediction in dataset class ids."""
    ids = caption_class_ids(dataset, sample, all_classes)
    if not ids:
        return np.zeros(sample.label.shape, dtype=np.int64)
    names = [dataset.classes[i] for i in ids]
    res = segmenter.segment(sample.image, names, background=dataset.has_background)
    lut = np.asarray(([0] if dataset.has_background else []) + ids, dtype=np.int64)
    return lut[res.labels]


def predict_batch(segmenter: Segmenter, dataset: SegDataset, samples: Sequence[SegSample],
                  all_classes: bool = False) -> list[np.ndarray]:
    """:func:`predict` for several samples in one :meth:`~pnpovss.Segmenter.segment_batch` call."""
    ids = [caption_class_ids(dataset, s, all_classes) for s in samples]
    live = [k for k, i in enumerate(ids) if i]
    preds = [np.zeros(s.label.shape, dtype=np.int64) for s in samples]
    if live:
        results = segmenter.segment_batch([samples[k].image for k in live],
                                          [[dataset.classes[i] for i in ids[k]] for k in live],
                                          background=dataset.has_background)
        for k, res in zip(live, results):
            lut = np.asarray(([0] if dataset.has_background else []) + ids[k], dtype=np.int64)
            preds[k] = lut[res.labels]
    return preds


@dataclass
class EvalResult:
    matrix: np.ndarray
    """(n, n) confusion matrix, rows = ground truth, columns = prediction."""
    summary: dict
    """``ConfusionMatrix.summary``: ``miou`` and ``per_class`` in percent, ``pixel_accuracy``."""
    images: int
    seconds: float
    meta: dict = field(default_factory=dict)
    progress_file: Path | None = None
    """With ``resume``: this process's progress file (delete it once the result is stored)."""

    def to_json(self) -> dict:
        return {**self.summary, "images": self.images, "seconds": round(self.seconds, 3), **self.meta,
                "confusion_matrix": self.matrix.tolist()}


def cache_root() -> Path:
    """``$PNPOVSS_CACHE``, else ``$XDG_CACHE_HOME/pnpovss``, else ``~/.cache/pnpovss``."""
    if os.environ.get("PNPOVSS_CACHE"):
        return Path(os.environ["PNPOVSS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pnpovss"


def progress_path(meta: dict[str, Any], indices: Sequence[int], rank: int) -> Path:
    """This process's progress file for the run that ``meta`` and ``indices`` define."""
    key = json.dumps({**meta, "indices": list(indices), "rank": rank}, sort_keys=True, default=str)
    return cache_root() / "eval" / f"{hashlib.sha1(key.encode()).hexdigest()[:24]}.json"


class EvalProgress:
    """The images one process has scored so far and their confusion matrix, on disk."""

    def __init__(self, path: Path, num_classes: int) -> None:
        self.path, self.num_classes = path, num_classes

    def load(self) -> tuple[set[int], np.ndarray | None]:
        try:
            state = json.loads(self.path.read_text())
            matrix = np.asarray(state["matrix"], dtype=np.int64)
            if matrix.shape != (self.num_classes, self.num_classes):
                raise ValueError("matrix shape")
            return set(int(i) for i in state["done"]), matrix
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: score everything
            return set(), None

    def save(self, done: set[int], matrix: np.ndarray) -> None:
        atomic_write_text(self.path, json.dumps({"done": sorted(done), "matrix": matrix.tolist()}))


def evaluate(segmenter: Segmenter, dataset: SegDataset, indices: Sequence[int], *, all_classes: bool = False,
             dist: DistContext | None = None, progress: bool = True, resume: bool = False,
             save_seconds: float = 30.0, batch_size: int | None = 1) -> EvalResult:
    """Score ``indices`` of ``dataset``; under torchrun each process takes its shard and the
    confusion matrices are summed exactly (every process returns the full result).

    With ``resume``, progress is kept on disk (see the module docstring; ``EvalResult.progress_file`` names this process's file) and an earlier interrupted run is continued.
    ``batch_size`` images share a forward pass; ``None`` sizes batches to the memory the first image
    took (:mod:`pnpovss.batching`). Scores do not depend on it."""
    from .batching import PeakMemory, auto_batch_size

    from tqdm import tqdm

    dist = dist or DistContext()
    meta = {**dataset.describe(), "all_classes": all_classes, "processes": dist.world_size,
            "config": segmenter.config.replace(background=dataset.has_background).to_dict(),
            "model": segmenter.backbone.source}
    cm = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    start = time.perf_counter()
    mine = dist.shard(list(indices))
    done: set[int] = set()
    state = None
    if resume:
        root = getattr(dataset, "root", None)
        state = EvalProgress(progress_path({**meta, "root": str(root) if root else None}, indices, dist.rank),
                             dataset.num_classes)
        done, matrix = state.load()
        done &= set(mine)
        if matrix is not None and done:
            cm.matrix = matrix
            if dist.is_main:
                print(f"resuming: {len(done)} of {len(mine)} images already scored ({state.path})", file=sys.stderr)
        else:
            done = set()
    todo = [i for i in mine if i not in done]
    bar = tqdm(unit="img", desc=f"eval {dataset.name}", disable=not (progress and dist.is_main),
               file=sys.stderr, total=len(mine), initial=len(done))
    last_save = time.monotonic()
    size, pos = batch_size or 1, 0
    try:
        while pos < len(todo):
            chunk = todo[pos : pos + size]
            samples = [dataset[i] for i in chunk]
            sizing = batch_size is None and pos == 0  # the first image alone, measured
            with PeakMemory(segmenter.backbone.device) if sizing else contextlib.nullcontext() as peak:
                preds = ([predict(segmenter, dataset, samples[0], all_classes)] if len(samples) == 1
                         else predict_batch(segmenter, dataset, samples, all_classes))
            if sizing:
                size = auto_batch_size(segmenter.backbone.device, peak.bytes)
            for i, sample, pred in zip(chunk, samples, preds):
                try:
                    cm.update(pred, sample.label)
                except ValueError as exc:
                    raise PnpOvssError(f"{dataset.name} image {sample.name}: {exc}") from None
                done.add(i)
            pos += len(chunk)
            bar.update(len(chunk))
            if state is not None and time.monotonic() - last_save > save_seconds:
                state.save(done, cm.matrix)
                last_save = time.monotonic()
    finally:
        bar.close()
        if state is not None and len(done) < len(mine):  # interrupted: keep what was scored
            state.save(done, cm.matrix)
    cm.matrix = dist.all_reduce_sum(cm.matrix)
    return EvalResult(cm.matrix, cm.summary(dataset.classes), len(indices), time.perf_counter() - start, meta,
                      state.path if state is not None else None)
