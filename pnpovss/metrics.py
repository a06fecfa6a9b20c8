"""Semantic-segmentation metrics from an accumulated confusion matrix.

Semantics match mmsegmentation's ``IoUMetric``: pixels whose ground truth is the ignore index
(255) are not scored at all; per class IoU = TP / (TP + FP + FN); a class absent from both
ground truth and prediction has IoU NaN and is left out of the mean (``nanmean``).
(Used by ``bench/toyworld.py``, ``pnpovss eval`` and tuning: keep ``update``/``summary``.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

IGNORE_INDEX = 255
"""Ground-truth value of unlabelled pixels (mmsegmentation's convention), for metrics and dataset readers."""


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of true class t predicted as p.

    ``unscored_labels`` adds prediction-only labels after the classes (e.g. a background channel on
    a dataset without a background class): never ground truth, not classes of the mean; a pixel
    predicted as one is a miss for its true class and a false positive for no class."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, unscored_labels: int = 0) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.num_labels = num_classes + unscored_labels
        self.matrix = np.zeros((num_classes, self.num_labels), dtype=np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        pred = np.asarray(pred).astype(np.int64).ravel()
        truth = np.asarray(truth).astype(np.int64).ravel()
        if pred.shape != truth.shape:
            raise ValueError(f"prediction has {pred.size} pixels, ground truth {truth.size}")
        keep = truth != self.ignore_index
        pred, truth = pred[keep], truth[keep]
        if truth.size and (truth.max() >= self.num_classes or truth.min() < 0):
            raise ValueError(f"ground-truth label {truth.max()} outside 0..{self.num_classes - 1} (and not {self.ignore_index})")
        if pred.size and (pred.max() >= self.num_labels or pred.min() < 0):
            raise ValueError(f"predicted label {pred.max()} outside 0..{self.num_labels - 1}")
        self.matrix += np.bincount(truth * self.num_labels + pred, minlength=self.num_classes * self.num_labels).reshape(
            self.num_classes, self.num_labels
        )

    def merge(self, other: "ConfusionMatrix") -> None:
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        tp = np.diag(self.matrix).astype(np.float64)  # (n,) also when unscored labels add columns
        union = self.matrix[:, : self.num_classes].sum(0) + self.matrix.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total * 100) if total else float("nan")

    def summary(self, names: Sequence[str]) -> dict:
        """``{"miou": 0-100, "per_class": {name: 0-100 or None}, "pixel_accuracy": 0-100}``."""
        iou = self.iou()
        return {
            "miou": round(self.miou(), 3),
            "per_class": {n: (None if np.isnan(v) else round(float(v) * 100, 3)) for n, v in zip(names, iou)},
            "pixel_accuracy": round(self.pixel_accuracy(), 3),
        }


def iou_table(summary: dict) -> str:
    """``summary()`` as a plain-text per-class table (class, IoU %) ending with mIoU, for terminals."""
    per_class = summary["per_class"]
    width = max([len("mIoU")] + [len(n) for n in per_class])
    rows = [f"{'class':<{width}}  {'IoU':>7}", "-" * (width + 9)]
    rows += [f"{name:<{width}}  {'n/a' if v is None else f'{v:.2f}':>7}" for name, v in per_class.items()]
    rows += ["-" * (width + 9), f"{'mIoU':<{width}}  {summary['miou']:>7.2f}"]
    return "\n".join(rows)



def tag_counts(predicted: Sequence[str] | Sequence[int], truth: Sequence[str] | Sequence[int]) -> np.ndarray:
    """One image's tagging outcome as integers [true pos, false pos, false neg, exact set, images]:
    sums of these over images (and processes) give :func:`tag_summary`."""
    p, t = set(predicted), set(truth)
    return np.array([len(p & t), len(p - t), len(t - p), int(p == t), 1], dtype=np.int64)


def tag_summary(counts: np.ndarray) -> dict:
    """Micro-averaged tag precision/recall/F1 (percent) over (image, class) pairs, from summed
    :func:`tag_counts`; ``exact_sets``: percent of images whose kept set equals the truth."""
    tp, fp, fn, exact, n = (int(v) for v in counts)
    pct = lambda num, den: round(100.0 * num / den, 2) if den else 100.0  # noqa: E731
    return {"precision": pct(tp, tp + fp), "recall": pct(tp, tp + fn), "f1": pct(2 * tp, 2 * tp + fp + fn),
            "exact_sets": pct(exact, n), "images": n}


def tag_scores(predicted: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> dict:
    """:func:`tag_summary` of per-image kept classes (``predicted``) against the classes present."""
    counts = sum((tag_counts(p, t) for p, t in zip(predicted, truth)), np.zeros(5, dtype=np.int64))
    return tag_summary(counts)


def label_counts(labels: np.ndarray, n: int) -> np.ndarray:
    """Pixels per label 0..n-1, counted in chunks of 4M: ``np.bincount`` first copies its input to
    int64, which for a 64-megapixel uint8 label map is half a gigabyte and ~2 s; chunks stay in cache."""
    flat, counts = labels.ravel(), np.zeros(n, dtype=np.int64)
    for start in range(0, flat.size, 1 << 22):
        part = np.bincount(flat[start:start + (1 << 22)], minlength=n)
        counts[:min(n, part.size)] += part[:n]
    return counts
