"""What every dataset reader provides: images, label maps in dataset class ids, class names.

Label maps use the mmsegmentation convention: ``0 .. num_classes-1`` are classes, ``255`` is
ignored (never scored, in particular *not* counted as background). Datasets whose class 0 is a
real "background" class (VOC-21, Context-60, COCO-Object, the toy world) say so with
``has_background``; the pipeline then adds its background channel (label 0) and the remaining
pipeline labels map to the foreground class ids of the caption.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import PnpOvssError
from ..metrics import IGNORE_INDEX

CLASSNAMES_DIR = Path(__file__).resolve().parent / "classnames"

CLASS_NAME_TABLES: dict[str, str | None] = {"pnpovss": None, "sclip": "sclip"}
"""Class-name tables a folder dataset can read its names from: ``pnpovss`` (ours, the default:
``classnames/*.txt``) or a peer's, one file per dataset name in ``classnames/<dir>/``. ``sclip``:
SCLIP's ``configs/cls_*.txt`` (wangf3014/SCLIP at b56bd30; NACLIP's configs name files of the same
names), copied unchanged but for a trailing newline: first name in the caption, the rest synonyms."""
DEFAULT_TABLE = "pnpovss"


def table_file(table: str, dataset: str) -> Path | None:
    """A peer table's class-name file for ``dataset`` (None for ours); unknown tables are an error."""
    if table not in CLASS_NAME_TABLES:
        raise PnpOvssError(f"unknown class-name table {table!r}; known: {', '.join(CLASS_NAME_TABLES)}")
    folder = CLASS_NAME_TABLES[table]
    if folder is None:
        return None
    path = CLASSNAMES_DIR / folder / f"{dataset}.txt"
    if not path.is_file():
        raise PnpOvssError(f"class-name table {table!r} has no names for {dataset}; use --class-names {DEFAULT_TABLE}")
    return path


@dataclass
class SegSample:
    """One evaluation image and its ground truth."""

    name: str
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    label: np.ndarray
    """(H, W) int64 dataset class ids; ``IGNORE_INDEX`` where unlabelled."""


@functools.lru_cache(maxsize=None)
def reference_names(table: str) -> dict[str, dict[str, str]]:
    """Per class-name file stem (``voc``, ``ade20k``...), this package's caption name -> the name
    the reference wrote, for ``table`` (``reference-cvpr``: commit 687a4e5's scripts;
    ``reference-head``: e439962's)."""
    data = json.loads((CLASSNAMES_DIR / "reference_names.json").read_text(encoding="utf-8"))
    return data[table]


def read_classnames(path: str | Path) -> list[list[str]]:
    """One class per line, optional comma-separated synonyms; the first name is the one put in
    captions, the others only enrich the CLIP text embedding of the reward."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PnpOvssError(f"class-name file {p} is not readable ({exc.__class__.__name__}); "
                           "write it as UTF-8 text, one class per line") from None
    classes = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        names = [" ".join(n.split()) for n in line.split(",")]
        if any(not n for n in names):
            raise PnpOvssError(f"{p}:{number}: empty class name; write 'name' or 'name, synonym, ...'")
        classes.append(names)
    return classes


class SegDataset:
    """Base class: an indexable list of :class:`SegSample` with class metadata.

    Subclasses set ``name``, ``synonyms`` (one list of names per class id, first = caption name)
    and ``has_background`` and implement ``__len__`` / ``load``.
    """

    name: str = ""
    synonyms: list[list[str]]
    has_background: bool = False
    ignore_index: int = IGNORE_INDEX
    clip_template: str | None = None
    """Prompt the reward's CLIP should use for this data (None: the caller's default)."""

    @property
    def classes(self) -> list[str]:
        """Caption name of every class id."""
        return [names[0] for names in self.synonyms]

    def caption_names(self, table: str = "package") -> list[str]:
        """Caption name of every class id under a class-name table (``PipelineConfig.class_names``):
        ``package`` = :attr:`classes`; a reference table (``classnames/reference_names.json``,
        the names the reference's scripts wrote, keyed by this package's names) where it covers this
        dataset, else :attr:`classes` (the reference never evaluated the toy world)."""
        if table == "package":
            return self.classes
        stem = Path(getattr(self, "classnames_file", "")).stem
        names = reference_names(table).get(stem)
        if names is None:
            return self.classes
        return [names.get(c, c) for c in self.classes]  # only "background" is not in a table

    @property
    def num_classes(self) -> int:
        return len(self.synonyms)

    @property
    def foreground_ids(self) -> list[int]:
        """Class ids the pipeline is asked about (everything but the background class)."""
        return list(range(1 if self.has_background else 0, self.num_classes))

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, index: int) -> SegSample:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> SegSample:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self.load(index % len(self))

    def __iter__(self) -> Iterator[SegSample]:
        for i in range(len(self)):
            yield self.load(i)

    def image_labels(self, label: np.ndarray) -> list[int]:
        """Image-level labels: the foreground class ids present in a label map (sorted)."""
        present = np.unique(label)
        fg = set(self.foreground_ids)
        return [int(c) for c in present if int(c) in fg]

    def sample_id(self, index: int) -> str:
        """A stable name of image ``index`` (its id in the split file; else the index): eval's
        resume key covers the exact list, so a changed split file never reuses saved progress."""
        ids = getattr(self, "ids", None)
        return str(ids[index]) if ids is not None else str(index)

    def pipeline_settings(self, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Pipeline overrides ``settings`` with ``background`` set by the dataset: the background
        channel is on exactly when class 0 is background. The one place of this rule (eval, tune and
        their CLI); an explicit different ``background`` is refused with one line."""
        out = dict(settings or {})
        if out.get("background", self.has_background) != self.has_background:
            raise PnpOvssError(f"background: dataset {self.name} {'has' if self.has_background else 'has no'} "
                               "background class; the pipeline's background follows the dataset")
        out["background"] = self.has_background
        return out

    def describe(self) -> dict:
        out = {"dataset": self.name, "images": len(self), "classes": self.num_classes,
               "background": self.has_background}
        table = getattr(self, "class_names", DEFAULT_TABLE)
        return out if table == DEFAULT_TABLE else {**out, "class_names": table}


def subset_indices(n_total: int, images: int | None) -> list[int]:
    """The first ``images`` indices (all when None): tune and eval use the same, sorted, subset."""
    if images is not None and images < 1:
        raise PnpOvssError(f"--images must be >= 1, got {images}")
    return list(range(n_total if images is None else min(images, n_total)))

