"""The interface between the PnP-OVSS pipeline and an image-text-matching VLM.

Everything after the adapter (GradCAM, Salience DropOut, post-processing, reward, search) talks
only to :class:`Backbone`, so BLIP and BridgeTower differ only inside their adapter modules.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import PnpOvssError
from ..execution import ExecutionOptions
from ..hooks import capture_outputs

if TYPE_CHECKING:
    from ..config import PipelineConfig


@dataclass
class TextBatch:
    """Tokenised captions, one per image, and where each class's tokens sit."""

    input_ids: torch.Tensor
    """(B, T) token ids, padded."""
    attention_mask: torch.Tensor
    """(B, T) 1 for real tokens."""
    class_tokens: list[list[list[int]]]
    """``class_tokens[b][c]`` = token positions of class c in caption b (word pieces of a class)."""
    captions: list[str]

    def to(self, device: torch.device | str) -> "TextBatch":
        return TextBatch(self.input_ids.to(device), self.attention_mask.to(device), self.class_tokens, self.captions)


def caption_for(prompt: str, classes: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Build ``prompt + " ".join(classes)`` and the character span of every class in it."""
    caption = prompt
    spans = []
    for i, name in enumerate(classes):
        if i:
            caption += " "
        spans.append((len(caption), len(caption) + len(name)))
        caption += name
    return caption, spans


class Backbone(abc.ABC):
    """An image-text-matching model seen as: image -> patch embeddings; (embeddings, caption) ->
    match logit and text-to-image cross-attention probabilities of chosen layers."""

    model_type: str = ""
    model: torch.nn.Module
    tokenizer: Any
    source: str
    native_image_size: int
    patch_size: int
    num_layers: int
    """Number of cross-attention layers (valid ``layer`` values are 1..num_layers)."""
    num_heads: int
    max_text_tokens: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    pipeline_defaults: dict[str, Any] = {}
    """Pipeline options this model needs instead of the (BLIP-based) defaults, e.g. BridgeTower's
    770 px and a layer it has; applied before the model directory's preset."""

    # ----------------------------------------------------------------------------- images
    def grid(self, image_size: int) -> tuple[int, int]:
        """Patch grid (rows, cols) of a square input of ``image_size`` pixels."""
        if image_size % self.patch_size:
            raise PnpOvssError(
                f"image size {image_size} is not a multiple of the model's patch size {self.patch_size}; "
                f"use e.g. {max(1, round(image_size / self.patch_size)) * self.patch_size}"
            )
        n = image_size // self.patch_size
        return n, n

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: Sequence[np.ndarray], image_size: int) -> torch.Tensor:
        """RGB uint8 arrays -> normalised (B, 3, S, S) tensor: bicubic resize to a square, as the
        checkpoints' own processors do, then (x/255 - mean) / std."""
        self.grid(image_size)  # validates the size
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        batch = []
        for arr in images:
            pil = Image.fromarray(arr).resize((image_size, image_size), Image.Resampling.BICUBIC)
            x = (np.asarray(pil, dtype=np.float32) / 255.0 - mean) / std
            batch.append(torch.from_numpy(x.transpose(2, 0, 1).copy()))
        return torch.stack(batch).to(self.device)

    @abc.abstractmethod
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 1+P, D) image tokens, computed without autograd: GradCAM never
        needs gradients inside the vision encoder."""

    def vision_linears(self) -> list[torch.nn.Linear]:
        """The vision encoder's plain linear layers (gradient-free), which bf16 on a CPU runs with
        prepacked weights (:mod:`~pnpovss.prepacked`). No layers by default, and none while the
        encoder is compiled (the compiler packs its own)."""
        return []

    supports_compiled_vision: bool = False
    execution: ExecutionOptions = ExecutionOptions()
    """How this model's passes execute (:mod:`pnpovss.execution`): set when it is loaded, recorded
    with every result; never a :class:`PipelineConfig` field (no option changes a label)."""

    @property
    def compile_vision(self) -> bool:
        """Run the vision encoder through ``torch.compile`` (where :attr:`supports_compiled_vision`;
        set it with ``Segmenter.from_pretrained(..., compile_vision=True)``): the first pass at each
        input shape and precision compiles (tens of seconds, once per process), later ones are
        faster (bf16 on a CPU: docs/results/precision.md)."""
        return self.execution.compile_vision

    @compile_vision.setter
    def compile_vision(self, value: bool) -> None:
        self.execution = self.execution.replace(compile_vision=bool(value))

    # ----------------------------------------------------------------------------- text
    def build_text(self, prompt: str, classes_per_image: Sequence[Sequence[str]]) -> TextBatch:
        """One caption per image (``prompt`` + class names), tokenised, with each class's tokens."""
        captions, class_tokens, id_lists = [], [], []
        for classes in classes_per_image:
            caption, spans = caption_for(prompt, classes)
            ids, offsets = self._tokenize_with_offsets(caption)
            positions = []
            for name, (start, end) in zip(classes, spans):
                toks = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
                if not toks:
                    raise PnpOvssError(f"class name {name!r} produced no tokens for this model; use a different name")
                positions.append(toks)
            if len(ids) > self.max_text_tokens:
                raise PnpOvssError(
                    f"{len(classes)} classes need {len(ids)} text tokens but the model accepts at most "
                    f"{self.max_text_tokens}; pass fewer classes or shorter names"
                )
            unk = getattr(self.tokenizer, "unk_token_id", None)
            for name, toks in zip(classes, positions):
                if unk is not None and all(ids[t] == unk for t in toks):  # its map would match anything
                    raise PnpOvssError(f"class name {name!r} is unknown to this model's vocabulary (every token is "
                                       f"{self.tokenizer.unk_token}) and would match anything; use a name its vocabulary can spell")
            captions.append(caption)
            class_tokens.append(positions)
            id_lists.append(self._finalize_ids(ids))
        length = max(len(ids) for ids in id_lists)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(id_lists), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(id_lists), length), dtype=torch.long)
        for b, ids in enumerate(id_lists):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            attention_mask[b, : len(ids)] = 1
        return TextBatch(input_ids, attention_mask, class_tokens, captions).to(self.device)

    def classes_within(self, prompt: str, classes: Sequence[str], max_tokens: int) -> int:
        """How many leading ``classes`` the caption still names in full once truncated to
        ``max_tokens`` tokens, special tokens included (a tokenizer's ``truncation=True,
        max_length=max_tokens`` keeps the first ``max_tokens - 1`` and the closing separator)."""
        caption, spans = caption_for(prompt, classes)
        ids, offsets = self._tokenize_with_offsets(caption)
        if len(ids) <= max_tokens:
            return len(classes)
        for n, (start, end) in enumerate(spans):
            if any(b > a and a < end and b > start and i > max_tokens - 2 for i, (a, b) in enumerate(offsets)):
                return n
        return len(classes)

    def _tokenize_with_offsets(self, caption: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids (with special tokens) and each token's character span ((0, 0) for specials).
        ``verbose=False``: the tokenizer's "longer than the maximum sequence length" warning would
        fire for every long candidate list, whose captions are split or refused with one line by
        the callers (:meth:`build_text`, :mod:`~pnpovss.presence`), never run whole."""
        if getattr(self.tokenizer, "is_fast", False):
            enc = self.tokenizer(caption, return_offsets_mapping=True, add_special_tokens=True, verbose=False)
            return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        # Slow tokenizers: grow the caption word by word and attribute the new tokens to those characters.
        ids = self.tokenizer(caption, add_special_tokens=True, verbose=False)["input_ids"]
        plain = self.tokenizer(caption, add_special_tokens=False, verbose=False)["input_ids"]
        lead = next(i for i in range(len(ids)) if ids[i : i + len(plain)] == plain)
        offsets: list[tuple[int, int]] = [(0, 0)] * len(ids)
        done, pos = 0, 0
        words = caption.split(" ")
        for w_i, word in enumerate(words):
            start = pos
            pos += len(word)
            upto = len(self.tokenizer(" ".join(words[: w_i + 1]), add_special_tokens=False,
                                      verbose=False)["input_ids"])
            for t in range(done, upto):
                offsets[lead + t] = (start, pos)
            done = upto
            pos += 1
        return ids, offsets

    def _finalize_ids(self, ids: list[int]) -> list[int]:
        """Adapter hook to rewrite ids before the ITM pass (BLIP swaps [CLS] for [ENC])."""
        return ids

    # ----------------------------------------------------------------------------- matching
    @abc.abstractmethod
    def cross_attention_modules(self, layers: Sequence[int]) -> dict[int, torch.nn.Module]:
        """The modules whose ``output[1]`` are the text-to-image attention probabilities of each
        requested (1-based) layer, shaped (B, heads, T, 1+P)."""

    def image_projections(self) -> list[torch.nn.Module]:
        """Text-side layers that see only the image tokens (BLIP's cross-attention key/value
        projections): gradient-free, so under reduced precision they may run in it like the vision
        encoder (:meth:`~pnpovss.precision.Precision.text_autocast`). None by default (BridgeTower's
        image side also attends to the text, so the gradient passes through it)."""
        return []

    broadcasts_image: bool = False
    """True when the text side accepts image tokens of batch 1 for a batch of captions (BLIP's
    cross-attention broadcasts): the image keys/values are then projected once, not per caption."""

    @abc.abstractmethod
    def _itm_logits(self, image_embeds: torch.Tensor, text: TextBatch, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Pre-softmax ITM logits (no match, match), shape (B, 2)."""

    def _itm_logit(self, image_embeds: torch.Tensor, text: TextBatch, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Pre-softmax ITM *match* logit, shape (B,): what GradCAM differentiates."""
        return self._itm_logits(image_embeds, text, key_mask)[:, 1]

    @torch.no_grad()
    def match_probability(self, image_embeds: torch.Tensor, text: TextBatch) -> torch.Tensor:
        """ITM match probability (softmax over the head's two logits) of every caption in ``text``
        against one image (``image_embeds`` of batch 1), shape (len(captions),). No autograd."""
        if image_embeds.shape[0] != 1:
            raise ValueError("match_probability takes the tokens of one image (batch 1)")
        n = text.input_ids.shape[0]
        embeds = image_embeds if self.broadcasts_image else image_embeds.expand(n, *image_embeds.shape[1:])
        return torch.softmax(self._itm_logits(embeds, text, None).float(), dim=-1)[:, 1]

    def caption_length(self, prompt: str, classes: Sequence[str]) -> int:
        """Number of text tokens (special tokens included) of the caption naming ``classes``."""
        return len(self._tokenize_with_offsets(caption_for(prompt, classes)[0])[0])

    def match(
        self,
        image_embeds: torch.Tensor,
        text: TextBatch,
        layers: Sequence[int],
        key_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """ITM match logit and the cross-attention probabilities of ``layers`` (1-based).

        The image tokens are detached and then marked as requiring grad, so the logit and the
        probabilities are differentiable with respect to each other while nothing upstream (the
        vision encoder, the weights) is ever entered by backward. ``key_mask`` (B, 1+P) with 0 for
        image tokens to hide from the cross-attention (used by attention-mode dropout).
        """
        self.check_layers(layers)
        embeds = image_embeds.detach().float().requires_grad_(True)  # a bf16 encoding meets fp32 text weights
        with torch.enable_grad(), capture_outputs(self.cross_attention_modules(layers)) as store:
            logit = self._itm_logit(embeds, text, key_mask)
        return logit, {layer: store[layer] for layer in layers}

    def check_config(self, config: PipelineConfig, image_size: int | None = None) -> None:
        """Every check of a configuration that depends on the model, in one place: the layer and the
        heads exist, and the input size (``image_size``, else ``config.image_size``, else the native
        size) is a whole number of patches. A one-line :class:`PnpOvssError` otherwise."""
        self.check_layers([config.layer])
        self.check_heads(config.heads_tuple())
        if image_size is None:
            image_size = config.image_size if config.image_size is not None else self.native_image_size
        self.grid(image_size)

    def check_layers(self, layers: Sequence[int]) -> None:
        bad = [layer for layer in layers if not 1 <= layer <= self.num_layers]
        if bad:
            raise PnpOvssError(
                f"layer {bad[0]} is out of range: this model has cross-attention layers 1..{self.num_layers}"
            )

    def check_heads(self, heads: Sequence[int] | None) -> None:
        bad = [h for h in heads or () if not 0 <= h < self.num_heads]
        if bad:
            raise PnpOvssError(f"head {bad[0]} is out of range: this model has heads 0..{self.num_heads - 1}")

    def describe(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "source": self.source,
            "native_image_size": self.native_image_size,
            "patch_size": self.patch_size,
            "layers": self.num_layers,
            "heads": self.num_heads,
        }
