"""Evaluation datasets: one reader per directory layout, a registry, the toy world.

``DATASETS`` maps a ``--dataset`` name to a builder taking ``root`` (ignored by the toy world),
``seed``, ``images`` and ``size`` keywords; :func:`load_dataset` is the one entry point the CLI,
``evaluate`` and ``search`` use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import PnpOvssError
from .base import (CLASS_NAME_TABLES, CLASSNAMES_DIR, DEFAULT_TABLE, IGNORE_INDEX, SegDataset, SegSample,
                   read_classnames, subset_indices)
from .mmseg import ADE20K, COCOObject, COCOStuff, Cityscapes, FolderDataset, PascalContext, PascalVOC
from .toyworld import DEFAULT_IMAGES, ToyWorld


def _toy(world: str) -> Callable[..., SegDataset]:
    def build(root: Any = None, seed: int = 0, images: int | None = None, size: int | None = None,
              class_names: str | None = None) -> SegDataset:
        if class_names not in (None, DEFAULT_TABLE):
            raise PnpOvssError(f"--class-names {class_names}: the toy world has only its own shape names")
        return ToyWorld(seed=seed, n=images or DEFAULT_IMAGES, size=size, world_name=world)

    return build


def _folder(factory: Callable[[Any, str | None], FolderDataset]) -> Callable[..., SegDataset]:
    def build(root: str | Path | None = None, class_names: str | None = None, **_: Any) -> SegDataset:
        return factory(root, class_names)

    return build


DATASETS: dict[str, Callable[..., SegDataset]] = {
    "voc21": _folder(lambda r, t: PascalVOC(r, background=True, class_names=t)),
    "voc20": _folder(lambda r, t: PascalVOC(r, background=False, class_names=t)),
    "context59": _folder(lambda r, t: PascalContext(r, background=False, class_names=t)),
    "context60": _folder(lambda r, t: PascalContext(r, background=True, class_names=t)),
    "coco-object": _folder(COCOObject),
    "coco-stuff": _folder(COCOStuff),
    "ade20k": _folder(ADE20K),
    "cityscapes": _folder(Cityscapes),
    "toyworld": _toy("toyworld"),
    "toyworld-shapes": _toy("toyworld-shapes"),
}

DATASET_ALIASES: dict[str, str] = {"voc": "voc21", "context": "context59"}
"""Other names of registry entries: ``voc`` = ``voc21`` and ``context`` = ``context59`` (the usual
meaning in OVSS papers)."""


def dataset_names() -> list[str]:
    """Every name ``--dataset`` and ``--vocab`` accept: the registry's and its aliases."""
    return [*DATASET_ALIASES, *DATASETS]


def canonical_dataset(name: str) -> str:
    """A dataset name or alias (any case) -> its registry key (unknown names are returned lower-cased)."""
    key = name.lower()
    return DATASET_ALIASES.get(key, key)


VOCABULARY_FILES: dict[str, str] = {
    "voc21": "voc.txt", "voc20": "voc.txt", "context59": "context.txt", "context60": "context.txt",
    "coco-object": "coco_object.txt", "coco-stuff": "coco_stuff.txt", "ade20k": "ade20k.txt",
    "cityscapes": "cityscapes.txt",
}
"""The class-name file of each folder dataset (the toy worlds' vocabulary is their shapes)."""


def load_vocabulary(spec: str | Path) -> list[str]:
    """``--vocab``: a dataset name or a class-name file (one class per line, optional synonyms after
    commas of which the first is used) -> caption names. A ``background`` line is skipped: the
    pipeline adds background itself."""
    key = canonical_dataset(str(spec))
    if key in ("toyworld", "toyworld-shapes"):
        from ..toyworld.world import SHAPES

        return list(SHAPES)
    if key in VOCABULARY_FILES:
        path = CLASSNAMES_DIR / VOCABULARY_FILES[key]
    elif Path(spec).is_file():
        path = Path(spec)
    else:
        raise PnpOvssError(f"--vocab {str(spec)!r} is neither a dataset name ({', '.join(dataset_names())}) nor an "
                           "existing class-name file (one class per line)")
    names = [syn[0] for syn in read_classnames(path) if syn[0].lower() != "background"]
    if not names:
        raise PnpOvssError(f"vocabulary file {path} holds no class names; write one class per line")
    return names


def load_dataset(name: str, root: str | Path | None = None, *, seed: int = 0, images: int | None = None,
                 size: int | None = None, class_names: str | None = None) -> SegDataset:
    """Build dataset ``name``; a missing/malformed root raises a one-line error naming the layout.
    ``class_names``: which table of class names (:data:`CLASS_NAME_TABLES`; default ours)."""
    try:
        builder = DATASETS[canonical_dataset(name)]
    except KeyError:
        raise PnpOvssError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}") from None
    return builder(root, seed=seed, images=images, size=size, class_names=class_names)


__all__ = [
    "ADE20K", "CLASS_NAME_TABLES", "Cityscapes", "COCOObject", "COCOStuff", "DATASETS", "DATASET_ALIASES", "FolderDataset", "IGNORE_INDEX", "PascalContext",
    "PascalVOC", "SegDataset", "SegSample", "ToyWorld", "load_dataset", "load_vocabulary", "read_classnames",
    "subset_indices", "canonical_dataset", "dataset_names",
]
