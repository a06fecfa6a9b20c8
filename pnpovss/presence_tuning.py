"""Tuning the class-presence stage with image-level labels only (``pnpovss tune --reward tags``).

The paper tunes its hyper-parameters with the weak supervision of image-level labels (which
classes an image holds, never where). Those labels are exactly what the presence stage must
predict, so its parameters are searched by the tagging quality they give: per image, the F1 of the
kept classes (the dataset's whole vocabulary as candidates) against the image's labels (1 when both
are empty); a configuration scores the sum over images. The ITM scores (and CLIP's second opinion,
when the configuration asks for one) do not depend on the searched values, so they are computed
once per image and every trial is a comparison.
Same search loop, trace, resume and selection as the CLIP reward (:func:`pnpovss.search.run_search`).
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

import numpy as np

from .datasets.base import SegDataset
from .distributed import DistContext
from .errors import PnpOvssError
from .metrics import tag_counts
from .pipeline import Segmenter
from .presence import caption_fits, clip_opinion, select_classes
from .search.space import read_space

PRESENCE_PARAMS = ("presence_threshold", "presence_clip_ratio", "presence_confident")
"""Pipeline fields the tagging objective sees."""
DEFAULT_PRESENCE_SPACE: dict[str, Any] = read_space("presence")
"""The named space ``presence`` (``pnpovss/search/spaces/presence.json``)."""


def image_f1(kept: Sequence[int], labels: Sequence[int]) -> float:
    """Tag F1 of one image: 2 TP / (2 TP + FP + FN), 1.0 when nothing is present and nothing kept."""
    tp, fp, fn = (int(v) for v in tag_counts(kept, labels)[:3])
    return 1.0 if tp + fp + fn == 0 else 2.0 * tp / (2 * tp + fp + fn)


class PresenceEvaluator:
    """Per-image tag F1 of a presence configuration over a fixed list of images (this process's
    shard), with the vocabulary's ITM scores of each image computed once."""

    rewards = ("tags",)
    columns = rewards
    """Per-image columns recorded in the trace (no statistics beside the reward)."""

    def __init__(self, segmenter: Segmenter, dataset: SegDataset, indices: Sequence[int], *,
                 dist: DistContext | None = None) -> None:
        self.seg, self.dataset = segmenter, dataset
        self.indices = list(indices)
        self.dist = dist or DistContext()
        self.base = segmenter.config.replace(**dataset.pipeline_settings())
        self.vocab = list(dataset.foreground_ids)
        self._scores: dict[int, tuple[np.ndarray, list[int], list[float] | None]] = {}
        self.progress = True

    def build(self, progress: bool = True) -> None:
        from tqdm import tqdm

        names = [self.dataset.classes[c] for c in self.vocab]
        scorer = self.seg.clip_scorer(self.base)  # the second opinion's CLIP, when the config names one
        for i in tqdm(self.dist.shard(self.indices), unit="img", desc="presence scores",
                      disable=not (progress and self.dist.is_main), file=sys.stderr):
            sample = self.dataset[i]
            scores = self.seg.detect_classes(sample.image, names, background=self.base.background,
                                             presence_clip_ratio=0.0).scores
            opinion = clip_opinion(scorer, sample.image, names).tolist() if scorer is not None else None
            self._scores[i] = (np.asarray(scores), self.dataset.image_labels(sample.label), opinion)

    def per_image(self, params: Mapping[str, Any]) -> np.ndarray:
        """(n_images, 1) tag F1 per image (all processes; each row has one contributor)."""
        if not self._scores:
            self.build(self.progress)
        cfg = self.base.replace(**params)
        fits = caption_fits(self.seg.backbone, cfg.prompt)
        names = [self.dataset.classes[c] for c in self.vocab]
        out = np.zeros((len(self.indices), 1), dtype=np.float64)
        for row, i in enumerate(self.indices):
            if i not in self._scores:
                continue
            scores, labels, opinion = self._scores[i]
            if cfg.presence_clip_ratio > 0 and opinion is None:
                raise PnpOvssError("presence_clip_ratio > 0 needs a CLIP model: set presence_clip_model "
                                   "(--set presence_clip_model=NAME), or leave presence_clip_ratio out of the space")
            kept, _ = select_classes(names, scores.tolist(), cfg.presence_threshold, background=cfg.background,
                                     fits=fits, clip=opinion, clip_ratio=cfg.presence_clip_ratio,
                                     confident=cfg.presence_confident)
            out[row, 0] = image_f1([self.vocab[names.index(n)] for n in kept], labels)
        return self.dist.all_reduce_sum(out)

    def run_info(self) -> dict[str, Any]:
        return {"objective": "per-image tag F1 of the presence stage over the dataset vocabulary"}


__all__ = ["DEFAULT_PRESENCE_SPACE", "PRESENCE_PARAMS", "PresenceEvaluator", "image_f1"]
