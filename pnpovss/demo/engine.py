"""What the demo page computes, without any Gradio: page values -> ``Segmenter`` call -> outputs.

The GradCAM + Salience DropOut grid maps are the slow part; blur, threshold and CRF take a small
fraction of that. So the engine keeps the last few full results keyed by (image, classes, every
setting that is not post-processing) and answers a post-processing-only change by re-running
:func:`pnpovss.postprocess.postprocess` on the cached grid maps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..config import PipelineConfig
from ..fields import FIELDS, fields_for_stage
from ..errors import ConfigError, ImageLoadError, PnpOvssError
from ..fileio import ImageInput, atomic_write_bytes, atomic_write_text, load_image
from ..pipeline import Segmenter, parse_classes
from ..result import PendingResult, SegmentationResult
from ..visualize import label_image, png_bytes
from .answer import DemoResult
from ..postprocess import resize_labels, working_copy, working_size

POSTPROCESS_FIELDS = frozenset(fields_for_stage("postprocess"))
"""Config fields read only by post-processing (stage ``postprocess`` in :mod:`pnpovss.fields`, not
GradCAM / DropOut): changing them reuses the cached grid maps. Any other field, and any non-config
keyword, is part of the cache key (``background`` is stage ``classes``: the presence stage reads it)."""

CONFIG_FIELDS = frozenset(f.name for f in fields(PipelineConfig))

DISPLAY_MAX_SIDE = 1024
"""Long side of the pictures the page sends to the browser. A browser shows a few megapixels at
most, while a photo's full-size overlay, masks and heat maps cost seconds to encode and send (an
8000x8000 upload: tens of seconds per answer); the downloads stay at full size."""

PAGE_WORKING_SIDE = 512
"""The page's default post-processing working size (``postprocess_max_side``; ``segment``'s is
1024): blur and dense CRF of an image above it run on a copy of this long side, a quarter of the
pixels of 1024, so a slider change on a photo answers in about a second of CRF instead of several
(the page's control changes it; the answer's JSON records it, so ``segment --set
postprocess_max_side=512`` writes the same files). On toy scenes upscaled to 1024 px the 512 px
working size scored within 0.1 mIoU points of 1024 at a quarter of the post-processing time
(``bench/resolution.py --variants working_512``, development seeds 0 and 7)."""

PICTURE_FORMAT = "jpeg"
"""How the page's pictures travel to the browser (Gradio's default, WebP, took ~0.4 s to encode a
1024 px picture on this machine, JPEG ~0.02 s; masks stay PNG, Gradio's choice)."""


def parse_head_text(text: str | int | None) -> int | tuple[int, ...] | None:
    """The page's head box: ``"9"`` -> 9, ``"3,9"`` -> (3, 9), ``"mean"``/``"all"`` -> None (all heads)."""
    if text is None or isinstance(text, int):
        return text
    try:
        return FIELDS["head"].parse("head", text)  # the field table's reading of --head / --set head=
    except ConfigError:
        raise PnpOvssError(f"head takes an index, a comma list of indices or 'mean', got {text!r}") from None


def segment_kwargs(layer: float, head: str, drop_iters: float, drop_k: float, halving: bool,
                   threshold: float, blur_sigma: float, crf: bool, presence: bool = True,
                   presence_threshold: float = PipelineConfig.presence_threshold,
                   working_side: float = PAGE_WORKING_SIDE) -> dict[str, Any]:
    """The page's controls -> ``Segmenter.segment`` keyword arguments: the one place they meet the
    pipeline (more controls, e.g. a presence filter, add their keywords here)."""
    def whole(name: str, value: float) -> int:
        if value is None or float(value) != int(value):
            raise PnpOvssError(f"{name} must be a whole number, got {value!r}")
        return int(value)

    return {
        "layer": whole("layer", layer),
        "head": parse_head_text(head),
        "drop_iters": whole("DropOut passes", drop_iters),
        "drop_k": whole("patches dropped per pass", drop_k),
        "halving": bool(halving),
        "threshold": float(threshold),
        "blur_sigma": float(blur_sigma),
        "crf": bool(crf),
        "keep_all": not presence,
        "presence_threshold": float(presence_threshold),
        "postprocess_max_side": whole("working size", working_side),
    }


class DemoEngine:
    """One :class:`Segmenter` shared by every visitor; calls are serialised by a lock (the
    segmenter caches one image encoding and a model must not run twice at once). Its files live
    in one temporary folder, removed by :meth:`close` (or leaving a ``with`` block)."""

    def __init__(self, segmenter: Segmenter, model: str, *, cache_size: int = 8, keep_outputs: int = 64) -> None:
        self.seg = segmenter
        self.model = model
        self.map_runs = 0
        self._maps: OrderedDict[tuple, PendingResult] = OrderedDict()
        self._cache_size = cache_size
        self._keep_outputs = keep_outputs
        self._lock = threading.Lock()
        self._calls = 0
        self._shown_image: tuple[Any, Any, Any] = (None, None, None)
        self._upload: tuple[Any, Any, Any] = (None, None, None)
        self._working_image: tuple[Any, Any, Any] = (None, None, None)
        self.out_dir = Path(tempfile.mkdtemp(prefix="pnpovss-demo-"))

    def close(self) -> None:
        """Remove the answers' folder (every download and the page's examples live in it)."""
        shutil.rmtree(self.out_dir, ignore_errors=True)

    def __enter__(self) -> "DemoEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        b = self.seg.backbone
        return (f"{self.model} ({type(b).__name__}, {b.num_layers} cross-attention layers x {b.num_heads} heads, "
                f"{self.seg.image_size()} px)")

    def run(self, image: ImageInput, classes: str, name: str = "image.png",
            progress: Callable[[str], None] | None = None, **kwargs: Any) -> DemoResult:
        """Segment ``image``; ``kwargs`` are ``Segmenter.segment`` keywords (see :func:`segment_kwargs`).
        Bad input raises :class:`PnpOvssError` with the CLI's one-line message."""
        start = time.perf_counter()
        rgb, digest = self._decoded(image)
        names = parse_classes(classes)
        config = self.seg.config.replace(**{k: v for k, v in kwargs.items() if k in CONFIG_FIELDS})
        self.seg.validate(config)
        key = self._key(digest, names, config, kwargs)
        with self._lock:
            pending = self._maps.get(key)
            cached = pending is not None
            if cached:
                self._maps.move_to_end(key)
                # restyled: the per-caption configuration of a fresh run (background_mode), new post-processing
                pending = pending.restyled(config)
            else:
                if progress is not None:
                    progress(f"GradCAM + Salience DropOut ({config.drop_iters} pass(es))")
                pending = self.seg.segment_pending(rgb, names, **kwargs)
                self.map_runs += 1
                # keep the maps, not the full-size score maps (rebuilt from the maps)
                self._maps[key] = dataclasses.replace(pending, result=None)
                while len(self._maps) > self._cache_size:
                    self._maps.popitem(last=False)
            # the working copy is made once per upload: the first answer's serves every later one
            working = self._working(pending.image, config.postprocess_max_side) if pending.present else None
            res = pending.finish(working)
            files, record = self._write(res, name, names, bool(kwargs.get("keep_all", False)))
            return DemoResult(res, name, cached, self.map_runs, self._calls, time.perf_counter() - start, files,
                              record, self._display(res))

    def _working(self, image: np.ndarray, max_side: int | None) -> np.ndarray:
        """The post-processing copy of ``image`` (:func:`~pnpovss.postprocess.working_copy`), made
        once per upload and size: a control change then costs the CRF, not a resize of the photo."""
        key = (id(image), max_side)
        if self._working_image[0] != key:
            self._working_image = (key, working_copy(image, max_side), image)  # holds image: its id stays its own
        return self._working_image[1]

    def _display(self, res: SegmentationResult) -> SegmentationResult | None:
        """``res`` with the image and labels at display size (None when it is small already); the
        image is scaled once per upload (area resampling), the labels by nearest neighbour."""
        size = working_size(res.labels.shape, DISPLAY_MAX_SIDE)
        if size == res.labels.shape:
            return None
        key = (id(res.image), size)
        if self._shown_image[0] != key:
            small = Image.fromarray(np.ascontiguousarray(res.image)).resize(size[::-1], Image.Resampling.BOX)
            self._shown_image = (key, np.asarray(small), res.image)  # keeps the image alive: its id stays its own
        return dataclasses.replace(res, image=self._shown_image[1], labels=resize_labels(res.labels, size))

    def _decoded(self, image: ImageInput) -> tuple[np.ndarray, str]:
        """The upload's pixels and their digest. The last uploaded file's are kept (keyed by path,
        size and modification time): every control change sends the same file again, and
        decoding and hashing a 64-megapixel photo took ~2 s of each answer."""
        key = None
        if isinstance(image, (str, Path)):
            try:
                st = os.stat(image)
                key = (str(image), st.st_size, st.st_mtime_ns)
            except OSError:
                pass  # _load says what is wrong
        last = self._upload
        if key is not None and last[0] == key:
            return last[1], last[2]
        rgb = _load(image)
        digest = hashlib.sha1(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
        if key is not None:
            self._upload = (key, rgb, digest)
        return rgb, digest

    @staticmethod
    def _key(digest: str, names: list[str], config: PipelineConfig, kwargs: dict[str, Any]) -> tuple:
        post = fields_for_stage("postprocess")  # read now, not at import: the table decides (tests/test_stages.py)
        maps = {k: v for k, v in config.to_dict().items() if k not in post}
        extra = {k: v for k, v in kwargs.items() if k not in CONFIG_FIELDS}
        return digest, tuple(names), json.dumps(maps, sort_keys=True), json.dumps(extra, sort_keys=True, default=str)

    def _write(self, res: SegmentationResult, name: str, candidates: list[str],
               keep_all: bool) -> tuple[list[Path], dict[str, Any]]:
        """NAME.labels.png and NAME.json into a fresh folder per answer (visitors never share one);
        only the newest ``keep_outputs`` folders are kept."""
        self._calls += 1
        folder = self.out_dir / f"{self._calls:06d}"
        record = res.to_json(image=name, model=self.model, candidates=candidates, keep_all=keep_all)
        stem = Path(name).stem or "image"
        labels_path, json_path = folder / f"{stem}.labels.png", folder / f"{stem}.json"
        atomic_write_bytes(labels_path, png_bytes(label_image(res.labels)[0]))  # segment's very bytes
        atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
        old = self.out_dir / f"{self._calls - self._keep_outputs:06d}"
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        return [labels_path, json_path], record


def _load(image: ImageInput) -> np.ndarray:
    """Decode an upload; a message about Gradio's upload folder names only the uploaded file."""
    if image is None:
        raise PnpOvssError("no image: upload one (drag and drop, paste, or pick an example)")
    try:
        return load_image(image)
    except ImageLoadError as exc:
        if isinstance(image, (str, Path)):
            raise ImageLoadError(str(exc).replace(str(image), Path(image).name, 1)) from None
        raise


def upload_name(path: str | Path | None) -> str:
    """``/tmp/gradio/<hash>/My Photo.jpg`` -> ``My Photo.jpg`` (Gradio keeps the uploaded name)."""
    return Path(path).name if path else "image.png"
