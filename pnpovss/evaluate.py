"""Dataset evaluation: run the one :class:`~pnpovss.Segmenter` pipeline over a dataset and score
it with an accumulated confusion matrix (mmsegmentation ``IoUMetric`` semantics).

Per image the caption holds the image-level labels (the classes present in its ground truth, the
paper's protocol) or, with ``all_classes``, every foreground class of the dataset. The pipeline's
label map indexes [background] + caption classes; it is mapped back to dataset class ids. Datasets
with a background class (VOC-21, Context-60, COCO-Object, toy world) run with the background
channel on (pipeline label 0 = dataset class 0); the others run with ``background=False``. An image
with no foreground label gets an all-background prediction (its pixels are then either background
or ignored).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .datasets.base import SegDataset, SegSample
from .distributed import DistContext
from .errors import PnpOvssError
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


@dataclass
class EvalResult:
    matrix: np.ndarray
    """(n, n) confusion matrix, rows = ground truth, columns = prediction."""
    summary: dict
    """``ConfusionMatrix.summary``: ``miou`` and ``per_class`` in percent, ``pixel_accuracy``."""
    images: int
    seconds: float
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**self.summary, "images": self.images, "seconds": round(self.seconds, 3), **self.meta,
                "confusion_matrix": self.matrix.tolist()}


def evaluate(segmenter: Segmenter, dataset: SegDataset, indices: Sequence[int], *, all_classes: bool = False,
             dist: DistContext | None = None, progress: bool = True) -> EvalResult:
    """Score ``indices`` of ``dataset``; under torchrun each process takes its shard and the
    confusion matrices are summed exactly (every process returns the full result)."""
    from tqdm import tqdm

    dist = dist or DistContext()
    cm = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    start = time.perf_counter()
    mine = dist.shard(list(indices))
    bar = tqdm(mine, unit="img", desc=f"eval {dataset.name}", disable=not (progress and dist.is_main),
               file=sys.stderr)
    for i in bar:
        sample = dataset[i]
        pred = predict(segmenter, dataset, sample, all_classes)
        try:
            cm.update(pred, sample.label)
        except ValueError as exc:
            raise PnpOvssError(f"{dataset.name} image {sample.name}: {exc}") from None
    bar.close()
    cm.matrix = dist.all_reduce_sum(cm.matrix)
    meta = {**dataset.describe(), "all_classes": all_classes, "processes": dist.world_size,
            "config": segmenter.config.replace(background=dataset.has_background).to_dict(),
            "model": segmenter.backbone.source}
    return EvalResult(cm.matrix, cm.summary(dataset.classes), len(indices), time.perf_counter() - start, meta)
