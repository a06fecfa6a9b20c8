"""The peers' benchmark table in one run (``pnpovss eval --suite standard --root DATA``): one model
on the eight datasets that the training-free OVSS papers (SCLIP, NACLIP, ProxyCLIP, Trident,
CorrCLIP, ...) report, in their column order, from one data root laid out as mmsegmentation
expects (``DATA/VOCdevkit/VOC2012``, ``DATA/VOCdevkit/VOC2010``, ``DATA/coco_stuff164k``,
``DATA/cityscapes``, ``DATA/ade/ADEChallengeData2016``).

Files in the output directory: ``<dataset>.json`` for each dataset (what ``eval --json`` writes,
plus the data root and the number of images scored) and ``<suite>.json`` with the table. Resume:
a dataset whose JSON is there from the same settings (dataset, data root, images, labels
protocol, class names, model, configuration) is not evaluated again, and the one that was
interrupted continues from its saved progress (:func:`pnpovss.evaluate.evaluate` with
``resume``). A dataset whose folder is missing is reported with its reader's one-line reason and
left out of the table's mean (``strict``: an error before the model loads).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .datasets import load_dataset, subset_indices
from .datasets.base import SegDataset
from .errors import PnpOvssError
from .fileio import atomic_write_text

SUITES: dict[str, tuple[str, ...]] = {
    "standard": ("voc21", "context60", "coco-object", "voc20", "context59", "coco-stuff", "cityscapes", "ade20k"),
}
"""Suite name -> dataset names in the column order of the peers' tables."""

TITLES = {"voc21": "VOC21", "context60": "Context60", "coco-object": "COCO-Object", "voc20": "VOC20",
          "context59": "Context59", "coco-stuff": "COCO-Stuff", "cityscapes": "Cityscapes", "ade20k": "ADE20K"}
"""Column headings as the peers' tables print them."""


def find_datasets(suite: str, root: str | Path, *, class_names: str | None = None,
                  strict: bool = False) -> tuple[dict[str, SegDataset], dict[str, str]]:
    """The suite's datasets under ``root`` (in suite order) and the missing ones with the reason
    (``strict``: the first missing one is an error)."""
    if suite not in SUITES:
        raise PnpOvssError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    found: dict[str, SegDataset] = {}
    missing: dict[str, str] = {}
    for name in SUITES[suite]:
        try:
            found[name] = load_dataset(name, root, class_names=class_names)
        except PnpOvssError as exc:
            if strict:
                raise PnpOvssError(f"--strict: {name}: {exc}") from None
            missing[name] = str(exc)
    return found, missing


@dataclass
class SuiteResult:
    """mIoU (percent) of each dataset of a suite, None where the dataset is missing."""

    suite: str
    miou: dict[str, float | None]
    missing: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def present(self) -> list[str]:
        return [n for n, v in self.miou.items() if v is not None]

    @property
    def mean(self) -> float | None:
        """Mean over the datasets evaluated (a mean over fewer than all is marked in the table)."""
        return float(np.mean([self.miou[n] for n in self.present])) if self.present else None

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "datasets": list(self.miou), "miou": self.miou, "mean": self.mean,
                "mean_over": len(self.present), "missing": self.missing,
                "files": {n: f"{n}.json" for n in self.present}, **self.meta}

    def table(self) -> str:
        """A Markdown table in the peers' column order, mIoU to one decimal, ``-`` where missing;
        under it a note when the mean covers fewer than all datasets."""
        heads = [TITLES.get(n, n) for n in self.miou] + ["Mean"]
        cells = ["-" if v is None else f"{v:.1f}" for v in self.miou.values()]
        cells.append("-" if self.mean is None else f"{self.mean:.1f}" + ("*" if self.missing else ""))
        widths = [max(len(h), len(c)) for h, c in zip(heads, cells)]
        rows = ["| " + " | ".join(h.rjust(w) for h, w in zip(heads, widths)) + " |",
                "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|",
                "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"]
        if self.missing:
            rows.append(f"* mean over {len(self.present)} of {len(self.miou)} datasets "
                        f"(missing: {', '.join(self.missing)}); not comparable with a mean over all")
        return "\n".join(rows)


def dataset_key(meta: dict[str, Any], dataset: SegDataset, indices: Sequence[int]) -> dict[str, Any]:
    """What a finished dataset's JSON must hold to be reused: the run's settings (without the
    process count: results equal under torchrun), its data root and how many images it scored."""
    key = {k: v for k, v in meta.items() if k != "processes"}
    return json.loads(json.dumps({**key, "root": str(dataset.root), "scored_images": len(indices)}))


def _finished(path: Path, key: dict[str, Any]) -> float | None:
    """The mIoU of ``path`` when it is a finished result with ``key``; else None."""
    try:
        saved = json.loads(path.read_text())
        if isinstance(saved, dict) and all(saved.get(k) == v for k, v in key.items()):
            return float(saved["miou"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def run_suite(segmenter: Any, suite: str, datasets: dict[str, SegDataset], missing: dict[str, str], out: Path, *,
              images: int | None = None, labels: str | None = None, dist: Any = None, batch_size: int | None = 1,
              ran: dict[str, str] | None = None, echo: Callable[[str], None] = print) -> SuiteResult:
    """Evaluate ``datasets`` (from :func:`find_datasets`) one after the other with one segmenter,
    skipping those finished earlier with the same settings, and write the files (main process)."""
    from .backbones import source_label
    from .distributed import DistContext
    from .evaluate import evaluate, label_protocol, run_meta

    dist = dist or DistContext()
    labels = label_protocol(labels, False, segmenter.config.eval_labels)  # None: the configuration's protocol
    out = Path(out)
    miou: dict[str, float | None] = {name: None for name in SUITES[suite]}
    for name, reason in missing.items():
        if dist.is_main:
            echo(f"{name}: missing, left out ({reason})")
    for name, ds in datasets.items():
        indices = subset_indices(len(ds), images)
        key = dataset_key(run_meta(segmenter, ds, labels), ds, indices)
        path = out / f"{name}.json"
        before = dist.gather(_finished(path, key) if dist.is_main else None)[0]  # one decision for all ranks
        if before is not None:
            miou[name] = before
            if dist.is_main:
                echo(f"{name}: already evaluated with these settings ({path})")
            continue
        start = time.perf_counter()
        result = evaluate(segmenter, ds, indices, labels=labels, dist=dist, resume=True, batch_size=batch_size)
        result.meta.update(ran or {})
        miou[name] = float(result.summary["miou"])
        if dist.is_main:
            atomic_write_text(path, json.dumps({**result.to_json(), **{k: key[k] for k in ("root", "scored_images")}},
                                               indent=2) + "\n")
            echo(f"{name}: mIoU {miou[name]:.2f} ({len(indices)} images, {time.perf_counter() - start:.1f} s)")
        if result.progress_file is not None:  # the result is out: the saved progress is spent
            result.progress_file.unlink(missing_ok=True)
    meta = {"model": source_label(segmenter.backbone.source), "labels": labels, "images_per_dataset": images,
            **(ran or {})}
    res = SuiteResult(suite, miou, dict(missing), meta)
    if dist.is_main:
        atomic_write_text(out / f"{suite}.json", json.dumps(res.to_json(), indent=2) + "\n")
    return res


__all__ = ["SUITES", "SuiteResult", "TITLES", "find_datasets", "run_suite"]
