"""The pipeline as named steps on one model: preprocess -> encode -> select classes -> class maps
-> finish (:meth:`~pnpovss.result.PendingResult.finish`), in the spirit of transformers' pipelines.

:class:`Pipeline` holds nothing but its :class:`~pnpovss.backbones.Backbone` (and that model's
lock): every step takes the configuration it runs with, and the class-maps step hands back
:class:`~pnpovss.result.PendingResult` s that carry their own per-caption configuration, so no
caller can post-process them under another one. The predictor users hold
(:class:`pnpovss.Segmenter`, which caches an image's encoding) and the front-ends (eval, tune's map
cache, the demo) call these steps rather than re-assembling them.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Sequence

import numpy as np
import torch

from .backbones import Backbone
from .backbones.base import TextBatch
from .config import PipelineConfig
from .dropout import DropoutMaps, salience_dropout
from .errors import PnpOvssError
from .precision import Precision, resolve_precision
from .presence import Presence, detect, recurrent_check
from .result import PendingResult, SegmentationResult

_LOCKS: "weakref.WeakKeyDictionary[Backbone, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(backbone: Backbone) -> threading.RLock:
    """The one lock of ``backbone``'s model, shared by every pipeline and predictor on it.

    A network pass changes module state for its duration (forward hooks capture attention), so two
    passes on one model must not overlap; post-processing touches no module and runs outside the
    lock. Re-entrant: a locked step may call another."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(backbone)
        if lock is None:
            lock = _LOCKS[backbone] = threading.RLock()
        return lock


class Pipeline:
    """The steps of PnP-OVSS on ``backbone``; stateless apart from the model itself."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.lock = model_lock(backbone)

    def validate(self, config: PipelineConfig, clip_given: bool = False) -> None:
        """Fail early, with the model's real ranges, on a layer/head/size this model does not have,
        and on settings that need a CLIP none was given for (``clip_given``: one was passed in code)."""
        self.backbone.check_config(config, self.image_size(config))
        if (config.presence_rounds or config.presence_clip_ratio) and not clip_given \
                and config.presence_clip_model is None:
            raise PnpOvssError("presence_rounds > 0 or presence_clip_ratio > 0 needs a CLIP model: pass --clip NAME "
                               "(--set presence_clip_model=NAME; API: Segmenter(presence_clip=ClipScorer(...))), or set "
                               "presence_rounds=0 presence_clip_ratio=0")
        if "{}" not in config.presence_clip_template:
            raise PnpOvssError(f"presence_clip_template must contain '{{}}' where the class name goes, "
                               f"got {config.presence_clip_template!r}")
        self.precision(config)

    def precision(self, config: PipelineConfig) -> Precision:
        """What ``config.dtype`` means on this model's device (``auto`` resolved)."""
        return resolve_precision(config.dtype, self.backbone.device)

    def image_size(self, config: PipelineConfig) -> int:
        """``config.image_size``, or the checkpoint's native size when it is None."""
        return config.image_size if config.image_size is not None else self.backbone.native_image_size

    # ------------------------------------------------------------------------------ the steps
    def preprocess(self, rgbs: Sequence[np.ndarray], config: PipelineConfig) -> torch.Tensor:
        """Step 1: (H, W, 3) uint8 images -> the (B, 3, S, S) network input."""
        return self.backbone.preprocess(list(rgbs), self.image_size(config))

    def encode(self, pixels: torch.Tensor, config: PipelineConfig) -> torch.Tensor:
        """Step 2: the image encoding of ``pixels`` in ``config``'s precision."""
        prepack = self.backbone.execution.prepack
        with self.lock, self.precision(config).vision_autocast(self.backbone.vision_linears(), prepack):
            return self.backbone.encode_image(pixels)

    def select_classes(self, rgbs: Sequence[np.ndarray], embeds: torch.Tensor, classes: Sequence[Sequence[str]],
                       config: PipelineConfig, scorer: Any = None) -> list[Presence]:
        """Step 3: which candidate classes each image shows (:func:`pnpovss.presence.detect`;
        ``scorer``: CLIP's second opinion, or None)."""
        with self.lock:
            return [detect(self.backbone, embeds[i : i + 1], names, config, scorer=scorer, rgb=rgbs[i])
                    for i, names in enumerate(classes)]

    def dropout_maps(self, pixels: torch.Tensor, embeds: torch.Tensor, text: TextBatch,
                     config: PipelineConfig) -> DropoutMaps:
        """:func:`~pnpovss.dropout.salience_dropout` in ``config``'s precision (vision encoder and
        the image key/value projections reduced, the GradCAM forward/backward fp32)."""
        precision, prepack = self.precision(config), self.backbone.execution.prepack
        projections, linears = self.backbone.image_projections(), self.backbone.vision_linears()
        with self.lock:
            return salience_dropout(self.backbone, pixels, embeds, text, config,
                                    lambda: precision.vision_autocast(linears, prepack),
                                    lambda: precision.text_autocast(projections, prepack))

    def class_maps(self, pixels: torch.Tensor, embeds: torch.Tensor, classes: Sequence[Sequence[str]],
                   config: PipelineConfig) -> list[np.ndarray]:
        """Step 4, GradCAM + Salience DropOut: per image the (C, gh, gw) combined class maps."""
        text = self.backbone.build_text(config.prompt, classes)
        return [m.float().cpu().numpy() for m in self.dropout_maps(pixels, embeds, text, config).class_maps]

    def pending(self, rgbs: Sequence[np.ndarray], pixels: torch.Tensor, embeds: torch.Tensor,
                classes: Sequence[Sequence[str]], config: PipelineConfig) -> list[PendingResult]:
        """Step 4 for known class lists, up to the results' post-processing (step 5, ``finish``);
        an empty list gives an all-background image."""
        todo = [i for i, names in enumerate(classes) if names]
        maps: dict[int, np.ndarray] = {}
        if todo:
            index = torch.tensor(todo, device=pixels.device)
            sub = (pixels, embeds) if len(todo) == len(classes) else (pixels[index], embeds[index])
            maps = dict(zip(todo, self.class_maps(*sub, [classes[i] for i in todo], config)))
        grid = self.backbone.grid(pixels.shape[-1])
        empty = np.zeros((0, *grid), dtype=np.float32)
        return [PendingResult.from_maps(rgb, names, config, maps.get(i, empty), present=i in maps)
                for i, (rgb, names) in enumerate(zip(rgbs, classes))]

    def captioned(self, rgbs: Sequence[np.ndarray], pixels: torch.Tensor, embeds: torch.Tensor,
                  classes: Sequence[Sequence[str]], captions: Sequence[Sequence[str]],
                  config: PipelineConfig) -> list[PendingResult]:
        """:meth:`pending` with ``captions`` as the captions, each image's result narrowed to its
        ``classes`` (their maps, in their order; the background rule counts the caption)."""
        out = []
        for names, caption, p in zip(classes, captions, self.pending(rgbs, pixels, embeds, captions, config)):
            missing = [n for n in names if n not in caption]
            if missing:
                raise PnpOvssError(f"class {missing[0]!r} is not in the caption's classes; a caption must name "
                                   "every class whose map is kept")
            rows = [caption.index(n) for n in names]
            out.append(PendingResult.from_maps(p.image, names, config, p.grid_maps[rows], caption_size=len(caption),
                                               present=p.present and bool(names)))
        return out

    def run(self, rgbs: Sequence[np.ndarray], pixels: torch.Tensor, embeds: torch.Tensor,
            classes: Sequence[Sequence[str]], config: PipelineConfig, *, keep_all: bool,
            clip: Any = None) -> list[PendingResult]:
        """Steps 3-4: with ``keep_all`` every class is captioned; otherwise the presence stage picks
        them (``clip``: the CLIP scorer of its second opinion and recurrent check). The recurrent
        check needs the labels, so its results come back finished."""
        if keep_all:
            return self.pending(rgbs, pixels, embeds, classes, config)
        found = self.select_classes(rgbs, embeds, classes, config, clip if config.presence_clip_ratio > 0 else None)
        pending = self.pending(rgbs, pixels, embeds, [p.kept for p in found], config)
        for p, pres in zip(pending, found):
            p.presence = pres
        if not config.presence_rounds:
            return pending

        def resegment(redo: list[int]) -> list[SegmentationResult]:  # with the sets the check left
            index = torch.tensor(redo, device=pixels.device)
            return [p.finish() for p in self.pending([rgbs[i] for i in redo], pixels[index], embeds[index],
                                                     [found[i].kept for i in redo], config)]

        results = recurrent_check(clip, [p.finish() for p in pending], found, config, resegment)
        return [PendingResult.of(r) for r in results]


__all__ = ["Pipeline", "model_lock"]
