"""The user-facing predictor: :class:`Segmenter` (stateful, caches the image encoding) on top of a
:class:`~pnpovss.backbones.Backbone` (the model object), in the style of segment-anything.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .backbones import DEFAULT_MODEL, Backbone, load_backbone, resolve_source
from .backbones.base import TextBatch
from .config import PRESET_FILENAME, PipelineConfig, load_preset
from .devices import resolve_device  # noqa: F401  (also importable from here, as before)
from .dropout import DropoutMaps, salience_dropout
from .errors import PnpOvssError
from .fileio import ImageInput, load_image
from .precision import Precision, resolve_precision
from .presence import Presence, detect, recurrent_check
from .result import BACKGROUND, PendingResult, SegmentationResult  # noqa: F401  (also importable from here, as before)


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


_LOCKS: "weakref.WeakKeyDictionary[Backbone, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(backbone: Backbone) -> threading.RLock:
    """The one lock of ``backbone``'s model, shared by every :class:`Segmenter` on it.

    A network pass changes module state for its duration (forward hooks capture attention,
    :func:`~pnpovss.hooks.swapped_forwards` replaces forwards for fused attention and reduced
    precision), so two passes on one model must not overlap; post-processing touches no module and
    runs outside the lock. Re-entrant: a locked step may call another."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(backbone)
        if lock is None:
            lock = _LOCKS[backbone] = threading.RLock()
        return lock


def _image_key(image: np.ndarray, size: int) -> str:
    return hashlib.sha1(image.tobytes() + str((image.shape, size)).encode()).hexdigest()


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
    :func:`model_lock` (so concurrent calls give the single-thread results), while post-processing
    (blur, CRF) of different calls runs in parallel. Processes each load their own instance.
    """

    def __init__(self, backbone: Backbone, config: PipelineConfig | None = None, presence_clip=None) -> None:
        self.backbone = backbone
        self.config = config or PipelineConfig().replace(**backbone.pipeline_defaults)
        self.presence_clip = presence_clip
        self._clip = None
        self._clip_key: tuple[str, str] | None = None
        self._cache_key: str | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.lock = model_lock(backbone)

    @classmethod
    def from_pretrained(
        cls,
        source: str = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = "auto",
        preset: str | os.PathLike[str] | None = None,
        presence_clip=None,
        compile_vision: bool = False,
        **overrides: Any,
    ) -> "Segmenter":
        """Load a backbone (hub id, local directory or ``toy``) and settle the configuration:
        defaults < the model directory's ``pnpovss_preset.json`` < ``preset`` < ``overrides``.
        ``presence_clip``: a :class:`pnpovss.reward.ClipScorer` for the presence stage (instead of
        the config's ``presence_clip_model``).
        ``device="auto"``: CUDA when available, else CPU; ``dtype=`` (a config field) sets the precision.
        ``compile_vision``: run the vision encoder through ``torch.compile``
        (:attr:`~pnpovss.backbones.base.Backbone.compile_vision`; BLIP only)."""
        PipelineConfig().replace(**overrides)  # bad values fail before a slow model load
        if not isinstance(compile_vision, bool):
            raise PnpOvssError(f"compile_vision must be True or False, got {compile_vision!r}")
        user_preset = load_preset(preset) if preset is not None else {}
        dev = resolve_device(device)
        resolve_precision(overrides.get("dtype", user_preset.get("dtype", "fp32")), dev)  # e.g. fp16 on a CPU
        backbone = load_backbone(source, device=dev)
        if compile_vision:
            if not backbone.supports_compiled_vision:
                raise PnpOvssError(f"compile_vision is supported for BLIP models only, not {backbone.model_type}; "
                                   "load it without compile_vision")
            backbone.compile_vision = True
        config = PipelineConfig().replace(**backbone.pipeline_defaults)
        resolved = resolve_source(source)
        model_preset = Path(resolved) / PRESET_FILENAME
        if model_preset.is_file():
            config = config.replace(**load_preset(model_preset))
        config = config.replace(**user_preset).replace(**overrides)
        seg = cls(backbone, config, presence_clip=presence_clip)
        seg.validate(config)
        return seg

    # ------------------------------------------------------------------------------------
    def validate(self, config: PipelineConfig) -> None:
        """Fail early, with the model's real ranges, on a layer/head/size this model does not have."""
        self.backbone.check_config(config, self.image_size(config))
        if (config.presence_rounds or config.presence_clip_ratio) and self.presence_clip is None \
                and config.presence_clip_model is None:
            raise PnpOvssError("presence_rounds > 0 or presence_clip_ratio > 0 needs a CLIP model: pass --clip NAME "
                               "(--set presence_clip_model=NAME; API: Segmenter(presence_clip=ClipScorer(...))), or set "
                               "presence_rounds=0 presence_clip_ratio=0")
        if "{}" not in config.presence_clip_template:
            raise PnpOvssError(f"presence_clip_template must contain '{{}}' where the class name goes, "
                               f"got {config.presence_clip_template!r}")
        self.precision(config)

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
                from .reward import ClipScorer, load_clip

                self._clip = ClipScorer(load_clip(config.presence_clip_model, device=self.backbone.device),
                                        template=config.presence_clip_template)
                self._clip_key = key
            return self._clip

    def precision(self, config: PipelineConfig | None = None) -> Precision:
        """What ``config.dtype`` means on this model's device (``auto`` resolved, with a note when
        it fell back to fp32)."""
        return resolve_precision((config or self.config).dtype, self.backbone.device)

    def image_size(self, config: PipelineConfig | None = None) -> int:
        size = (config or self.config).image_size
        return size if size is not None else self.backbone.native_image_size

    def set_image(self, image: ImageInput, config: PipelineConfig | None = None) -> np.ndarray:
        """Decode ``image`` and cache its first-pass encoding; returns the RGB array."""
        return self._encoded(load_image(image), config)[0]

    def _encoded(self, rgb: np.ndarray, config: PipelineConfig | None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """(rgb, pixels, embeds) of ``rgb``, from the cache or encoded into it. Callers hold
        :attr:`lock` until they are done with the pair when another thread may replace it."""
        size = self.image_size(config)
        compiled = "+compiled" if self.backbone.compile_vision else ""
        key = _image_key(rgb, size) + self.precision(config).name + compiled
        with self.lock:
            if key != self._cache_key or self._cache is None:
                pixels = self.backbone.preprocess([rgb], size)
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
        config = self.config.replace(**overrides) if overrides else self.config
        self.validate(config)
        names = parse_classes(classes)
        rgb = load_image(image)
        with self.lock:
            rgb, pixels, embeds = self._encoded(rgb, config)
            if caption is not None:
                return self._kept_from_caption([rgb], pixels, embeds, [names], [caption], config)[0]
            return self._finish([rgb], pixels, embeds, [names], config, keep_all, defer=True)[0]

    def detect_classes(self, image: ImageInput, classes: str | Sequence[str], **overrides: Any) -> Presence:
        """Only the presence scores and selection (no segmentation, no recurrent check)."""
        config = self.config.replace(**overrides) if overrides else self.config
        self.validate(config)
        names = parse_classes(classes)
        rgb = load_image(image)
        with self.lock:
            rgb, _pixels, embeds = self._encoded(rgb, config)
            return detect(self.backbone, embeds, names, config, scorer=self._opinion_scorer(config), rgb=rgb)

    def _opinion_scorer(self, config: PipelineConfig):
        return self.clip_scorer(config) if config.presence_clip_ratio > 0 else None

    def segment_batch(
        self,
        images: Sequence[ImageInput],
        classes: str | Sequence[str] | Sequence[Sequence[str]],
        *,
        keep_all: bool = False,
        caption: Sequence[str] | None = None,
        **overrides: Any,
    ) -> list[SegmentationResult]:
        """Several images in one forward/backward per pass. ``classes`` is one list for all images
        or one list per image (candidates, as in :meth:`segment`; ``caption`` as there, one for all images)."""
        return [p.finish() for p in self.segment_batch_pending(images, classes, keep_all=keep_all, caption=caption,
                                                               **overrides)]

    def segment_batch_pending(
        self,
        images: Sequence[ImageInput],
        classes: str | Sequence[str] | Sequence[Sequence[str]],
        *,
        keep_all: bool = False,
        caption: Sequence[str] | None = None,
        **overrides: Any,
    ) -> list["PendingResult"]:
        """:meth:`segment_batch` up to the network's output: each image's post-processing (blur,
        CRF) is left to :meth:`PendingResult.finish`, which a worker process can run while the
        network works on the next batch (:mod:`pnpovss.runner`)."""
        config = self.config.replace(**overrides) if overrides else self.config
        self.validate(config)
        if not len(images):
            return []
        per_image = per_image_classes(classes, len(images))
        rgbs = [load_image(img) for img in images]
        pixels = self.backbone.preprocess(rgbs, self.image_size(config))
        with self.lock:
            embeds = self.encode(pixels, config)
            if caption is not None:
                captions = [parse_classes(caption)] * len(images)
                return self._kept_from_caption(rgbs, pixels, embeds, per_image, captions, config)
            return self._finish(rgbs, pixels, embeds, per_image, config, keep_all, defer=True)

    def segment_stream(
        self,
        images: Sequence[ImageInput],
        classes: str | Sequence[str] | Sequence[Sequence[str]],
        batch_size: int | None = None,
        *,
        keep_all: bool = False,
        **overrides: Any,
    ) -> Iterator[list[SegmentationResult]]:
        """:meth:`segment_batch` over ``images`` in batches, yielding each batch's results in order.
        ``classes`` as there: one list for all images or one list per image. ``batch_size=None``: the first image runs alone and the rest in batches sized to the memory
        it took (:func:`~pnpovss.batching.auto_batch_size`)."""
        from .batching import PeakMemory, auto_batch_size

        classes = per_image_classes(classes, len(images)) if len(images) else []
        start = 0
        if batch_size is None and images:
            with PeakMemory(self.backbone.device) as peak:
                yield self.segment_batch(images[:1], classes[:1], keep_all=keep_all, **overrides)
            batch_size, start = auto_batch_size(self.backbone.device, peak.bytes), 1
        for i in range(start, len(images), batch_size or 1):
            yield self.segment_batch(images[i : i + batch_size], classes[i : i + batch_size], keep_all=keep_all,
                                     **overrides)

    def encode(self, pixels: torch.Tensor, config: PipelineConfig | None = None) -> torch.Tensor:
        """The backbone's image encoding of preprocessed ``pixels`` in ``config``'s precision."""
        with self.lock, self.precision(config).vision_autocast(self.backbone.vision_linears()):
            return self.backbone.encode_image(pixels)

    def class_grid_maps(
        self, pixels: torch.Tensor, embeds: torch.Tensor, classes: Sequence[Sequence[str]], config: PipelineConfig
    ) -> list[np.ndarray]:
        """GradCAM + Salience DropOut only: per image the (C, gh, gw) combined class maps."""
        text = self.backbone.build_text(config.prompt, classes)
        return [m.float().cpu().numpy() for m in self.dropout_maps(pixels, embeds, text, config).class_maps]

    def dropout_maps(self, pixels: torch.Tensor, embeds: torch.Tensor, text: TextBatch,
                     config: PipelineConfig) -> DropoutMaps:
        """:func:`~pnpovss.dropout.salience_dropout` in ``config``'s precision (vision encoder and
        the image key/value projections reduced, the GradCAM forward/backward fp32)."""
        precision = self.precision(config)
        projections, linears = self.backbone.image_projections(), self.backbone.vision_linears()
        with self.lock:
            return salience_dropout(self.backbone, pixels, embeds, text, config,
                                    lambda: precision.vision_autocast(linears),
                                    lambda: precision.text_autocast(projections))

    def _finish(self, rgbs, pixels, embeds, classes, config, keep_all=True, defer=False) -> list:
        """Results, or with ``defer`` :class:`PendingResult` s (finished already where the
        recurrent presence check needed the labels)."""
        if keep_all:
            pending = self._pending_known(rgbs, pixels, embeds, classes, config)
            return pending if defer else [p.finish() for p in pending]
        scorer = self._opinion_scorer(config)
        found = [detect(self.backbone, embeds[i : i + 1], names, config, scorer=scorer, rgb=rgbs[i])
                 for i, names in enumerate(classes)]
        pending = self._pending_known(rgbs, pixels, embeds, [p.kept for p in found], config)
        for p, pres in zip(pending, found):
            p.presence = pres
        if not config.presence_rounds:
            return pending if defer else [p.finish() for p in pending]

        def resegment(redo: list[int]) -> list[SegmentationResult]:  # with the sets the check left
            index = torch.tensor(redo, device=pixels.device)
            return self._segment_known([rgbs[i] for i in redo], pixels[index], embeds[index],
                                       [found[i].kept for i in redo], config)

        results = recurrent_check(self.clip_scorer(config), [p.finish() for p in pending], found, config, resegment)
        return [PendingResult.of(r) for r in results] if defer else results

    def _kept_from_caption(self, rgbs, pixels, embeds, classes, captions, config) -> list["PendingResult"]:
        """:meth:`_pending_known` with ``captions`` as the captions, each image's result narrowed
        to its ``classes`` (their maps, in their order; the background rule counts the caption)."""
        out = []
        for names, caption, p in zip(classes, captions, self._pending_known(rgbs, pixels, embeds, captions, config)):
            missing = [n for n in names if n not in caption]
            if missing:
                raise PnpOvssError(f"class {missing[0]!r} is not in the caption's classes; a caption must name "
                                   "every class whose map is kept")
            rows = [caption.index(n) for n in names]
            out.append(PendingResult.from_maps(p.image, names, config, p.grid_maps[rows], caption_size=len(caption),
                                               present=p.present and bool(names)))
        return out

    def _segment_known(self, rgbs, pixels, embeds, classes, config) -> list[SegmentationResult]:
        """The PnP-OVSS pipeline with known class lists; an empty list gives an all-background image."""
        return [p.finish() for p in self._pending_known(rgbs, pixels, embeds, classes, config)]

    def _pending_known(self, rgbs, pixels, embeds, classes, config) -> list["PendingResult"]:
        """:meth:`_segment_known` up to the class maps (the network's part)."""
        todo = [i for i, names in enumerate(classes) if names]
        maps: dict[int, np.ndarray] = {}
        if todo:
            index = torch.tensor(todo, device=pixels.device)
            sub = (pixels, embeds) if len(todo) == len(classes) else (pixels[index], embeds[index])
            maps = dict(zip(todo, self.class_grid_maps(*sub, [classes[i] for i in todo], config)))
        grid = self.backbone.grid(pixels.shape[-1])
        pending = []
        for i, (rgb, names) in enumerate(zip(rgbs, classes)):
            gm = maps[i] if i in maps else np.zeros((0, *grid), dtype=np.float32)
            pending.append(PendingResult.from_maps(rgb, names, config, gm, present=i in maps))
        return pending
