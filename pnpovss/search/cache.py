"""The map cache: every layer's and head's class maps of an image from one forward and one
backward, so that a trial costs thresholding and CLIP forwards, not a model run.

Cost model. Per image the GradCAM maps of *every* cross-attention layer and head are computed
once (:func:`~pnpovss.gradcam.layer_attention_and_grad` over all layers), pooled per caption class
and kept in a :class:`MapCache` (float16 rows scaled to max 1, with their float32 scales;
optionally also on disk): BLIP-large at 384 px (12 layers x 12 heads x 576 patches) takes ~170 KB
per class per image. Both saliency kinds come from the same forward/backward. A trial with
``drop_iters > 1`` runs the real DropOut passes for each image ((T-1) vision encodes + T
forward/backward passes of its layer) and memoises the result per (image, saliency, layer, head,
DropOut settings) in memory: the first trial of a new combination costs about one pipeline run
per image, repeats are free.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..backbones.base import Backbone
from ..config import PipelineConfig
from ..fields import fields_for_stage
from ..gradcam import head_cams, layer_attention_and_grad
from ..pipeline import Segmenter

SALIENCIES = ("gradcam", "attention")
"""Saliency kinds the map cache keeps for every image (one forward/backward gives both)."""


@dataclass
class LayerHeadMaps:
    """Per image: every layer's and head's class maps of one forward/backward."""

    cams: np.ndarray
    """(L, H, C, P) float16, each (layer, head, class) row divided by its maximum."""
    scales: np.ndarray
    """(L, H, C) float32 row maxima."""
    grid: tuple[int, int]

    def class_maps(self, layer: int, heads: Sequence[int] | None) -> np.ndarray:
        """(C, gh, gw) single-pass maps of ``layer`` (1-based), averaged over ``heads`` (None = all)."""
        cams = self.cams[layer - 1].astype(np.float32) * self.scales[layer - 1][..., None]
        sel = cams if heads is None else cams[list(heads)]
        return sel.mean(axis=0).reshape(-1, *self.grid)


def layer_head_maps(backbone: Backbone, embeds: torch.Tensor, text: Any, saliency: str, grid: tuple[int, int],
                    also: Sequence[str] = ()) -> LayerHeadMaps | dict[str, LayerHeadMaps]:
    """One forward + one backward for all layers of one image (batch of 1) -> :class:`LayerHeadMaps`.
    With ``also`` (other saliency kinds), a dict saliency -> maps from the same forward/backward."""
    layers = list(range(1, backbone.num_layers + 1))
    kinds = [saliency, *[k for k in also if k != saliency]]
    out = layer_attention_and_grad(backbone, embeds, text, layers, with_grad="gradcam" in kinds)
    result = {}
    for kind in kinds:
        per_layer = []
        for layer in layers:
            attn, grad = out[layer]
            cam = head_cams(attn, grad if kind == "gradcam" else None)[0]
            per_layer.append(torch.stack([cam[:, pos].mean(dim=1) for pos in text.class_tokens[0]], dim=1))
        maps = torch.stack(per_layer).float().cpu().numpy()  # (L, H, C, P)
        scales = maps.max(axis=-1).astype(np.float32)
        safe = np.where(scales > 0, scales, 1.0)
        result[kind] = LayerHeadMaps((maps / safe[..., None]).astype(np.float16), scales, grid)
    return result if also else result[saliency]


def model_fingerprint(backbone: Backbone) -> str:
    """Identity of the model for the disk cache: its source and, for a local directory, the
    names, sizes and modification times of its files."""
    parts = [json.dumps(backbone.describe(), sort_keys=True)]
    src = Path(backbone.source)
    if src.is_dir():
        parts += [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(src.iterdir()) if p.is_file()]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def layer_head_key(fingerprint: str, image: np.ndarray, names: Sequence[str], size: int, precision: str,
                   base: PipelineConfig) -> str:
    """The disk key of an image's layer/head maps: what they depend on, i.e. the model, the image
    and its caption's names, the fields of stages ``input``, ``encode`` and ``caption`` (image size
    and precision resolved) and the saliency kind. Hashed as before the stages existed (fp32 with
    only today's fields gives the same key), so existing caches stay valid."""
    h = hashlib.sha1()
    caption = [str(getattr(base, f)) for f in fields_for_stage("caption")]
    for part in (fingerprint, str(image.shape), "\x1f".join(names), str(size), *caption, base.saliency):
        h.update(part.encode() + b"\x00")
    if precision != "fp32":
        h.update(precision.encode() + b"\x00")
    other = {f: getattr(base, f) for f in fields_for_stage("input", "encode") if f not in ("image_size", "dtype")}
    if other:
        h.update(json.dumps(other, sort_keys=True, default=str).encode() + b"\x00")
    h.update(image.tobytes())
    return h.hexdigest()


def trial_key(index: int, config: PipelineConfig) -> tuple:
    """The memo key of a trial's DropOut maps of image ``index``: every field of stages ``maps``
    and ``dropout`` (the rest is the cache's base configuration)."""
    return (index, *(getattr(config, k) for k in fields_for_stage("maps", "dropout")))


class MapCache:
    """Class maps per image for any trial configuration (see the module doc for the cost model)."""

    def __init__(self, segmenter: Segmenter, base: PipelineConfig, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.seg = segmenter
        self.base = base
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._maps: dict[int, LayerHeadMaps] = {}
        self._other: dict[tuple[int, str], LayerHeadMaps] = {}
        """Maps of the saliency kinds other than the base's, from the same forward/backward."""
        self._dropout: dict[tuple, np.ndarray] = {}
        self._fingerprint = model_fingerprint(segmenter.backbone)

    def _disk_path(self, image: np.ndarray, names: Sequence[str]) -> Path | None:
        if self.cache_dir is None:
            return None
        key = layer_head_key(self._fingerprint, image, names, self.seg.image_size(self.base),
                             self.seg.precision(self.base).name, self.base)
        return self.cache_dir / f"maps-{key}.npz"

    def add(self, index: int, image: np.ndarray, names: Sequence[str]) -> None:
        """Compute (or read from disk) the layer/head maps of image ``index``."""
        path = self._disk_path(image, names)
        others = [k for k in SALIENCIES if k != self.base.saliency]
        if path is not None and path.is_file():
            try:
                with np.load(path) as z:
                    grid = tuple(int(g) for g in z["grid"])
                    loaded = {k: LayerHeadMaps(z[f"cams_{k}"], z[f"scales_{k}"], grid) for k in others}
                    self._maps[index] = LayerHeadMaps(z["cams"], z["scales"], grid)
                self._other.update({(index, k): m for k, m in loaded.items()})
                return
            except (OSError, KeyError, ValueError):
                pass  # unreadable (or older, base-saliency-only) cache entry: recompute and overwrite it
        bb = self.seg.backbone
        pixels = bb.preprocess([image], self.seg.image_size(self.base))
        text = bb.build_text(self.base.prompt, [list(names)])
        with self.seg.precision(self.base).text_autocast(bb.image_projections(), bb.execution.prepack):
            every = layer_head_maps(bb, self.seg.encode(pixels, self.base), text, self.base.saliency,
                                    bb.grid(pixels.shape[-1]), also=others)
        maps = every[self.base.saliency]
        self._maps[index] = maps
        self._other.update({(index, k): every[k] for k in others})
        if path is not None:
            import io

            buf = io.BytesIO()
            extra = {f"{n}_{k}": getattr(every[k], n) for k in others for n in ("cams", "scales")}
            np.savez(buf, cams=maps.cams, scales=maps.scales, grid=np.asarray(maps.grid), **extra)
            from ..fileio import atomic_write_bytes

            atomic_write_bytes(path, buf.getvalue())

    def class_maps(self, index: int, config: PipelineConfig, image: Callable[[], np.ndarray],
                   names: Sequence[str]) -> np.ndarray:
        """(C, gh, gw) maps of image ``index`` under ``config``; ``image`` is called only when DropOut
        passes must be run."""
        if config.drop_iters == 1:
            maps = self._maps[index] if config.saliency == self.base.saliency else self._other[(index, config.saliency)]
            return maps.class_maps(config.layer, config.heads_tuple())
        key = trial_key(index, config)
        if key not in self._dropout:
            bb = self.seg.backbone
            pixels = bb.preprocess([image()], self.seg.image_size(config))
            self._dropout[key] = self.seg.class_grid_maps(pixels, self.seg.encode(pixels, config), [list(names)], config)[0]
        return self._dropout[key]

