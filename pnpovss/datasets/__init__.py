"""Evaluation datasets: one reader per directory layout, a registry, the toy world.

``DATASETS`` maps a ``--dataset`` name to a builder taking ``root`` (ignored by the toy world),
``seed``, ``images`` and ``size`` keywords; :func:`load_dataset` is the one entry point the CLI,
``evaluate`` and ``search`` use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import PnpOvssError
from .base import IGNORE_INDEX, SegDataset, SegSample, read_classnames, subset_indices
from .mmseg import ADE20K, COCOObject, COCOStuff, FolderDataset, PascalContext, PascalVOC
from .toyworld import DEFAULT_IMAGES, ToyWorld


def _toyworld(root: Any = None, seed: int = 0, images: int | None = None, size: int | None = None) -> SegDataset:
    return ToyWorld(seed=seed, n=images or DEFAULT_IMAGES, size=size)


def _folder(factory: Callable[[Any], FolderDataset]) -> Callable[..., SegDataset]:
    def build(root: str | Path | None = None, **_: Any) -> SegDataset:
        return factory(root)

    return build


DATASETS: dict[str, Callable[..., SegDataset]] = {
    "voc": _folder(lambda r: PascalVOC(r, background=True)),
    "voc21": _folder(lambda r: PascalVOC(r, background=True)),
    "voc20": _folder(lambda r: PascalVOC(r, background=False)),
    "context": _folder(lambda r: PascalContext(r, background=False)),
    "context59": _folder(lambda r: PascalContext(r, background=False)),
    "context60": _folder(lambda r: PascalContext(r, background=True)),
    "coco-object": _folder(COCOObject),
    "coco-stuff": _folder(COCOStuff),
    "ade20k": _folder(ADE20K),
    "toyworld": _toyworld,
}
"""``voc`` = ``voc21`` and ``context`` = ``context59`` (the usual meaning in OVSS papers)."""


def load_dataset(name: str, root: str | Path | None = None, *, seed: int = 0, images: int | None = None,
                 size: int | None = None) -> SegDataset:
    """Build dataset ``name``; a missing/malformed root raises a one-line error naming the layout."""
    try:
        builder = DATASETS[name.lower()]
    except KeyError:
        raise PnpOvssError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
    return builder(root, seed=seed, images=images, size=size)


__all__ = [
    "ADE20K", "COCOObject", "COCOStuff", "DATASETS", "FolderDataset", "IGNORE_INDEX", "PascalContext",
    "PascalVOC", "SegDataset", "SegSample", "ToyWorld", "load_dataset", "read_classnames", "subset_indices",
]
