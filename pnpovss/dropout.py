"""Salience DropOut (PnP-OVSS step 3): iteratively hide the patches the model already attends to
most, so later passes reveal the rest of each object.

Pass t computes class maps with the current image; after every pass but the last, the k most
salient patches not yet dropped (saliency summed over the caption's classes) are dropped. Dropped
patches are zero in all later maps. In the paper's mode (``reencode``) dropped patches are painted
with the mean colour (0 in the normalised tensor) and the image is encoded again; ``attention`` mode
instead hides their keys from the cross-attention, which needs only one vision pass.

Where this differs from the reference code on purpose (each point a bug or an accident there):

* Saliency for the patch choice: the reference sums the token maps over every word piece from the
  first class token to ``[SEP]`` (a class of k pieces counts k times, and the separator, which
  names no class, counts too). We sum each class's *mean* over its pieces, so every class weighs
  the same. ``drop_saliency="reference"`` restores the reference's sum (an option, measured in
  ``bench/toyworld.py``).
* Re-picking: the reference zeroes the patches it dropped before in its ranking, so with ties at 0
  (or a small map) it can pick an already-dropped patch again and drop fewer new ones. We rank
  only patches not yet dropped.
* Halving: the reference drops ``int(P / 2^(t+1))`` patches after pass t (half the grid, then a
  quarter...) counted from the full grid; ``halving=True`` drops half of the patches still
  remaining, which is the same count as long as no patch is picked twice.
* Combination: the sum of the passes' raw maps with pass 0 counted twice (the segmentation script);
  ``pass_combine="minmax"`` min-max normalises each pass first (the CVPR-era evaluation scripts).
  There the dropped patches are zeroed *after* the min-max (``zero_dropped="after_minmax"``); we
  zero them first, so a dropped patch cannot hold a pass's maximum and squash the rest. The VOC
  script combines pass 0 alone (``combine_passes="first"``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import torch

from .backbones.base import Backbone, TextBatch
from .config import PipelineConfig
from .gradcam import pool_classes, token_maps


def select_patches(saliency: torch.Tensor, dropped: torch.Tensor, k: int | None) -> torch.Tensor:
    """Newly dropped patches: per row the ``k`` (or, for ``k=None``, half the remaining) most salient
    patches among those not yet dropped. Ties go to the lower patch index (stable sort)."""
    remaining = (~dropped).sum(dim=1)
    count = remaining // 2 if k is None else remaining.clamp(max=k)
    score = saliency.masked_fill(dropped, float("-inf"))
    order = torch.argsort(score, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return rank < count[:, None]


def reference_saliency(maps: torch.Tensor, text: TextBatch) -> torch.Tensor:
    """(B, T, P) token maps -> (B, P): the sum over every class word piece and the closing
    separator token (the reference sums its token maps from the first class piece to [SEP])."""
    rows = []
    for b, classes in enumerate(text.class_tokens):
        positions = [p for piece in classes for p in piece] + [int(text.attention_mask[b].sum()) - 1]
        rows.append(maps[b, positions].sum(dim=0))
    return torch.stack(rows)


def minmax_rows(maps: torch.Tensor) -> torch.Tensor:
    """(C, P) -> each row min-max normalised to [0, 1]; a constant row becomes 0."""
    lo, hi = maps.min(dim=1, keepdim=True).values, maps.max(dim=1, keepdim=True).values
    span = hi - lo
    return torch.where(span > 1e-12, (maps - lo) / span.clamp_min(1e-12), torch.zeros_like(maps))


def mask_patches(pixel_values: torch.Tensor, dropped: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Set the pixels of dropped patches to 0 (= the mean colour after normalisation)."""
    b, _, h, w = pixel_values.shape
    gh, gw = grid
    keep = (~dropped).view(b, 1, gh, gw).to(pixel_values.dtype)
    keep = keep.repeat_interleave(h // gh, dim=2).repeat_interleave(w // gw, dim=3)
    return pixel_values * keep


@dataclass
class DropoutMaps:
    class_maps: list[torch.Tensor]
    """Per image, the combined (C, gh, gw) class maps."""
    dropped: list[torch.Tensor]
    """Cumulative (B, P) dropped-patch masks after each pass (len = passes - 1)."""
    passes: list[list[torch.Tensor]] = field(default_factory=list)
    """Per pass, per image the (C, gh, gw) class maps of that pass alone (dropped patches zeroed,
    before weighting): what the combination sums, kept so figures can show each pass."""


def salience_dropout(
    backbone: Backbone,
    pixel_values: torch.Tensor,
    image_embeds: torch.Tensor,
    text: TextBatch,
    config: PipelineConfig,
    vision_autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    text_autocast: Callable[[], ContextManager] = contextlib.nullcontext,
) -> DropoutMaps:
    """Run the ``config.drop_iters`` passes and combine their class maps. The two contexts wrap
    the re-encoding passes and the text-side forward/backward (reduced precision, see
    :class:`~pnpovss.precision.Precision`); the maps themselves are combined in fp32."""
    grid = backbone.grid(pixel_values.shape[-1])
    b, p = pixel_values.shape[0], grid[0] * grid[1]
    heads = config.heads_tuple()
    backbone.check_config(config, pixel_values.shape[-1])
    dropped = torch.zeros(b, p, dtype=torch.bool, device=pixel_values.device)
    raw: list[list[torch.Tensor]] = []  # per pass, per image (C, P), dropped patches not yet zeroed
    keeps: list[torch.Tensor] = []  # per pass, (B, P) patches not dropped before it
    history = []
    passes = []
    embeds, key_mask = image_embeds, None
    # combine_passes="first": the later passes could not change the combined map
    for t in range(1 if config.combine_passes == "first" else config.drop_iters):
        if t:
            if config.drop_mode == "reencode":
                with vision_autocast():
                    embeds = backbone.encode_image(mask_patches(pixel_values, dropped, grid))
            else:
                cls_key = torch.ones(b, 1, dtype=torch.long, device=dropped.device)
                key_mask = torch.cat([cls_key, (~dropped).long()], dim=1)
        with text_autocast():
            maps = token_maps(backbone, embeds, text, config.layer, heads, config.saliency, key_mask)
        raw.append(pool_classes(maps, text.class_tokens))
        keeps.append(~dropped)
        maps = maps * keeps[-1][:, None, :].to(maps.dtype)
        per_class = [m * keeps[-1][i].to(m.dtype) for i, m in enumerate(raw[-1])]
        passes.append([m.view(-1, *grid) for m in per_class])
        if t < config.drop_iters - 1 and config.combine_passes == "all":
            if config.drop_saliency == "reference":
                saliency = reference_saliency(maps, text)
            else:
                saliency = torch.stack([m.sum(dim=0) for m in per_class])
            dropped = dropped | select_patches(saliency, dropped, None if config.halving else config.drop_k)
            history.append(dropped.clone())
    combined = [combine_pass_maps([r[i] for r in raw], [k[i] for k in keeps], config) for i in range(b)]
    return DropoutMaps([m.view(-1, *grid) for m in combined], history, passes)


def combine_pass_maps(raw: list[torch.Tensor], keep: list[torch.Tensor], config: PipelineConfig) -> torch.Tensor:
    """One image's passes -> its combined (C, P) class maps. ``raw[t]``: pass t's (C, P) class maps
    with nothing zeroed; ``keep[t]``: (P,) bool, the patches not dropped before pass t. Pass 0 counts
    twice under ``count_first_twice``; ``combine_passes="first"`` uses pass 0 alone; under
    ``pass_combine="minmax"`` each pass is min-max normalised before (``zero_dropped=
    "before_minmax"``) or after (``"after_minmax"``, the reference) its dropped patches are zeroed."""
    if config.combine_passes == "first":
        raw, keep = raw[:1], keep[:1]
    total = None
    for t, (m, k) in enumerate(zip(raw, keep)):
        k = k.to(m.dtype)
        if config.pass_combine == "sum":
            term = m * k
        elif config.zero_dropped == "before_minmax":
            term = minmax_rows(m * k)
        else:
            term = minmax_rows(m) * k
        total = (2.0 if config.count_first_twice else 1.0) * term if total is None else total + term
    assert total is not None, "no pass"
    return total
