"""What a segmentation returns: :class:`SegmentationResult`, the label map with its classes, score
maps and presence decision, and the views of it a user asks for (overlay, heatmap, the JSON record);
:class:`PendingResult`, one before its post-processing (what a worker process finishes)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .config import PipelineConfig
from .errors import PnpOvssError
from .fields import fields_for_stage
from .metrics import label_counts
from .postprocess import postprocess
from .presence import Presence
from .visualize import overlay_image

BACKGROUND = "background"
"""The name of label 0 when the background channel is on."""


@dataclass
class SegmentationResult:
    """Output for one image. ``labels`` index into ``classes`` (background first when enabled)."""

    labels: np.ndarray
    scores: np.ndarray
    """(K, h, w) per-label score maps after blur and normalisation (the CRF's input); (h, w) is the
    image size, or the post-processing size of an image larger than ``postprocess_max_side``."""
    classes: list[str]
    image: np.ndarray
    config: PipelineConfig
    grid_maps: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    """(C, gh, gw) combined GradCAM maps of the classes before post-processing."""
    presence: Presence | None = None
    """The presence decision over the candidate classes (None with ``keep_all``)."""

    def __repr__(self) -> str:  # the arrays are megabytes: name their shapes, not their values
        h, w = self.labels.shape
        return f"SegmentationResult({w}x{h} image, classes={self.classes}, fractions={{{', '.join(f'{k!r}: {v:.3f}' for k, v in self.fractions().items())}}})"

    def fractions(self) -> dict[str, float]:
        counts = label_counts(self.labels, len(self.classes))
        return {name: float(c) / self.labels.size for name, c in zip(self.classes, counts)}

    def overlay(self, alpha: float = 0.5) -> Image.Image:
        """The image with label colours blended in and a legend underneath."""
        return overlay_image(self.image, self.labels, self.classes, alpha=alpha,
                             skip_first=self.config.background)

    def heatmap(self, name: str) -> Image.Image:
        """One label's score map drawn over the image (pytorch-grad-cam's colour-map overlay)."""
        from pytorch_grad_cam.utils.image import show_cam_on_image

        if name not in self.classes:
            raise PnpOvssError(f"no class {name!r}; classes are {', '.join(self.classes)}")
        cam = self.scores[self.classes.index(name)]
        if cam.shape != self.labels.shape:  # scores of a large image stay at the post-processing size
            size = self.labels.shape[::-1]
            cam = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))
        return Image.fromarray(show_cam_on_image(self.image.astype(np.float32) / 255.0, cam, use_rgb=True))

    def to_detections(self, vocabulary: Sequence[str] | None = None) -> Any:
        """``supervision.Detections`` (the ``interop`` extra): one boolean mask per found class,
        background left out; ``class_id`` indexes ``vocabulary`` (default: this result's
        ``classes``), ``confidence`` is the presence probability (None without a presence stage),
        the box is the mask's and ``data["class_name"]`` the names."""
        from .interop import to_detections

        return to_detections(self, vocabulary)

    def to_coco(self, file_name: str, categories: Sequence[str] | None = None, image_id: int = 1) -> dict[str, Any]:
        """This image as a COCO annotation file (the ``interop`` extra; see :mod:`pnpovss.interop`):
        categories default to the presence stage's candidates, else the result's own classes.
        For many images use :class:`pnpovss.interop.CocoWriter`."""
        from .interop import CocoWriter

        if categories is None:
            categories = self.presence.candidates if self.presence is not None else \
                self.classes[1 if self.config.background else 0 :]
        writer = CocoWriter(categories)
        writer.add_result(self, file_name, image_id)
        return writer.to_json()

    def to_json(self, image: str, model: str, candidates: Sequence[str], keep_all: bool) -> dict[str, Any]:
        """The record ``pnpovss segment`` writes as NAME.json (the demo's download is the same)."""
        return {
            "image": image,
            "model": model,
            "candidates": list(candidates),
            "keep_all": keep_all,
            "classes": self.classes,
            "presence": None if self.presence is None else self.presence.to_json(),
            "presence_notes": [] if self.presence is None else self.presence.notes,
            "size": list(self.labels.shape),
            "fractions": self.fractions(),
            "config": self.config.to_dict(),
        }


@dataclass
class PendingResult:
    """One image's network output before its CPU post-processing: small and picklable (the image,
    the (C, gh, gw) class maps, the settings), so a worker process can finish it.

    ``config`` is the *per-caption* configuration (:meth:`PipelineConfig.for_caption` of the number
    of classes the caption named, ``caption_size``): made by :meth:`from_maps` and kept by
    :meth:`restyled`, so no caller can post-process the maps under another background rule than a
    fresh run would."""

    image: np.ndarray
    classes: list[str]
    config: PipelineConfig
    grid_maps: np.ndarray
    present: bool = True
    """False: no class is present (only reachable with a background channel): all background."""
    presence: Presence | None = None
    result: SegmentationResult | None = None
    caption_size: int = 0
    """How many classes the caption named (it decides :attr:`config`'s background channel)."""

    @classmethod
    def from_maps(cls, image: np.ndarray, names: Sequence[str], config: PipelineConfig, grid_maps: np.ndarray, *,
                  caption_size: int | None = None, present: bool = True) -> "PendingResult":
        """The pending result of ``grid_maps`` (one per name in ``names``) under ``config`` applied to
        a caption of ``caption_size`` classes (default: ``len(names)``)."""
        size = len(names) if caption_size is None else caption_size
        cfg = config.for_caption(size)
        label_names = ([BACKGROUND] if cfg.background else []) + list(names)
        return cls(image, label_names, cfg, grid_maps, present=present, caption_size=size)

    @classmethod
    def of(cls, res: SegmentationResult) -> "PendingResult":
        """A result that is finished already."""
        size = len(res.classes) - (1 if res.config.background else 0)
        return cls(res.image, res.classes, res.config, res.grid_maps, presence=res.presence, result=res,
                   caption_size=size)

    def restyled(self, config: PipelineConfig) -> "PendingResult":
        """The same maps, to be post-processed under ``config`` (its per-caption form, as
        :meth:`from_maps` makes it); only the post-processing may differ from the maps' settings."""
        cfg = config.for_caption(self.caption_size)
        same = set(fields_for_stage("postprocess"))
        changed = [f for f in cfg.to_dict() if f not in same and getattr(cfg, f) != getattr(self.config, f)]
        if changed:
            raise ValueError(f"restyled changes {', '.join(changed)}, which the maps were made with; only "
                             "post-processing fields may change (segment again instead)")
        return dataclasses.replace(self, config=cfg, result=None)

    def finish(self, working: np.ndarray | None = None) -> SegmentationResult:
        """Upsampling, background, blur and CRF (:func:`~pnpovss.postprocess.postprocess`);
        ``working``: the image's post-processing copy when the caller has it already."""
        if self.result is None:
            if self.present:
                labels, scores = postprocess(self.grid_maps, self.image, self.config, working)
            else:
                labels = np.zeros(self.image.shape[:2], dtype=np.int64)
                scores = np.ones((1, *self.image.shape[:2]), dtype=np.float32)
            self.result = SegmentationResult(labels, scores, self.classes, self.image, self.config, self.grid_maps,
                                             self.presence)
        return self.result

