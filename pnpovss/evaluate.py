"""Dataset evaluation: run the one :class:`~pnpovss.Segmenter` pipeline over a dataset and score
it with an accumulated confusion matrix (mmsegmentation ``IoUMetric`` semantics).

Which classes a caption holds is the *protocol* (``labels``): ``gt``, each image's ground-truth
labels (the classes present in its annotation); ``reference``, every class of the dataset in the
caption but only the ground-truth classes' maps kept (the CVPR-era PnP-OVSS scripts; the caption is
cut at 500 tokens as theirs is, with a warning naming the classes cut off); ``all``, every
foreground class of the dataset in every caption; ``detect``, the whole vocabulary as candidates
for the presence stage (:mod:`pnpovss.presence`), i.e. no labels of any kind at test time, the
protocol of the full-vocabulary training-free methods. ``detect`` also reports tag
precision/recall/F1 of the kept classes against the ground-truth image labels. The pipeline's
label map indexes [background] + caption classes; it is mapped back to dataset class ids. Datasets
with a background class (VOC-21, Context-60, COCO-Object, toy world) run with the background
channel on (pipeline label 0 = dataset class 0); the others run with ``background=False``. An image
with no foreground label gets an all-background prediction (its pixels are then either background
or ignored).

``background_mode="reference"`` (``pnpovss eval --background-mode reference``) follows the
reference scripts instead: on datasets without a background class (Context-59, ADE20K,
COCO-Stuff) the background channel is added when the caption names fewer than 3 classes. Such a
background prediction is scored as mmsegmentation would score a label outside the class list: a
pixel whose true class is c counts as a miss of c (a false negative) and as a false positive of no
class; background is not a class of the mean. (The reference's own scorer differs: it counts the
dataset's unlabelled pixels, ADE20K's "other" included, as an extra "Background" class of its
mean; we ignore them as mmsegmentation does.)

Resuming: an evaluation keeps its progress (the confusion matrix of the images scored so far and
their indices) in the user cache, under a key made of everything that defines the run (dataset,
root, the exact image list by id, model, configuration, processes). It is written every ``save_seconds`` and when the
run is interrupted (Ctrl-C, an exception); rerunning the same command continues from it. The CLI
deletes it once the result is out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .datasets.base import SegDataset, SegSample
from .backbones import source_label
from .distributed import DistContext
from .errors import PnpOvssError
from .fileio import atomic_write_text
from .metrics import ConfusionMatrix, tag_counts, tag_summary
from .pipeline import Segmenter

log = logging.getLogger(__name__)

PROTOCOLS = ("gt", "all", "detect", "reference")

REFERENCE_CAPTION_TOKENS = 500
"""The CVPR-era scripts tokenise their captions with ``truncation=True, max_length=500``."""


def label_protocol(labels: str | None, all_classes: bool = False, default: str = "gt") -> str:
    """The protocol to run: ``labels`` when given, else ``all`` from the older ``all_classes``
    flag, else ``default`` (a configuration's ``eval_labels``); an unknown name is an error."""
    protocol = labels or ("all" if all_classes else default)
    if protocol not in PROTOCOLS:
        raise PnpOvssError(f"unknown label protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    return protocol


def caption_class_ids(dataset: SegDataset, sample: SegSample, all_classes: bool) -> list[int]:
    """Dataset class ids named in the caption of ``sample`` (or the candidates, under ``detect``)."""
    return list(dataset.foreground_ids) if all_classes else dataset.image_labels(sample.label)


def vocabulary_caption(segmenter: Segmenter, dataset: SegDataset) -> list[int]:
    """The ``reference`` protocol's caption: the foreground class ids of ``dataset`` in order, a
    name the class-name table repeats only once (ADE20K's two "screen"s: the reference's token
    match finds the first for both), cut where the reference's 500-token truncation cuts (or the
    model's own limit, if lower). A warning names the classes cut off."""
    names = dataset.caption_names(segmenter.config.class_names)
    seen: set[str] = set()
    ids = [i for i in dataset.foreground_ids if not (names[i].lower() in seen or seen.add(names[i].lower()))]
    limit = min(REFERENCE_CAPTION_TOKENS, segmenter.backbone.max_text_tokens)
    n = segmenter.backbone.classes_within(segmenter.config.prompt, [names[i] for i in ids], limit)
    if n < len(ids):
        log.warning("the caption of all %d %s classes exceeds %d tokens; cut there as the reference does, so %d "
                    "classes are never predicted: %s", len(ids), dataset.name, limit, len(ids) - n,
                    ", ".join(names[i] for i in ids[n:]))
    return ids[:n]


def _caption(segmenter: Segmenter, dataset: SegDataset, sample: SegSample, protocol: str,
             vocabulary: list[int] | None) -> tuple[list[int], dict[str, Any]]:
    """The class ids whose maps are kept, and the keywords that make ``segment`` caption them."""
    ids = caption_class_ids(dataset, sample, protocol in ("all", "detect"))
    if protocol != "reference":
        return ids, {"keep_all": protocol != "detect"}
    vocab = vocabulary_caption(segmenter, dataset) if vocabulary is None else vocabulary
    names = dataset.caption_names(segmenter.config.class_names)
    first = {names[i].lower(): i for i in reversed(vocab)}
    kept = [i for i in ids if first.get(names[i].lower()) == i]  # cut off, or a repeated name: the first's map
    return kept, {"caption": [names[i] for i in vocab]}


def predict(segmenter: Segmenter, dataset: SegDataset, sample: SegSample, all_classes: bool = False,
            labels: str | None = None, vocabulary: list[int] | None = None) -> tuple[np.ndarray, list[int]]:
    """(H, W) prediction in dataset class ids, and the class ids the caption used. ``labels`` is
    the protocol (``gt``/``all``/``detect``/``reference``; default from ``all_classes``, then the
    configuration's ``eval_labels``); ``vocabulary``: :func:`vocabulary_caption`, computed once per
    run. On a dataset without a background class, a background prediction is
    ``dataset.num_classes``, an unscored label (see :func:`evaluate`)."""
    return predict_batch(segmenter, dataset, [sample], all_classes, labels, vocabulary)[0]


def _dataset_ids(res, ids: list[int], dataset: SegDataset, names_of: list[str]) -> tuple[np.ndarray, list[int]]:
    """A result's label map in dataset class ids, and the ids of the classes it used (the caption's
    ``ids``, less those the presence stage dropped)."""
    names = [names_of[i] for i in ids]
    used = [ids[names.index(n)] for n in res.classes[1 if res.config.background else 0 :]]
    background = [0 if dataset.has_background else dataset.num_classes] if res.config.background else []
    return np.asarray(background + used, dtype=np.int64)[res.labels], used


def unscored_labels(segmenter: Segmenter, dataset: SegDataset) -> int:
    """1 when the pipeline may predict background on a dataset that has no background class."""
    return int(not dataset.has_background and segmenter.config.background_mode != "dataset")


def predict_batch(segmenter: Segmenter, dataset: SegDataset, samples: Sequence[SegSample],
                  all_classes: bool = False, labels: str | None = None,
                  vocabulary: list[int] | None = None) -> list[tuple[np.ndarray, list[int]]]:
    """:func:`predict` for several samples in one :meth:`~pnpovss.Segmenter.segment_batch` call."""
    protocol = label_protocol(labels, all_classes, segmenter.config.eval_labels)
    if protocol == "reference" and vocabulary is None:
        vocabulary = vocabulary_caption(segmenter, dataset)
    captions = [_caption(segmenter, dataset, s, protocol, vocabulary) for s in samples]
    names = dataset.caption_names(segmenter.config.class_names)
    live = [k for k, (i, _) in enumerate(captions) if i]
    out: list[tuple[np.ndarray, list[int]]] = [(np.zeros(s.label.shape, dtype=np.int64), []) for s in samples]
    if live:
        results = segmenter.segment_batch([samples[k].image for k in live],
                                          [[names[i] for i in captions[k][0]] for k in live],
                                          **captions[live[0]][1], **dataset.pipeline_settings())
        for k, res in zip(live, results):
            out[k] = _dataset_ids(res, captions[k][0], dataset, names)
    return out


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


def progress_path(meta: dict[str, Any], indices: Sequence[int], rank: int, ids: Sequence[str] | None = None) -> Path:
    """This process's progress file for the run that ``meta``, ``indices`` and the images' ``ids``
    (the exact image list, not only its length) define."""
    key = json.dumps({**meta, "indices": list(indices), "rank": rank, **({"ids": list(ids)} if ids is not None else {})},
                     sort_keys=True, default=str)
    return cache_root() / "eval" / f"{hashlib.sha1(key.encode()).hexdigest()[:24]}.json"


class EvalProgress:
    """The images one process has scored so far and their confusion matrix, on disk."""

    def __init__(self, path: Path, shape: tuple[int, int]) -> None:
        self.path, self.shape = path, tuple(shape)

    def load(self) -> tuple[set[int], np.ndarray | None, np.ndarray]:
        try:
            state = json.loads(self.path.read_text())
            matrix = np.asarray(state["matrix"], dtype=np.int64)
            tags = np.asarray(state.get("tags", [0] * 5), dtype=np.int64)
            if matrix.shape != self.shape or tags.shape != (5,):
                raise ValueError("matrix shape")
            return set(int(i) for i in state["done"]), matrix, tags
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: score everything
            return set(), None, np.zeros(5, dtype=np.int64)

    def save(self, done: set[int], matrix: np.ndarray, tags: np.ndarray) -> None:
        atomic_write_text(self.path, json.dumps({"done": sorted(done), "matrix": matrix.tolist(),
                                                 "tags": tags.tolist()}))


def run_meta(segmenter: Segmenter, dataset: SegDataset, protocol: str, processes: int = 1) -> dict[str, Any]:
    """The settings that define an evaluation (its JSON's settings; its progress file's key)."""
    return {**dataset.describe(), "labels": protocol, "all_classes": protocol == "all", "processes": processes,
            "config": segmenter.config.replace(**dataset.pipeline_settings()).to_dict(),
            "model": source_label(segmenter.backbone.source)}


def _resumed(dataset: SegDataset, indices: Sequence[int], meta: dict[str, Any], dist: DistContext, mine: list[int],
             cm: ConfusionMatrix, tags: np.ndarray) -> tuple[EvalProgress, set[int], np.ndarray]:
    """This process's progress file, the images it scored already and their tag counts (the
    confusion matrix ``cm`` takes their counts)."""
    root = getattr(dataset, "root", None)
    ids = [dataset.sample_id(i) for i in indices]
    state = EvalProgress(progress_path({**meta, "root": str(root) if root else None}, indices, dist.rank, ids),
                         cm.matrix.shape)
    done, matrix, saved_tags = state.load()
    done &= set(mine)
    if matrix is None or not done:
        return state, set(), tags
    cm.matrix = matrix
    if dist.is_main:
        log.warning("resuming: %d of %d images already scored (%s)", len(done), len(mine), state.path)
    return state, done, saved_tags


def evaluate(segmenter: Segmenter, dataset: SegDataset, indices: Sequence[int], *, all_classes: bool = False,
             labels: str | None = None, dist: DistContext | None = None, progress: bool = True,
             resume: bool = False, save_seconds: float = 30.0, batch_size: int | None = 1) -> EvalResult:
    """Score ``indices`` of ``dataset``; under torchrun each process takes its shard and the
    confusion matrices are summed exactly (every process returns the full result).

    With ``resume``, progress is kept on disk (see the module docstring; ``EvalResult.progress_file`` names this process's file) and an earlier interrupted run is continued.
    ``batch_size`` images share a forward pass; ``None`` sizes batches to the memory the first image
    took (:mod:`pnpovss.batching`). Scores do not depend on it."""
    from tqdm import tqdm

    from .batching import Batches

    dist = dist or DistContext()
    protocol = label_protocol(labels, all_classes, segmenter.config.eval_labels)
    vocabulary = vocabulary_caption(segmenter, dataset) if protocol == "reference" else None
    meta = run_meta(segmenter, dataset, protocol, dist.world_size)
    cm = ConfusionMatrix(dataset.num_classes, dataset.ignore_index, unscored_labels(segmenter, dataset))
    start = time.perf_counter()
    mine = dist.shard(list(indices))
    tags = np.zeros(5, dtype=np.int64)  # summed metrics.tag_counts of the images scored
    state, done = None, set()
    if resume:
        state, done, tags = _resumed(dataset, indices, meta, dist, mine, cm, tags)
    todo = [i for i in mine if i not in done]
    bar = tqdm(unit="img", desc=f"eval {dataset.name}", disable=not (progress and dist.is_main),
               file=sys.stderr, total=len(mine), initial=len(done))
    last_save = time.monotonic()
    batches = Batches(segmenter.backbone.device, batch_size)
    try:
        for chunk in batches.chunks(todo):
            samples = [dataset[i] for i in chunk]
            with batches.measured():
                preds = predict_batch(segmenter, dataset, samples, labels=protocol, vocabulary=vocabulary)
            for i, sample, (pred, used) in zip(chunk, samples, preds):
                tags += tag_counts(used, dataset.image_labels(sample.label))
                try:
                    cm.update(pred, sample.label)
                except ValueError as exc:
                    raise PnpOvssError(f"{dataset.name} image {sample.name}: {exc}") from None
                done.add(i)
            bar.update(len(chunk))
            if state is not None and time.monotonic() - last_save > save_seconds:
                state.save(done, cm.matrix, tags)
                last_save = time.monotonic()
    finally:
        bar.close()
        if state is not None and len(done) < len(mine):  # interrupted: keep what was scored
            state.save(done, cm.matrix, tags)
    cm.matrix = dist.all_reduce_sum(cm.matrix)
    if protocol == "detect":
        meta = {**meta, "tags": tag_summary(dist.all_reduce_sum(tags))}
    meta = {**meta, "execution": segmenter.backbone.execution.to_json()}  # recorded, not part of the progress key
    return EvalResult(cm.matrix, cm.summary(dataset.classes), len(indices), time.perf_counter() - start, meta,
                      state.path if state is not None else None)
