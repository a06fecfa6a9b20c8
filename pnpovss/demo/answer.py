"""One answer of the demo page (:class:`DemoResult`): the segmentation, how it was obtained, and
the views the page shows of it (display-size masks and heat maps, the table, the notes)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..postprocess import resize_labels, working_size
from ..result import SegmentationResult
from ..visualize import palette

HEATMAP_MAX_SIDE = 512
"""Long side of the per-label score maps: the page shows them as a gallery of thumbnails, and
drawing and encoding one 1024 px map per label took about half a second each."""


@dataclass
class DemoResult:
    """One answer of the page: the segmentation plus how it was obtained."""

    result: SegmentationResult
    name: str
    """File name of the upload: the record's ``image``; its stem names the downloads, as in the CLI."""
    maps_cached: bool
    """True when the grid maps came from the cache (no GradCAM / DropOut run)."""
    map_runs: int
    """GradCAM + DropOut runs this engine has done so far."""
    answer: int
    """Number of this answer among all the engine gave (tells a new answer from an equal-looking one)."""
    seconds: float
    files: list[Path]
    """NAME.labels.png and NAME.json, as ``pnpovss segment`` writes them."""
    record: dict[str, Any]
    """The content of NAME.json."""

    def colours(self) -> dict[str, str]:
        """Label name -> hex colour of the overlay palette."""
        cols = palette(max(len(self.result.classes), 1))
        return {n: "#%02x%02x%02x" % tuple(int(v) for v in cols[i]) for i, n in enumerate(self.result.classes)}

    display: SegmentationResult | None = None
    """The result at display size (long side at most :data:`DISPLAY_MAX_SIDE`): what the page
    shows; None: :attr:`result` itself is small enough."""

    def shown(self) -> SegmentationResult:
        """What the page draws: :attr:`display`, else the result itself."""
        return self.display if self.display is not None else self.result

    def masks(self) -> list[tuple[np.ndarray, str]]:
        """(h, w) 0/1 mask and name of every label but background (``gr.AnnotatedImage`` input),
        at display size."""
        res = self.shown()
        first = 1 if res.config.background else 0
        return [((res.labels == i).astype(np.float32), n) for i, n in enumerate(res.classes) if i >= first]

    def heatmaps(self) -> list[tuple[Any, str]]:
        """Each label's score map over the picture, at most :data:`HEATMAP_MAX_SIDE` px."""
        res = self.shown()
        size = working_size(res.labels.shape, HEATMAP_MAX_SIDE)
        if size != res.labels.shape:
            small = Image.fromarray(np.ascontiguousarray(res.image)).resize(size[::-1], Image.Resampling.BOX)
            res = dataclasses.replace(res, image=np.asarray(small), labels=resize_labels(res.labels, size))
        return [(res.heatmap(n), n) for n in self.result.classes]

    def presence(self) -> dict[str, dict[str, Any]]:
        """Class -> {"score", "kept"} when the result carries a presence decision (an object with
        ``to_json()`` or such a dict), else empty."""
        found = getattr(self.result, "presence", None)
        if found is None:
            return {}
        return found.to_json() if hasattr(found, "to_json") else dict(found)

    def notes(self) -> list[str]:
        """The presence stage's notes: why the kept classes differ from what the threshold alone
        would keep (CLIP's veto, caption capacity, nothing present) and what the recurrent check removed."""
        found = getattr(self.result, "presence", None)
        if found is None or not hasattr(found, "notes"):
            return []
        dropped = [f"the recurrent check removed {', '.join(names)}" for names in found.dropped_by_check]
        return [*found.notes, *dropped]

    def table(self) -> list[list[Any]]:
        """Rows: label, pixel percent (and presence score / kept once results carry ``presence``)."""
        presence = self.presence()
        fractions = self.record.get("fractions") or self.result.fractions()  # counted once, for the record
        rows = []
        for n in [*fractions, *(c for c in presence if c not in fractions)]:  # dropped classes: 0 pixels
            row: list[Any] = [n, round(100.0 * fractions.get(n, 0.0), 2)]
            if presence:
                p = presence.get(n)
                row += [None, None] if p is None else [round(float(p["score"]), 4), bool(p["kept"])]
            rows.append(row)
        return rows

    def table_headers(self) -> list[str]:
        extra = ["presence score", "kept"] if self.presence() else []
        return ["label", "pixels %"] + extra

    def status(self) -> str:
        how = "reused from the cache" if self.maps_cached else "computed"
        return (f"GradCAM + DropOut maps {how}; server time {self.seconds:.2f} s "
                f"(answer {self.answer}; GradCAM runs so far: {self.map_runs})")


__all__ = ["DemoResult"]
