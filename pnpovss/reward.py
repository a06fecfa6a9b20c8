"""The label-free reward of PnP-OVSS tuning: does CLIP recognise a class better in the image
masked by that class's map than in a blank image?

For one image, each of its labelled classes c, and a configuration (layer, head, threshold...):

1. binarise c's patch-grid map at the threshold t (per-class min-max first, as the pipeline does);
2. resize to CLIP's input size, blur with sigma = 0.04 x size, min-max, and binarise again. The
   ``reference`` mask rule (default; the authors' ``Dataset.py`` / ``Dataset_coco_textloc.py``)
   cuts again at the same t, so a lower threshold also grows the mask around what it keeps (a
   one-patch region of a 24 x 24 grid covers about 21 / 13 / 6 patches at t = 0.05 / 0.15 / 0.45);
   the ``half`` rule (an option, this package's earlier default) cuts at 0.5 of the blurred peak
   whatever t is (large regions keep a smoothed outline, a one-patch region stays about 5). The
   reference resizes with skimage's bicubic; we use the pipeline's bilinear upsampling;
3. masked image = the image inside the mask, CLIP's mean colour elsewhere (0 after normalisation);
   blank image = mean colour everywhere (one CLIP forward for the whole run);
4. CLIP scores both against class names with a softmax at logit scale 100.

``binary`` (the paper's reward): softmax over the image's own class names; the image scores the
number of classes with p(c | masked) > p(c | blank). Weakness: with a single label the softmax is
over one name, both probabilities are 1 and the image always scores 0, so single-object images
(most of VOC) carry no signal. ``continuous``: softmax over the dataset's full class list; the
image scores the mean over its classes of p(c | masked) - p(c | blank), which single-label images
inform too. A configuration's reward is the sum over images of either. A class whose mask is empty
has masked = blank: an exact tie (no win, zero gain), never decided by rounding noise.

CLIP is open_clip: a model name + pretrained tag (default ``ViT-L-14-336`` / ``openai``, as the
reference), a model name + local weights file, an open_clip ``local-dir`` directory
(``open_clip_config.json`` + weights), or ``toy`` (the toy world's CLIP).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .defaults import DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED
from .errors import PnpOvssError
from .postprocess import blur, threshold_maps, upsample
from .clip_dir import load_clip_dir

LOGIT_SCALE = 100.0
MASK_SIGMA = 0.04
REWARDS = ("binary", "continuous")
MASK_RULES = ("reference", "half")
"""How the blurred reward mask is cut again (step 2 of the module doc); the first is the default."""
REWARD_VERSION = 3
"""Bumped when reward values change for the same inputs; a tune run recorded with another version
is not resumed (its trace would mix two definitions). 2: empty masks are exact ties. 3: the mask
rule (default ``reference``) and the reference's blur border (scipy ``reflect``)."""
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_ALIASES: dict[str, str] = {"toy": os.path.join(os.path.dirname(__file__), "toyworld", "weights", "clip")}
"""Other names of CLIP checkpoints for :func:`load_clip`: ``toy`` is the toy world's CLIP shipped in the package."""


@dataclass
class ClipModel:
    """An open_clip model with what the reward needs to feed it tensors directly."""

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


def _dir_config(path: str) -> dict:
    """The ``open_clip_config.json`` of a CLIP directory (one-line error when absent/broken)."""
    cfg_path = os.path.join(path, "open_clip_config.json")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise PnpOvssError(f"CLIP directory {path!r} has no open_clip_config.json; pass an open_clip local-dir "
                           "checkpoint, a model name + --clip-pretrained, or 'toy'") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PnpOvssError(f"{cfg_path} is not readable JSON ({_first_line(exc)})") from None
    if not isinstance(cfg, dict) or "model_cfg" not in cfg:
        raise PnpOvssError(f"{cfg_path} has no 'model_cfg'; it is not an open_clip checkpoint directory")
    return cfg


def load_clip(name: str = DEFAULT_CLIP, pretrained: str | None = DEFAULT_CLIP_PRETRAINED,
              device: str | torch.device = "cpu") -> ClipModel:
    """``toy``, an open_clip local directory, or an open_clip model name with a pretrained tag or
    weights file. Any failure is one line naming what was tried."""
    try:
        import open_clip
    except ImportError:  # pragma: no cover - install problem
        raise PnpOvssError("open_clip is not installed; pip install open_clip_torch") from None
    source = name
    path = CLIP_ALIASES.get(name, name)
    toy_cfg: dict = {}
    try:
        if os.path.isdir(path) and "preprocess_cfg" not in _dir_config(path):
            # the plain directory format (pnpovss.clip_dir; the toy CLIP's): model_cfg + image_size/mean/std
            toy_cfg = _dir_config(path)
            model, _, tokenizer = load_clip_dir(path)
        elif os.path.isdir(path):
            model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{path}")
            tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
        else:
            model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained or None)
            tokenizer = open_clip.get_tokenizer(name)
            source = f"{name}/{pretrained}" if pretrained else name
    except PnpOvssError:
        raise
    except ImportError as exc:
        raise PnpOvssError(f"could not load CLIP {name!r}: {_first_line(exc)}") from None
    except Exception as exc:  # download failures, bad names, bad files: all mean "cannot get it"
        raise PnpOvssError(
            f"could not load CLIP {name!r} (pretrained {pretrained!r}): {_first_line(exc)}; without network "
            "pass a local open_clip directory or weights file, or 'toy' on the toy world"
        ) from None
    cfg = dict(open_clip.get_model_preprocess_cfg(model))
    for key, toy_key in (("size", "image_size"), ("mean", "mean"), ("std", "std")):
        if toy_key in toy_cfg:
            cfg[key] = toy_cfg[toy_key]
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean = tuple(float(v) for v in cfg.get("mean", OPENAI_MEAN))
    std = tuple(float(v) for v in cfg.get("std", OPENAI_STD))
    model = model.to(device).eval().requires_grad_(False)
    return ClipModel(model, tokenizer, size, mean, std, source)  # type: ignore[arg-type]


def reward_masks(grid_maps: np.ndarray, threshold: float, size: int, sigma_fraction: float = MASK_SIGMA,
                 rule: str = MASK_RULES[0]) -> np.ndarray:
    """(C, gh, gw) class maps -> (C, size, size) bool masks (steps 1-2 of the module doc).

    ``reference``: the blurred, min-max normalised mask is cut at ``> threshold`` as the reference
    does; ``half``: at ``>= 0.5``. An empty mask stays empty under both rules."""
    if rule not in MASK_RULES:
        raise PnpOvssError(f"reward mask rule must be one of {', '.join(MASK_RULES)}, got {rule!r}")
    kept = (threshold_maps(grid_maps, threshold) > 0).astype(np.float32)
    blurred = blur(upsample(kept, (size, size)), sigma_fraction)
    return blurred > threshold if rule == "reference" else blurred >= 0.5


class ClipScorer:
    """CLIP probabilities of masked images, with the caches that make a search trial cheap: text
    embeddings per class list, the blank image's embedding, each image's CLIP tensor, and the
    embeddings of each image's set of masks (a trial repeating an earlier mask set costs nothing).

    Each image's masks are always embedded as one batch, so a result never depends on what happened
    to be cached (bit-identical rewards after a resume or with another process layout).
    """

    def __init__(self, clip: ClipModel, template: str = "{}", logit_scale: float = LOGIT_SCALE,
                 memo_size: int = 20000) -> None:
        if "{}" not in template:
            raise PnpOvssError(f"the CLIP prompt template must contain '{{}}', got {template!r}")
        self.clip = clip
        self.template = template
        self.logit_scale = logit_scale
        self._text: dict[tuple, torch.Tensor] = {}
        self._blank: torch.Tensor | None = None
        self._memo: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._memo_size = memo_size

    @torch.no_grad()
    def text_embeddings(self, synonyms: Sequence[Sequence[str]]) -> torch.Tensor:
        """(C, D) unit vectors; a class with synonyms gets the normalised mean of theirs."""
        key = tuple(tuple(s) for s in synonyms)
        if key not in self._text:
            flat = [self.template.format(n) for names in key for n in names]
            tokens = self.clip.tokenizer(flat).to(self.clip.device)
            emb = torch.nn.functional.normalize(self.clip.model.encode_text(tokens).float(), dim=-1)
            rows, start = [], 0
            for names in key:
                rows.append(emb[start : start + len(names)].mean(dim=0))
                start += len(names)
            self._text[key] = torch.nn.functional.normalize(torch.stack(rows), dim=-1)
        return self._text[key]

    def image_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """(3, S, S) normalised CLIP input. The image is squashed to a square (bicubic) like the
        BLIP input, so the patch-grid maps line up with it pixel for pixel."""
        s = self.clip.image_size
        pil = Image.fromarray(rgb).resize((s, s), Image.Resampling.BICUBIC)
        x = np.asarray(pil, dtype=np.float32) / 255.0
        x = (x - np.asarray(self.clip.mean, np.float32)) / np.asarray(self.clip.std, np.float32)
        return torch.from_numpy(x.transpose(2, 0, 1).copy())

    @torch.no_grad()
    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.clip.model.encode_image(batch.to(self.clip.device))
        return torch.nn.functional.normalize(out.float(), dim=-1)

    def blank_embedding(self) -> torch.Tensor:
        if self._blank is None:
            self._blank = self.embed(torch.zeros(1, 3, self.clip.image_size, self.clip.image_size))[0]
        return self._blank

    def masked_embeddings(self, image_key: Any, image: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
        """(C, D) embeddings of ``image`` masked by each of ``masks`` (C, S, S), memoised."""
        digest = hashlib.sha1(np.packbits(masks).tobytes() + str(masks.shape).encode()).hexdigest()
        key = (image_key, digest)
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
            return hit
        batch = image[None] * torch.from_numpy(masks[:, None].astype(np.float32))
        emb = self.embed(batch)
        # An empty mask makes the masked image the blank image: use the blank's own embedding (the
        # same pixels embedded in another batch differ in the last bits, and the strict
        # p(masked) > p(blank) test would count that noise as wins for about half such classes);
        # image_rewards scores such rows as exact ties.
        empty = torch.from_numpy(~masks.reshape(len(masks), -1).any(axis=1))
        emb[empty] = self.blank_embedding()
        self._memo[key] = emb
        if len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return emb

    def probabilities(self, emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logit_scale * emb @ text.T, dim=-1)


def image_rewards(scorer: ClipScorer, masked: torch.Tensor, own: Sequence[int], all_text: torch.Tensor) -> tuple[int, float]:
    """(binary, continuous) reward of one image.

    ``masked``: (C, D) embeddings of the image masked by each labelled class's mask; ``own``: the
    row of each of those classes in ``all_text`` (K, D), the dataset's class-name embeddings.
    """
    own_idx = torch.as_tensor(list(own), dtype=torch.long)
    blank = scorer.blank_embedding()[None]
    mine = all_text[own_idx]
    is_blank = (masked == blank).all(dim=1)  # empty masks: a tie by definition, whatever the rounding
    p_blank = scorer.probabilities(blank, mine)[0]
    p_masked = torch.where(is_blank, p_blank, scorer.probabilities(masked, mine).diagonal())
    wins = int((p_masked > p_blank).sum())
    rows = torch.arange(len(own_idx))
    q_blank = scorer.probabilities(blank, all_text)[0, own_idx]
    q_masked = torch.where(is_blank, q_blank, scorer.probabilities(masked, all_text)[rows, own_idx])
    return wins, float((q_masked - q_blank).double().mean())
