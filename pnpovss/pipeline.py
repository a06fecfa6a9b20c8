"""The predictor users hold: :class:`Segmenter`, in the style of segment-anything's ``SamPredictor``.

It caches an image's encoding and calls the named steps of :class:`~pnpovss.steps.Pipeline`
(preprocess -> encode -> select classes -> class maps -> finish); loading and the precedence of
settings are :mod:`pnpovss.factory`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from . import factory
from .backbones import DEFAULT_MODEL, Backbone
from .backbones.base import TextBatch
from .batching import Batches
from .config import PipelineConfig
from .dropout import DropoutMaps
from .errors import PnpOvssError
from .execution import ExecutionOptions
from .fields import fields_for_stage
from .fileio import ImageInput, load_image
from .precision import Precision
from .presence import Presence, detect
from .result import BACKGROUND, PendingResult, SegmentationResult
from .steps import Pipeline, model_lock


def parse_classes(classes: str | Sequence[str]) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> cleaned names; empty or duplicate names are an error."""
    items = classes.split(",") if isinstance(classes, str) else list(classes)
    bad = [c for c in items if not isinstance(c, str)]
    if bad:
        raise PnpOvssError(f"class names must be strings, got {bad[0]!r} ({type(bad[0]).__name__})")
    names = [" ".join(c.split()) for c in items]
    if not names or any(not n for n in names):
        raise PnpOvssError("class names must be non-empty, e.g. --classes \"cat,grass\"")
    seen: dict[str, str] = {}
    for n in names:
        key = n.lower()
        if key in seen:
            raise PnpOvssError(f"class {n!r} is given twice; list each class once")
        if key == BACKGROUND:
            raise PnpOvssError("'background' is added automatically; leave it out of the class list (or use --no-background)")
        seen[key] = n
    return names


def per_image_classes(classes: str | Sequence[str] | Sequence[Sequence[str]], count: int) -> list[list[str]]:
    """The class list of each of ``count`` images: one list (``"a,b"`` or ``["a", "b"]``) is every
    image's; a list of lists is one per image (as many as images). The one reading of ``classes``
    for :meth:`Segmenter.segment_batch` and :meth:`Segmenter.segment_stream`."""
    if classes and not isinstance(classes, str) and isinstance(classes[0], (list, tuple)):
        per_image = [parse_classes(c) for c in classes]  # type: ignore[arg-type]
        if len(per_image) != count:
            raise PnpOvssError(f"got {len(per_image)} class lists for {count} images")
        return per_image
    return [parse_classes(classes)] * count  # type: ignore[arg-type]


def encoding_key(rgb: np.ndarray, size: int, precision: str, compiled: bool, config: PipelineConfig) -> str:
    """What an image's cached encoding depends on: its pixels, the resolved size and precision, the
    compiled encoder, and every field of stages ``input`` and ``encode`` (:mod:`pnpovss.fields`)."""
    stage = {f: getattr(config, f) for f in fields_for_stage("input", "encode")}
    digest = hashlib.sha1(rgb.tobytes() + str((rgb.shape, size)).encode()).hexdigest()
    return digest + precision + ("+compiled" if compiled else "") + json.dumps(stage, sort_keys=True)


class Segmenter:
    """Open-vocabulary segmentation with PnP-OVSS.

    >>> seg = Segmenter.from_pretrained("Salesforce/blip-itm-large-flickr")   # doctest: +SKIP
    >>> res = seg.segment("cat.jpg", ["cat", "grass"])                          # doctest: +SKIP
    >>> res.labels, res.classes, res.overlay()                                  # doctest: +SKIP

    The first pass's image encoding is cached per image, so segmenting the same image again with
    other classes or settings skips the vision encoder.

    Classes are *candidates* by default: :mod:`pnpovss.presence` keeps those the model finds in
    the image before segmenting (``keep_all=True`` puts every given class into the caption, as the
    paper does). CLIP's second opinion (``presence_clip_ratio``) and the recurrent presence check
    (``presence_rounds``) need a CLIP: the config's ``presence_clip_model`` (loaded on first use), or a
    :class:`pnpovss.reward.ClipScorer` passed as ``presence_clip``.

    Threads may share one instance: the network passes and the image cache are serialised by
    :func:`~pnpovss.steps.model_lock` (so concurrent calls give the single-thread results), while
    post-processing (blur, CRF) of different calls runs in parallel. Processes each load their own instance.
    """

    def __init__(self, backbone: Backbone, config: PipelineConfig | None = None, presence_clip=None) -> None:
        self.backbone = backbone
        self.pipeline = Pipeline(backbone)
        self.config = config or PipelineConfig().replace(**backbone.pipeline_defaults)
        self.presence_clip = presence_clip
        self._clip = None
        self._clip_key: tuple[str, str] | None = None
        self._cache_key: str | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.lock = model_lock(backbone)

    @classmethod
    def from_pretrained(cls, source: str = DEFAULT_MODEL, *, device: str | torch.device | None = "auto",
                        preset: str | os.PathLike[str] | None = None, presence_clip=None,
                        compile_vision: bool = False, execution: ExecutionOptions | None = None,
                        **overrides: Any) -> "Segmenter":
        """Load a backbone (hub id, local directory or ``toy``) and settle the configuration:
        defaults < the model directory's ``pnpovss_preset.json`` < ``preset`` < ``overrides``
        (:func:`pnpovss.factory.load`). ``presence_clip``: a :class:`pnpovss.reward.ClipScorer`
        for the presence stage (instead of the config's ``presence_clip_model``).
        ``device="auto"``: CUDA when available, else CPU; ``dtype=`` (a config field) sets the precision.
        ``compile_vision``: run the vision encoder through ``torch.compile``
        (:attr:`~pnpovss.backbones.base.Backbone.compile_vision`; BLIP only); ``execution``: the
        other fast paths (:class:`~pnpovss.execution.ExecutionOptions`; default: all that apply)."""
        backbone, config = factory.load(source, device=device, preset=preset, compile_vision=compile_vision,
                                        execution=execution, **overrides)
        seg = cls(backbone, config, presence_clip=presence_clip)
        seg.validate(config)
        return seg

    # ------------------------------------------------------------------------------------
    def validate(self, config: PipelineConfig) -> None:
        """Fail early, with the model's real ranges, on a layer/head/size this model does not have."""
        self.pipeline.validate(config, clip_given=self.presence_clip is not None)

    def _settings(self, overrides: dict[str, Any]) -> PipelineConfig:
        """This call's configuration: :attr:`config` with ``overrides``, validated."""
        config = self.config.replace(**overrides) if overrides else self.config
        self.validate(config)
        return config

    def clip_scorer(self, config: PipelineConfig | None = None):
        """The CLIP scorer of the presence stage: ``presence_clip`` when given in code, else the
        config's ``presence_clip_model``, loaded on first use (once per name and template)."""
        config = config or self.config
        if self.presence_clip is not None:
            return self.presence_clip
        if config.presence_clip_model is None:
            return None
        key = (config.presence_clip_model, config.presence_clip_template)
        with self.lock:
            if self._clip_key != key:
                self._clip = factory.load_presence_clip(config, self.backbone.device)
                self._clip_key = key
            return self._clip

    def _clip_for(self, config: PipelineConfig, keep_all: bool):
        """The CLIP the presence stage will ask (None when it asks none: not loaded for nothing)."""
        asks = not keep_all and (config.presence_clip_ratio > 0 or config.presence_rounds > 0)
        return self.clip_scorer(config) if asks else None

    def precision(self, config: PipelineConfig | None = None) -> Precision:
        """What ``config.dtype`` means on this model's device (``auto`` resolved, with a note when
        it fell back to fp32)."""
        return self.pipeline.precision(config or self.config)

    def image_size(self, config: PipelineConfig | None = None) -> int:
        return self.pipeline.image_size(config or self.config)

    def set_image(self, image: ImageInput, config: PipelineConfig | None = None) -> np.ndarray:
        """Decode ``image`` and cache its first-pass encoding; returns the RGB array."""
        return self._encoded(load_image(image), config)[0]

    def _encoded(self, rgb: np.ndarray, config: PipelineConfig | None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """(rgb, pixels, embeds) of ``rgb``, from the cache or encoded into it. Callers hold
        :attr:`lock` until they are done with the pair when another thread may replace it."""
        config = config or self.config
        key = encoding_key(rgb, self.image_size(config), self.precision(config).name, self.backbone.compile_vision,
                           config)
        with self.lock:
            if key != self._cache_key or self._cache is None:
                pixels = self.pipeline.preprocess([rgb], config)
                self._cache = (pixels, self.encode(pixels, config))
                self._cache_key = key
            return (rgb, *self._cache)

    def segment(self, image: ImageInput, classes: str | Sequence[str], *, keep_all: bool = False,
                caption: Sequence[str] | None = None, **overrides: Any) -> SegmentationResult:
        """Label map of ``image`` over the classes present among ``classes`` (+ background unless
        disabled); ``keep_all=True`` segments with every given class (the paper's protocol).
        ``caption``: the caption names these classes instead, every one of ``classes`` among them,
        and only ``classes``' maps are kept (the CVPR-era evaluation: the whole vocabulary
        captioned, the ground-truth classes' maps kept); no presence stage."""
        return self.segment_pending(image, classes, keep_all=keep_all, caption=caption, **overrides).finish()

    def segment_pending(self, image: ImageInput, classes: str | Sequence[str], *, keep_all: bool = False,
                        caption: Sequence[str] | None = None, **overrides: Any) -> PendingResult:
        """:meth:`segment` up to the network's output; :meth:`PendingResult.finish` post-processes
        it (outside the model lock), :meth:`PendingResult.restyled` under other post-processing settings."""
        config = self._settings(overrides)
        names = parse_classes(classes)
        rgb = load_image(image)
        clip = self._clip_for(config, keep_all or caption is not None)
        with self.lock:
            rgb, pixels, embeds = self._encoded(rgb, config)
            return self._pending([rgb], pixels, embeds, [names], config, keep_all, caption, clip)[0]

    def _pending(self, rgbs, pixels, embeds, classes, config, keep_all, caption, clip) -> list[PendingResult]:
        if caption is not None:
            captions = [parse_classes(caption)] * len(rgbs)
            return self.pipeline.captioned(rgbs, pixels, embeds, classes, captions, config)
        return self.pipeline.run(rgbs, pixels, embeds, classes, config, keep_all=keep_all, clip=clip)

    def detect_classes(self, image: ImageInput, classes: str | Sequence[str], **overrides: Any) -> Presence:
        """Only the presence scores and selection (no segmentation, no recurrent check)."""
        config = self._settings(overrides)
        names = parse_classes(classes)
        rgb = load_image(image)
        scorer = self.clip_scorer(config) if config.presence_clip_ratio > 0 else None
        with self.lock:
            rgb, _pixels, embeds = self._encoded(rgb, config)
            return detect(self.backbone, embeds, names, config, scorer=scorer, rgb=rgb)

    def segment_batch(self, images: Sequence[ImageInput], classes: str | Sequence[str] | Sequence[Sequence[str]], *,
                      keep_all: bool = False, caption: Sequence[str] | None = None,
                      **overrides: Any) -> list[SegmentationResult]:
        """Several images in one forward/backward per pass. ``classes`` is one list for all images
        or one list per image (candidates, as in :meth:`segment`; ``caption`` as there, one for all images)."""
        return [p.finish() for p in self.segment_batch_pending(images, classes, keep_all=keep_all, caption=caption,
                                                               **overrides)]

    def segment_batch_pending(self, images: Sequence[ImageInput],
                              classes: str | Sequence[str] | Sequence[Sequence[str]], *, keep_all: bool = False,
                              caption: Sequence[str] | None = None, **overrides: Any) -> list[PendingResult]:
        """:meth:`segment_batch` up to the network's output: each image's post-processing (blur,
        CRF) is left to :meth:`PendingResult.finish`, which a worker process can run while the
        network works on the next batch (:mod:`pnpovss.runner`)."""
        config = self._settings(overrides)
        if not len(images):
            return []
        per_image = per_image_classes(classes, len(images))
        rgbs = [load_image(img) for img in images]
        pixels = self.pipeline.preprocess(rgbs, config)
        clip = self._clip_for(config, keep_all or caption is not None)
        with self.lock:
            embeds = self.encode(pixels, config)
            return self._pending(rgbs, pixels, embeds, per_image, config, keep_all, caption, clip)

    def segment_stream(self, images: Sequence[ImageInput], classes: str | Sequence[str] | Sequence[Sequence[str]],
                       batch_size: int | None = None, *, keep_all: bool = False,
                       **overrides: Any) -> Iterator[list[SegmentationResult]]:
        """:meth:`segment_batch` over ``images`` in batches, yielding each batch's results in order.
        ``classes`` as there: one list for all images or one list per image. ``batch_size=None``:
        the first image runs alone and the rest in batches sized to the memory it took
        (:class:`~pnpovss.batching.Batches`)."""
        per_image = per_image_classes(classes, len(images)) if len(images) else []
        batches = Batches(self.backbone.device, batch_size)
        for chunk in batches.chunks(list(zip(images, per_image))):
            with batches.measured():
                out = self.segment_batch([img for img, _ in chunk], [c for _, c in chunk], keep_all=keep_all,
                                         **overrides)
            yield out

    def encode(self, pixels: torch.Tensor, config: PipelineConfig | None = None) -> torch.Tensor:
        """The backbone's image encoding of preprocessed ``pixels`` in ``config``'s precision."""
        return self.pipeline.encode(pixels, config or self.config)

    def class_grid_maps(self, pixels: torch.Tensor, embeds: torch.Tensor, classes: Sequence[Sequence[str]],
                        config: PipelineConfig) -> list[np.ndarray]:
        """GradCAM + Salience DropOut only: per image the (C, gh, gw) combined class maps."""
        return self.pipeline.class_maps(pixels, embeds, classes, config)

    def dropout_maps(self, pixels: torch.Tensor, embeds: torch.Tensor, text: TextBatch,
                     config: PipelineConfig) -> DropoutMaps:
        """:func:`~pnpovss.dropout.salience_dropout` in ``config``'s precision."""
        return self.pipeline.dropout_maps(pixels, embeds, text, config)


__all__ = ["Segmenter", "parse_classes", "per_image_classes", "encoding_key"]
