"""The ``contrast`` reward: a label-free reward that ranks configurations, beside the paper's.

Why another reward. The paper's reward (:mod:`pnpovss.reward`) asks only whether CLIP recognises a
class better in the image masked by that class's (independently thresholded) map than in a blank
image. It never asks what the mask *left out*, nothing stops a mask from covering other objects,
and its masks are not what the pipeline outputs (the segmentation is the argmax over classes and
background after blur and CRF). On the toy world it ranks configurations poorly (Spearman with true
mIoU about 0.3 among usable ones, ``search/runs/toyworld``).

``contrast`` judges the pipeline's own output. For a trial configuration each image is segmented as
``segment`` would (its class maps through the configured threshold, background, blur and CRF; the
CRF is most of a trial's cost, about 70 ms of a toy image's 100 ms, but judging the segmentation
without it misranked the good attention configurations on development seed 1), and each labelled
class c is scored region against complement:

    log p(c | image inside c's segment) - log p(c | image outside c's segment)

with p softmaxed over the dataset's full class list (image-level labels only, as the paper's). The
class should be recognised inside its segment and not outside it: a segment that misses part of
the object leaves it recognisable outside (penalised); one that spreads over other objects is
recognised as them inside and, covering everything, leaves a blank outside, which CLIP does not call
c either; an empty segment scores log p(c | blank) - log p(c | image), capped at 0 (it never gains). Log
probabilities grade the answer instead of counting wins. The image's reward is the mean over its
classes and a configuration's reward the sum over images (like the paper's).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .reward import ClipScorer

CONTRAST = "contrast"


def segment_masks(labels: np.ndarray, rows: Sequence[int], background: bool, size: int) -> np.ndarray:
    """(H, W) label map of :func:`~pnpovss.postprocess.postprocess` -> (len(rows), size, size) bool
    masks of the caption classes ``rows`` (label ``row + 1`` with a background channel), resized like
    the CLIP input (squashed to a square)."""
    from .postprocess import upsample

    offset = 1 if background else 0
    masks = np.stack([labels == r + offset for r in rows]).astype(np.float32)
    return upsample(masks, (size, size)) >= 0.5


def contrast_reward(scorer: ClipScorer, inside: torch.Tensor, outside: torch.Tensor, own: Sequence[int],
                    all_text: torch.Tensor) -> float:
    """Mean over the image's classes of log p(c | inside) - log p(c | outside).

    ``inside`` / ``outside``: (C, D) embeddings of the image masked by each labelled class's segment
    and by its complement; ``own``: each class's row in ``all_text`` (K, D), the dataset's class names."""
    own_idx = torch.as_tensor(list(own), dtype=torch.long)
    rows = torch.arange(len(own_idx))
    log_in = torch.log_softmax(scorer.logit_scale * inside @ all_text.T, dim=-1)[rows, own_idx]
    log_out = torch.log_softmax(scorer.logit_scale * outside @ all_text.T, dim=-1)[rows, own_idx]
    gap = log_in - log_out
    # An empty segment (its inside is the blank image) never gains: where another class dominates the
    # whole image, log p(c | image) can sit far below log p(c | blank), which would reward dropping c.
    empty = (inside == scorer.blank_embedding()[None]).all(dim=1)
    gap = torch.where(empty, gap.clamp(max=0), gap)
    return float(gap.double().mean())


def image_contrast(scorer: ClipScorer, image_key: Any, image: torch.Tensor, masks: np.ndarray, own: Sequence[int],
                   all_text: torch.Tensor) -> float:
    """:func:`contrast_reward` of one image from its (C, S, S) bool class masks (memoised embeddings;
    a full mask's complement is exactly the blank image)."""
    inside = scorer.masked_embeddings(image_key, image, masks)
    outside = scorer.masked_embeddings(image_key, image, ~masks)
    return contrast_reward(scorer, inside, outside, own, all_text)


__all__ = ["CONTRAST", "contrast_reward", "image_contrast", "segment_masks"]
