"""Results as the types other tools read: ``supervision.Detections`` (what its annotators draw and
its dataset classes save) and COCO annotations with RLE masks (what ``pycocotools``, CVAT, Label
Studio and FiftyOne import), so that nobody writes the conversion from a label map by hand.

Both need the optional ``interop`` extra (``pip install 'pnpovss[interop]'``: supervision,
pycocotools), imported on first use; without it the call fails with one line naming the extra.

One mask per found class: the pixels of the label map that carry the class (background left
out, a class without pixels left out), so the masks of an image never overlap and their union is
exactly the non-background pixels. COCO annotations are one per image and class, ``iscrowd`` 0
(a class's region, as COCO-Stuff writes its stuff regions), ``segmentation`` compressed RLE,
``area`` its pixel count and ``bbox`` its box; ``score`` is the class's presence probability
where the presence stage ran (left out under ``keep_all``, which decides nothing).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from .errors import PnpOvssError
from .fileio import atomic_write_text
from .metrics import label_counts

SegmentationResult = Any
"""A :class:`pnpovss.result.SegmentationResult` (named here without importing it: the result's
``to_detections``/``to_coco`` import this module)."""

EXTRA = "interop"
_PACKAGES = {"supervision": "supervision", "pycocotools.mask": "pycocotools"}


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` of the ``interop`` extra, or fail with one line that names the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = _PACKAGES.get(module, module.split(".")[0])
        raise PnpOvssError(f"{what} needs {package}, part of the optional '{EXTRA}' extra: "
                           f"pip install 'pnpovss[{EXTRA}]'") from None


def class_masks(labels: np.ndarray, classes: Sequence[str], background: bool) -> list[tuple[int, str, np.ndarray]]:
    """(label index, class name, (H, W) bool mask) of every class with pixels in ``labels``, in
    label order; label 0 is left out when it is the background channel."""
    counts = label_counts(labels, len(classes))
    first = 1 if background else 0
    return [(k, classes[k], labels == k) for k in range(first, len(classes)) if counts[k]]


def presence_scores(result: SegmentationResult) -> dict[str, float]:
    """Each candidate's presence probability (empty when no presence stage ran)."""
    p = result.presence
    return {} if p is None else {c: float(s) for c, s in zip(p.candidates, p.scores)}


def to_detections(result: SegmentationResult, vocabulary: Sequence[str] | None = None) -> Any:
    """``supervision.Detections`` of a result (see :meth:`SegmentationResult.to_detections`)."""
    sv = require("supervision", "to_detections()")
    h, w = result.labels.shape
    found = class_masks(result.labels, result.classes, result.config.background)
    names = [name for _, name, _ in found]
    if vocabulary is None:
        class_id = [k for k, _, _ in found]
    else:
        vocabulary = list(vocabulary)
        missing = [n for n in names if n not in vocabulary]
        if missing:
            raise PnpOvssError(f"class {missing[0]!r} is not in the given vocabulary; pass the candidates the "
                               "result was made from")
        class_id = [vocabulary.index(n) for n in names]
    masks = np.stack([m for _, _, m in found]) if found else np.zeros((0, h, w), dtype=bool)
    scores = presence_scores(result)
    confidence = np.array([scores[n] for n in names], dtype=np.float32) if scores else None
    return sv.Detections(xyxy=sv.mask_to_xyxy(masks).astype(np.float32) if found else np.zeros((0, 4), np.float32),
                         mask=masks, confidence=confidence, class_id=np.array(class_id, dtype=int),
                         data={"class_name": np.array(names, dtype=str)})


class CocoWriter:
    """A COCO annotation file built image by image: ``categories`` (ids 1..N in the given order)
    are the candidates or the vocabulary; :meth:`add` one label map per image, then :meth:`write`."""

    def __init__(self, categories: Sequence[str]) -> None:
        self.mask = require("pycocotools.mask", "COCO export")
        self.categories = list(categories)
        self.category_id = {name: i + 1 for i, name in enumerate(self.categories)}
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def add(self, labels: np.ndarray, classes: Sequence[str], background: bool, file_name: str,
            scores: Mapping[str, float] | None = None, image_id: int | None = None) -> int:
        """One image: its label map indexing ``classes`` ([background] + found classes when
        ``background``), its file name and each class's presence score. Returns its image id."""
        h, w = labels.shape
        image_id = len(self.images) + 1 if image_id is None else int(image_id)
        self.images.append({"id": image_id, "file_name": file_name, "width": int(w), "height": int(h)})
        for _, name, m in class_masks(labels, classes, background):
            if name not in self.category_id:
                raise PnpOvssError(f"{file_name}: class {name!r} is not one of the categories "
                                   f"({', '.join(self.categories)})")
            rle = self.mask.encode(np.asfortranarray(m.astype(np.uint8)))
            ann = {"id": len(self.annotations) + 1, "image_id": image_id, "category_id": self.category_id[name],
                   "segmentation": {"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")},
                   "area": int(self.mask.area(rle)), "bbox": [float(v) for v in self.mask.toBbox(rle)],
                   "iscrowd": 0}
            if scores and name in scores:
                ann["score"] = round(float(scores[name]), 6)
            self.annotations.append(ann)
        return image_id

    def add_result(self, result: SegmentationResult, file_name: str, image_id: int | None = None) -> int:
        return self.add(result.labels, result.classes, result.config.background, file_name,
                        presence_scores(result), image_id)

    def to_json(self) -> dict[str, Any]:
        return {"info": {"description": "pnpovss segmentation"},
                "images": sorted(self.images, key=lambda im: im["id"]), "annotations": self.annotations,
                "categories": [{"id": i, "name": n, "supercategory": n} for n, i in self.category_id.items()]}

    def write(self, path: str | Path) -> None:
        """The whole file at once (temporary file, then rename)."""
        atomic_write_text(Path(path), json.dumps(self.to_json()) + "\n")


def coco_from_outputs(out: Path, images: Sequence[tuple[int, Path]], categories: Sequence[str]) -> CocoWriter:
    """The COCO file of a ``segment`` run, read back from its per-image files in ``out``:
    ``images`` are (image id, input path) of the images finished with this run's settings. Built
    from the files rather than from results in memory, so a resumed run, worker processes and
    torchrun shards all give the same, complete file."""
    from .outputs import output_files

    writer = CocoWriter(categories)
    for image_id, path in images:
        files = output_files(out, path.stem)
        meta = json.loads(files["json"].read_text())
        with Image.open(files["labels"]) as img:
            labels = np.asarray(img).astype(np.int64)
        scores = {c: v["score"] for c, v in (meta.get("presence") or {}).items()}
        writer.add(labels, meta["classes"], bool(meta["config"]["background"]), path.name, scores, image_id)
    return writer


__all__ = ["CocoWriter", "EXTRA", "class_masks", "coco_from_outputs", "require", "to_detections"]
