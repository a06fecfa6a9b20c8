"""Class presence: which of the candidate classes are in the image at all (before PnP-OVSS step 1).

Why: PnP-OVSS gives every class named in its caption some pixels, so the paper must be told which
classes an image holds (ground-truth labels, later GPT-4o's lists). A user types candidates, or
passes a dataset's whole vocabulary; this stage turns that list into the caption, training-free:

1. **Score** every candidate with the backbone's own ITM head: the match probability (softmax of
   its two logits) of a caption naming only that class (``prompt + name``), against the image
   tokens the pipeline encodes anyway (pass 0, cached by :class:`~pnpovss.Segmenter`). Captions
   go in chunks; on BLIP the chunk's queries attend to one copy of the image's keys and values
   (``blip.shared_image_attention``), projected once per chunk, not once per candidate.
2. **Select** the candidates whose probability reaches ``presence_threshold``. Optionally
   (``presence_clip_ratio``) CLIP gives a second opinion on the uncertain ones, those below
   ``presence_confident``: shown the whole image, it must give such a candidate at least that
   fraction of its best candidate's probability (softmax over the candidates), else it is dropped.
   A relative rule, so it reads the same for 6 or 150 candidates. At most as many as the caption
   can hold (the best-scoring ones, with a note); none passing means an all-background
   image, or, without a background channel, the best-scoring class (every pixel needs a label).
3. **Recurrent check** (optional, ``presence_rounds``; CLIP-as-RNN's idea with the tuning reward's
   machinery): segment with the kept classes, ask CLIP whether each class's region looks more like
   that class than a blank image does (softmax over all candidates), drop those it does not
   recognise and segment again, until the set stops changing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .backbones.base import Backbone
from .config import PipelineConfig

CHUNK_SIZE = 256
"""Captions per ITM forward when scoring candidates: bounds memory for large vocabularies; each chunk
projects the image keys/values once (BLIP-large: ~22 GFLOP), so chunks are large."""


@dataclass
class Presence:
    """The presence decision for one image: every candidate's score and which were kept."""

    candidates: list[str]
    scores: list[float]
    """ITM match probability of each candidate (same order)."""
    kept: list[str]
    """Candidates in the caption, in candidate order."""
    notes: list[str] = field(default_factory=list)
    """Why the selection differs from the plain threshold (caption capacity, no class present...)."""
    dropped_by_check: list[list[str]] = field(default_factory=list)
    """Classes the recurrent check removed, one list per round that removed any."""
    clip_scores: list[float] | None = None
    """CLIP's whole-image probability of each candidate (softmax over the candidates), when its
    second opinion was asked (``presence_clip_ratio`` > 0)."""

    def to_json(self) -> dict[str, dict[str, float | bool]]:
        out: dict[str, dict[str, float | bool]] = {}
        for i, (c, s) in enumerate(zip(self.candidates, self.scores)):
            out[c] = {"score": round(float(s), 6), "kept": c in self.kept}
            if self.clip_scores is not None:
                out[c]["clip"] = round(float(self.clip_scores[i]), 6)
        return out


def presence_scores(backbone: Backbone, image_embeds: torch.Tensor, classes: Sequence[str], prompt: str,
                    chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """(C,) ITM match probability of ``prompt + name`` for each class, for one image (batch-1 tokens)."""
    out = []
    for start in range(0, len(classes), chunk_size):
        chunk = [[name] for name in classes[start : start + chunk_size]]
        out.append(backbone.match_probability(image_embeds, backbone.build_text(prompt, chunk)))
    return torch.cat(out).cpu().numpy().astype(np.float64)


def clip_opinion(scorer, rgb: np.ndarray, candidates: Sequence[str]) -> np.ndarray:
    """(C,) CLIP's zero-shot probability of each candidate for the whole image: softmax over the
    candidates at the model's own learned logit scale (100 for OpenAI's CLIP; the reward's fixed
    scale would be far sharper on a model trained to another one, such as the toy CLIP's 17.8).

    ``scorer`` is a :class:`pnpovss.reward.ClipScorer`."""
    text = scorer.text_embeddings([[c] for c in candidates])
    image = scorer.embed(scorer.image_tensor(rgb)[None])
    learned = getattr(scorer.clip.model, "logit_scale", None)
    scale = float(learned.detach().exp()) if isinstance(learned, torch.Tensor) else scorer.logit_scale
    return torch.softmax(scale * image @ text.T, dim=-1)[0].cpu().numpy().astype(np.float64)


def second_opinion(classes: Sequence[str], scores: Sequence[float], passing: list[int], clip: Sequence[float],
                   ratio: float, confident: float) -> tuple[list[int], list[str]]:
    """``passing`` without the uncertain candidates (ITM score below ``confident``) that CLIP gives
    less than ``ratio`` times its best candidate's probability; and a note naming them."""
    floor = ratio * max(clip)
    vetoed = [i for i in passing if scores[i] < confident and clip[i] < floor]
    if not vetoed:
        return passing, []
    names = ", ".join(f"{classes[i]} (ITM {scores[i]:.3f}, CLIP {clip[i] / max(clip):.2g} of its best)" for i in vetoed)
    return [i for i in passing if i not in vetoed], [
        f"CLIP's second opinion dropped {names}: below presence_confident {confident:g} and under "
        f"presence_clip_ratio {ratio:g} of CLIP's best candidate"]


def select_classes(classes: Sequence[str], scores: Sequence[float], threshold: float, *, background: bool,
                   fits: Callable[[list[str]], bool] = lambda _names: True, clip: Sequence[float] | None = None,
                   clip_ratio: float = 0.0, confident: float = 1.0) -> tuple[list[str], list[str]]:
    """(kept classes in candidate order, notes). ``fits(names)`` says whether a caption can hold them;
    ``clip``: CLIP's probabilities of the candidates, for the second opinion (:func:`second_opinion`)."""
    order = sorted(range(len(classes)), key=lambda i: -scores[i])
    passing = [i for i in order if scores[i] >= threshold]
    notes = []
    if clip is not None and clip_ratio > 0:
        passing, notes = second_opinion(classes, scores, passing, clip, clip_ratio, confident)
    if not passing:
        if background:
            return [], notes + [f"no candidate passed presence_threshold {threshold:g}: the image is all background"]
        passing = order[:1]
        notes.append(f"no candidate passed presence_threshold {threshold:g}; kept the best-scoring "
                     f"{classes[order[0]]!r} (no background channel: every pixel needs a label)")
    chosen: list[int] = []
    for i in passing:
        if fits([classes[j] for j in sorted(chosen + [i])]):
            chosen.append(i)
    if len(chosen) < len(passing):
        left = [classes[i] for i in passing if i not in chosen]
        notes.append(f"{len(left)} present class(es) did not fit into the caption and were left out: "
                     f"{', '.join(left)} (kept the best-scoring ones)")
    return [classes[i] for i in sorted(chosen)], notes


def detect(backbone: Backbone, image_embeds: torch.Tensor, classes: Sequence[str], config: PipelineConfig,
           chunk_size: int = CHUNK_SIZE, *, scorer=None, rgb: np.ndarray | None = None) -> Presence:
    """Steps 1-2 for one image; ``scorer`` (a :class:`pnpovss.reward.ClipScorer`) and ``rgb`` are
    needed when ``config.presence_clip_ratio`` > 0."""
    scores = presence_scores(backbone, image_embeds, classes, config.prompt, chunk_size)
    clip = None
    if config.presence_clip_ratio > 0:
        if scorer is None or rgb is None:
            raise ValueError("presence_clip_ratio > 0 needs the CLIP scorer and the image")
        clip = clip_opinion(scorer, rgb, classes).tolist()
    kept, notes = select_classes(list(classes), scores.tolist(), config.presence_threshold,
                                 background=config.background, fits=caption_fits(backbone, config.prompt),
                                 clip=clip, clip_ratio=config.presence_clip_ratio,
                                 confident=config.presence_confident)
    return Presence(list(classes), scores.tolist(), kept, notes, clip_scores=clip)


def caption_fits(backbone: Backbone, prompt: str) -> Callable[[list[str]], bool]:
    """``fits(names)``: does the caption naming ``names`` stay within the model's text length?"""
    return lambda names: backbone.caption_length(prompt, names) <= backbone.max_text_tokens


def recognised(scorer, rgb: np.ndarray, labels: np.ndarray, label_names: Sequence[str], kept: Sequence[str],
               candidates: Sequence[str]) -> list[str]:
    """Step 3's test: the kept classes whose label region CLIP recognises, i.e. p(c | image masked to
    c's region) > p(c | blank image), softmax over every candidate. An empty region is not recognised.

    ``scorer`` is a :class:`pnpovss.reward.ClipScorer`."""
    size = scorer.clip.image_size
    small = np.asarray(Image.fromarray(labels.astype(np.int32)).resize((size, size), Image.Resampling.NEAREST))
    masks = np.stack([small == label_names.index(c) for c in kept])
    image = scorer.image_tensor(rgb)
    text = scorer.text_embeddings([[c] for c in candidates])
    own = torch.as_tensor([list(candidates).index(c) for c in kept])
    p_masked = scorer.probabilities(scorer.masked_embeddings(("presence", hashlib.sha1(rgb.tobytes()).hexdigest()), image, masks), text)
    p_blank = scorer.probabilities(scorer.blank_embedding()[None], text)[0]
    rows = torch.arange(len(kept))
    ok = (p_masked[rows, own] > p_blank[own]) & torch.from_numpy(masks.reshape(len(kept), -1).any(axis=1))
    return [c for c, good in zip(kept, ok.tolist()) if good]


def recurrent_check(scorer, results: list, found: Sequence[Presence], config: PipelineConfig,
                    resegment: Callable[[list[int]], list]) -> list:
    """Step 3 for a batch: up to ``config.presence_rounds`` rounds of dropping the kept classes
    whose region CLIP does not recognise (:func:`recognised`), each round re-segmenting only the
    images whose set shrank (``resegment(indices)`` -> their new results, segmented with
    ``found[i].kept``), until no set changes. Updates ``found`` (``kept``, ``dropped_by_check``,
    ``notes``) and returns the final results, each carrying its presence decision.

    ``results`` are :class:`~pnpovss.result.SegmentationResult` s; ``scorer`` a
    :class:`pnpovss.reward.ClipScorer`."""
    results = list(results)
    for _ in range(config.presence_rounds):
        redo = []
        for i, (res, pres) in enumerate(zip(results, found)):
            if not pres.kept:
                continue
            seen = recognised(scorer, res.image, res.labels, res.classes, pres.kept, pres.candidates)
            if len(seen) < len(pres.kept):
                gone = [c for c in pres.kept if c not in seen]
                pres.dropped_by_check.append(gone)
                pres.notes.append(f"recurrent check round {len(pres.dropped_by_check)}: CLIP did not recognise "
                                  f"the region of {', '.join(gone)}; dropped")
                if not seen and not config.background:  # every pixel needs a label: keep the best
                    seen = [max(pres.kept, key=lambda c: pres.scores[pres.candidates.index(c)])]
                pres.kept = seen
                redo.append(i)
        if not redo:
            break
        for i, res in zip(redo, resegment(redo)):
            results[i] = res
    for res, pres in zip(results, found):
        res.presence = pres
    return results


__all__ = ["CHUNK_SIZE", "Presence", "caption_fits", "clip_opinion", "detect", "presence_scores", "recognised", "recurrent_check",
           "second_opinion", "select_classes"]
