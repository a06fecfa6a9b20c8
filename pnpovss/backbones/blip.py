"""BLIP image-text matching (``BlipForImageTextRetrieval``) as a :class:`Backbone`.

Facts this adapter relies on (transformers 5.x): BLIP attention is always eager; the
cross-attention probabilities are ``output[1]`` of ``text_encoder.encoder.layer[L].crossattention.self``
and never reach the top-level output; the vision tower interpolates its position embeddings when
asked, so any multiple of the patch size works (768 px -> 48x48 patches for BLIP-large).
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from .. import prepacked
from ..errors import ModelLoadError
from ..execution import compiled_call, replaced_forwards
from .base import Backbone, TextBatch

ENC_TOKEN = "[ENC]"
BLIP_TEXT_ROWS = 30524
"""Rows of the original BLIP text embedding: bert-base-uncased's 30522 pieces, then ``[DEC]``
(30522) and ``[ENC]`` (30523), which LAVIS's ``init_tokenizer`` appends in that order."""
BLIP_ENC_ID = 30523

log = logging.getLogger(__name__)


def resolve_enc_token(vocab: dict[str, int], embedding_rows: int, source: str) -> int:
    """The id the ITM pass puts in place of ``[CLS]``, as LAVIS's BLIP-ITM does.

    1. The tokenizer names ``[ENC]``: its id (it must index a row of the text embedding).
    2. It does not, but the text embedding has BLIP's 30524-row layout and the tokenizer leaves id
       30523 free: 30523, with a one-line notice. Hub BLIP processors may ship a plain
       bert-base-uncased tokenizer (transformers' conversion checks its ITM port with one), while
       the checkpoint still holds the trained ``[ENC]`` row.
    3. Otherwise refuse: silently using ``[CLS]`` changes the maps completely.
    """
    if ENC_TOKEN in vocab:
        enc = int(vocab[ENC_TOKEN])
        if enc >= embedding_rows:
            raise ModelLoadError(f"model {source!r}: the tokenizer's {ENC_TOKEN} id {enc} is outside the text "
                                 f"embedding ({embedding_rows} rows); the tokenizer does not belong to this model")
        return enc
    holder = next((tok for tok, i in vocab.items() if i == BLIP_ENC_ID), None)
    if embedding_rows == BLIP_TEXT_ROWS and holder is None:
        log.warning("model %r: the tokenizer has no %s token; using id %d, BLIP's %s row of the text embedding",
                    source, ENC_TOKEN, BLIP_ENC_ID, ENC_TOKEN)
        return BLIP_ENC_ID
    if holder is not None:
        raise ModelLoadError(f"model {source!r}: the tokenizer has no {ENC_TOKEN} token and gives BLIP's {ENC_TOKEN} "
                             f"id {BLIP_ENC_ID} to {holder!r}; use the tokenizer saved with this model")
    raise ModelLoadError(
        f"model {source!r}: the tokenizer has no {ENC_TOKEN} token and the text embedding ({embedding_rows} rows) "
        f"is not BLIP's {BLIP_TEXT_ROWS}-row layout, so the ITM input is unknown; add {ENC_TOKEN} to the "
        "tokenizer (tokenizer.add_special_tokens({'additional_special_tokens': ['[ENC]']}), then save_pretrained)"
    )


class BlipBackbone(Backbone):
    """BLIP-ITM. As in the LAVIS reference, the ITM pass replaces the leading [CLS] with the [ENC]
    token (see :func:`resolve_enc_token`). ``use_enc_token=False`` keeps [CLS]: an ablation, not
    the reference's input."""

    model_type = "blip"

    def __init__(self, model: torch.nn.Module, processor, source: str, use_enc_token: bool = True) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = processor.tokenizer
        self.source = source
        vcfg, tcfg = model.config.vision_config, model.config.text_config
        self.native_image_size = int(vcfg.image_size)
        self.patch_size = int(vcfg.patch_size)
        layers = model.text_encoder.encoder.layer
        if not all(hasattr(layer, "crossattention") for layer in layers):
            raise ModelLoadError(
                f"model {source!r} has no text-to-image cross-attention (text_config.is_decoder is False); "
                "it cannot be used for PnP-OVSS"
            )
        self.num_layers = len(layers)
        self.num_heads = int(tcfg.num_attention_heads)
        self.max_text_tokens = int(tcfg.max_position_embeddings)
        ip = processor.image_processor
        self.image_mean = tuple(float(v) for v in ip.image_mean)
        self.image_std = tuple(float(v) for v in ip.image_std)
        rows = int(model.text_encoder.get_input_embeddings().num_embeddings)
        self.enc_token_id = resolve_enc_token(self.tokenizer.get_vocab(), rows, source) if use_enc_token else None

    @classmethod
    def from_pretrained(cls, source: str, device: str | torch.device = "cpu", **kwargs) -> "BlipBackbone":
        """Load from a hub id or a ``save_pretrained`` directory (weights and processor)."""
        from transformers import BlipForImageTextRetrieval, BlipProcessor

        model = BlipForImageTextRetrieval.from_pretrained(source)
        processor = BlipProcessor.from_pretrained(source)
        return cls(model.to(device), processor, source, **kwargs)

    @property
    def fused_vision_attention(self) -> bool:
        """Run the (gradient-free) vision tower with fused scaled-dot-product attention instead of
        BLIP's eager softmax(QK^T)V (:attr:`~pnpovss.execution.ExecutionOptions.fused_attention`):
        the same function to float rounding, without materialising the (heads, N, N)
        probabilities, which dominate at 768 px (2305 tokens)."""
        return self.execution.fused_attention

    @fused_vision_attention.setter
    def fused_vision_attention(self, value: bool) -> None:
        self.execution = self.execution.replace(fused_attention=bool(value))

    supports_compiled_vision = True
    _compiled: torch.nn.Module | None = None

    def vision_linears(self) -> list[torch.nn.Linear]:
        return [] if self.compile_vision else prepacked.linears(self.model.vision_model)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        resize = pixel_values.shape[-1] != self.native_image_size
        if self.compile_vision:
            return self._compiled_encode(pixel_values, resize)
        with torch.no_grad(), fused_attention(self.model.vision_model, enabled=self.fused_vision_attention):
            out = self.model.vision_model(pixel_values=pixel_values, interpolate_pos_encoding=resize)
        return out.last_hidden_state

    def _compiled_encode(self, pixel_values: torch.Tensor, resize: bool) -> torch.Tensor:
        """The vision encoder through ``torch.compile`` (compiled once per model; inductor compiles
        again per input shape and autocast state). It runs BLIP's own attention, which inductor fuses;
        the fused-attention replacement would break the trace. Weights are frozen into the compiled
        graph (:func:`~pnpovss.execution.compiled_call`), as nothing changes them during inference."""
        if self._compiled is None:
            self._compiled = torch.compile(self.model.vision_model)
        return compiled_call(self._compiled, pixel_values=pixel_values, interpolate_pos_encoding=resize).last_hidden_state

    def _finalize_ids(self, ids: list[int]) -> list[int]:
        if self.enc_token_id is not None:
            ids = [self.enc_token_id, *ids[1:]]
        return ids

    @torch.no_grad()
    def match_probability(self, image_embeds: torch.Tensor, text: TextBatch) -> torch.Tensor:
        """As :meth:`Backbone.match_probability`, with the image's keys/values shared by all captions."""
        modules = self.cross_attention_modules(range(1, self.num_layers + 1)).values()
        shared = image_embeds.shape[0] == 1 and self.execution.shared_image_attention
        with shared_image_attention(modules if shared else ()):
            return super().match_probability(image_embeds, text)

    def cross_attention_modules(self, layers: Sequence[int]) -> dict[int, torch.nn.Module]:
        return {layer: self.model.text_encoder.encoder.layer[layer - 1].crossattention.self for layer in layers}

    broadcasts_image = True

    def image_projections(self) -> list[torch.nn.Module]:
        return [lin for layer in self.model.text_encoder.encoder.layer
                for lin in (layer.crossattention.self.key, layer.crossattention.self.value)]

    def _itm_logits(self, image_embeds: torch.Tensor, text: TextBatch, key_mask: torch.Tensor | None) -> torch.Tensor:
        if key_mask is None:
            key_mask = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)
        out = self.model.text_encoder(
            input_ids=text.input_ids,
            attention_mask=text.attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=key_mask,
        )
        return self.model.itm_head(out.last_hidden_state[:, 0, :])


def _shared_image_forward(module: torch.nn.Module):
    """A BLIP text cross-attention forward for B captions against ONE image (encoder states of
    batch 1): the captions' queries are stacked into one sequence, so the image keys/values are
    projected once and never copied per caption (broadcasting matmul would copy them B times)."""

    def forward(hidden_states: torch.Tensor, attention_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, **_kwargs) -> tuple[torch.Tensor, None]:
        bsz, t, _ = hidden_states.shape
        h, d = module.num_attention_heads, module.attention_head_size
        q = module.query(hidden_states).view(bsz, t, h, d).permute(2, 0, 1, 3).reshape(1, h, bsz * t, d)
        k = module.key(encoder_hidden_states).view(1, -1, h, d).transpose(1, 2)
        v = module.value(encoder_hidden_states).view(1, -1, h, d).transpose(1, 2)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=encoder_attention_mask)  # scale 1/sqrt(d)
        return ctx.reshape(h, bsz, t, d).permute(1, 2, 0, 3).reshape(bsz, t, h * d), None

    return forward


def shared_image_attention(modules: Iterable[torch.nn.Module]):
    """Within the block, the given cross-attention modules use :func:`_shared_image_forward`
    (inference on one image only; no attention probabilities)."""
    return replaced_forwards(modules, _shared_image_forward)


def _sdpa_forward(module: torch.nn.Module):
    """A BlipAttention forward computed with ``F.scaled_dot_product_attention`` (no probabilities)."""

    def forward(hidden_states: torch.Tensor, **_kwargs) -> tuple[torch.Tensor, None]:
        bsz, n, dim = hidden_states.shape
        qkv = module.qkv(hidden_states).reshape(bsz, n, 3, module.num_heads, dim // module.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        ctx = F.scaled_dot_product_attention(q, k, v, scale=module.scale)
        return module.projection(ctx.transpose(1, 2).reshape(bsz, n, dim)), None

    return forward


def fused_attention(vision_model: torch.nn.Module, enabled: bool = True):
    """Within the block, every vision self-attention module of ``vision_model`` uses fused attention.

    Seen by this thread only (:func:`~pnpovss.execution.replaced_forwards`), always undone on exit.
    Only for inference: no attention probabilities are returned and dropout is not applied.
    """
    modules = [m for m in vision_model.modules() if type(m).__name__ == "BlipAttention" and hasattr(m, "qkv")]
    return replaced_forwards(modules if enabled else [], _sdpa_forward)
