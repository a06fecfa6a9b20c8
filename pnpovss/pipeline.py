"""The user-facing predictor: :class:`Segmenter` (stateful, caches the image encoding) on top of a
:class:`~pnpovss.backbones.Backbone` (the model object), in the style of segment-anything.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .backbones import DEFAULT_MODEL, Backbone, load_backbone, resolve_source
from .config import PRESET_FILENAME, PipelineConfig, load_preset
from .dropout import salience_dropout
from .errors import PnpOvssError
from .imageio import ImageInput, load_image, overlay_image
from .postprocess import postprocess
from .precision import Precision, resolve_precision

BACKGROUND = "background"


def parse_classes(classes: str | Sequence[str]) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> cleaned names; empty or duplicate names are an error."""
    items = classes.split(",") if isinstance(classes, str) else list(classes)
    names = [" ".join(str(c).split()) for c in items]
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


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PnpOvssError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PnpOvssError("device cuda requested but no CUDA GPU is available; use --device cpu")
    return dev


@dataclass
class SegmentationResult:
    """Output for one image. ``labels`` index into ``classes`` (background first when enabled)."""

    labels: np.ndarray
    scores: np.ndarray
    """(K, H, W) per-label score maps after blur and normalisation (the CRF's input)."""
    classes: list[str]
    image: np.ndarray
    config: PipelineConfig
    grid_maps: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    """(C, gh, gw) combined GradCAM maps of the classes before post-processing."""

    def fractions(self) -> dict[str, float]:
        counts = np.bincount(self.labels.ravel(), minlength=len(self.classes))
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
        return Image.fromarray(show_cam_on_image(self.image.astype(np.float32) / 255.0, cam, use_rgb=True))


def _image_key(image: np.ndarray, size: int) -> str:
    return hashlib.sha1(image.tobytes() + str((image.shape, size)).encode()).hexdigest()


class Segmenter:
    """Open-vocabulary segmentation with PnP-OVSS.

    >>> seg = Segmenter.from_pretrained("Salesforce/blip-itm-large-flickr")   # doctest: +SKIP
    >>> res = seg.segment("cat.jpg", ["cat", "grass"])                          # doctest: +SKIP
    >>> res.labels, res.classes, res.overlay()                                  # doctest: +SKIP

    The first pass's image encoding is cached per image, so segmenting the same image again with
    other classes or settings skips the vision encoder.
    """

    def __init__(self, backbone: Backbone, config: PipelineConfig | None = None) -> None:
        self.backbone = backbone
        self.config = config or PipelineConfig().replace(**backbone.pipeline_defaults)
        self._cache_key: str | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_pretrained(
        cls,
        source: str = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = "auto",
        preset: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> "Segmenter":
        """Load a backbone (hub id, local directory or ``toy``) and settle the configuration:
        defaults < the model directory's ``pnpovss_preset.json`` < ``preset`` < ``overrides``.
        ``device="auto"``: CUDA when available, else CPU; ``dtype=`` (a config field) sets the precision."""
        PipelineConfig().replace(**overrides)  # bad values fail before a slow model load
        user_preset = load_preset(preset) if preset is not None else {}
        dev = resolve_device(device)
        resolve_precision(overrides.get("dtype", user_preset.get("dtype", "fp32")), dev)  # e.g. fp16 on a CPU
        backbone = load_backbone(source, device=dev)
        config = PipelineConfig().replace(**backbone.pipeline_defaults)
        resolved = resolve_source(source)
        model_preset = Path(resolved) / PRESET_FILENAME
        if model_preset.is_file():
            config = config.replace(**load_preset(model_preset))
        config = config.replace(**user_preset).replace(**overrides)
        seg = cls(backbone, config)
        seg.validate(config)
        return seg

    # ------------------------------------------------------------------------------------
    def validate(self, config: PipelineConfig) -> None:
        """Fail early, with the model's real ranges, on a layer/head/size this model does not have."""
        self.backbone.check_layers([config.layer])
        self.backbone.check_heads(config.heads_tuple())
        self.backbone.grid(self.image_size(config))
        self.precision(config)

    def precision(self, config: PipelineConfig | None = None) -> Precision:
        """What ``config.dtype`` means on this model's device (``auto`` resolved, with a note when
        it fell back to fp32)."""
        return resolve_precision((config or self.config).dtype, self.backbone.device)

    def image_size(self, config: PipelineConfig | None = None) -> int:
        size = (config or self.config).image_size
        return size if size is not None else self.backbone.native_image_size

    def set_image(self, image: ImageInput, config: PipelineConfig | None = None) -> np.ndarray:
        """Decode ``image`` and cache its first-pass encoding; returns the RGB array."""
        rgb = load_image(image)
        size = self.image_size(config)
        key = _image_key(rgb, size) + self.precision(config).name
        if key != self._cache_key:
            pixels = self.backbone.preprocess([rgb], size)
            self._cache = (pixels, self.encode(pixels, config))
            self._cache_key = key
        return rgb

    def segment(self, image: ImageInput, classes: str | Sequence[str], **overrides: Any) -> SegmentationResult:
        """Label map of ``image`` over ``classes`` (+ background unless disabled)."""
        config = self.config.replace(**overrides) if overrides else self.config
        self.validate(config)
        names = parse_classes(classes)
        rgb = self.set_image(image, config)
        assert self._cache is not None
        pixels, embeds = self._cache
        return self._finish([rgb], pixels, embeds, [names], config)[0]

    def segment_batch(
        self,
        images: Sequence[ImageInput],
        classes: str | Sequence[str] | Sequence[Sequence[str]],
        **overrides: Any,
    ) -> list[SegmentationResult]:
        """Several images in one forward/backward per pass. ``classes`` is one list for all images
        or one list per image."""
        config = self.config.replace(**overrides) if overrides else self.config
        self.validate(config)
        if classes and not isinstance(classes, str) and not isinstance(classes[0], str):
            per_image = [parse_classes(c) for c in classes]  # type: ignore[arg-type]
            if len(per_image) != len(images):
                raise PnpOvssError(f"got {len(per_image)} class lists for {len(images)} images")
        else:
            per_image = [parse_classes(classes)] * len(images)  # type: ignore[arg-type]
        rgbs = [load_image(img) for img in images]
        pixels = self.backbone.preprocess(rgbs, self.image_size(config))
        return self._finish(rgbs, pixels, self.encode(pixels, config), per_image, config)

    def segment_stream(
        self,
        images: Sequence[ImageInput],
        classes: Sequence[Sequence[str]],
        batch_size: int | None = None,
        **overrides: Any,
    ) -> Iterator[list[SegmentationResult]]:
        """:meth:`segment_batch` over ``images`` in batches, yielding each batch's results in order.
        ``batch_size=None``: the first image runs alone and the rest in batches sized to the memory
        it took (:func:`~pnpovss.batching.auto_batch_size`)."""
        from .batching import PeakMemory, auto_batch_size

        start = 0
        if batch_size is None and images:
            with PeakMemory(self.backbone.device) as peak:
                yield self.segment_batch(images[:1], classes[:1], **overrides)
            batch_size, start = auto_batch_size(self.backbone.device, peak.bytes), 1
        for i in range(start, len(images), batch_size or 1):
            yield self.segment_batch(images[i : i + batch_size], classes[i : i + batch_size], **overrides)

    def encode(self, pixels: torch.Tensor, config: PipelineConfig | None = None) -> torch.Tensor:
        """The backbone's image encoding of preprocessed ``pixels`` in ``config``'s precision."""
        with self.precision(config).vision_autocast():
            return self.backbone.encode_image(pixels)

    def class_grid_maps(
        self, pixels: torch.Tensor, embeds: torch.Tensor, classes: Sequence[Sequence[str]], config: PipelineConfig
    ) -> list[np.ndarray]:
        """GradCAM + Salience DropOut only: per image the (C, gh, gw) combined class maps."""
        text = self.backbone.build_text(config.prompt, classes)
        precision = self.precision(config)
        maps = salience_dropout(self.backbone, pixels, embeds, text, config,
                                precision.vision_autocast, precision.text_autocast)
        return [m.float().cpu().numpy() for m in maps.class_maps]

    def _finish(self, rgbs, pixels, embeds, classes, config) -> list[SegmentationResult]:
        grid_maps = self.class_grid_maps(pixels, embeds, classes, config)
        results = []
        for rgb, names, gm in zip(rgbs, classes, grid_maps):
            labels, scores = postprocess(gm, rgb, config)
            label_names = ([BACKGROUND] if config.background else []) + list(names)
            results.append(SegmentationResult(labels, scores, label_names, rgb, config, gm))
        return results
