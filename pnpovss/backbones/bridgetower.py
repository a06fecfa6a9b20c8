"""BridgeTower image-text matching (``BridgeTowerForImageAndTextRetrieval``) as a :class:`Backbone`.

How BridgeTower computes its match score (transformers 5.x), and what that means here:

* A ViT (CLIP-style, ``vision_model.visual``) and a RoBERTa text tower run side by side. Their
  lowest ``split`` layers are uni-modal; each of the top ``num_hidden_layers`` layers of both
  towers feeds, through a "bridge" (link tower), one layer of a cross-modal encoder made of two
  streams: a text stream whose cross-attention looks at the image stream, and an image stream
  whose cross-attention looks at the text stream. The ITM head reads both streams' [CLS].
* The cross-modal *image stream* depends on the text, but the **vision tower does not**: its
  per-layer outputs (after ``ln_post``, the per-layer linear transform and the image token-type
  embedding) are the same for every caption. :meth:`encode_image` computes exactly those, once,
  without autograd; :meth:`_itm_logit` runs the text tower and the cross-modal encoder on them.
  GradCAM's gradient dS/dA of the captured text-to-image attention A is unchanged by that split
  (nothing between A and S goes through the vision tower), so it equals full-model autograd, while
  backward never enters the ViT.
* Attention is eager only (sdpa raises); the text-to-image probabilities are ``output[1]`` of
  ``bridgetower.cross_modal_text_layers[L].crossattention.self``. The public forward's
  ``output.attentions`` are self-attentions, not these.
* The vision embeddings interpolate their position grid bicubically when asked
  (``interpolate_pos_encoding``), so any multiple of the patch size works. The paper runs
  BridgeTower at 770 px (55x55 patches of 14), not the checkpoint's 294: that is this adapter's
  default (:attr:`pipeline_defaults`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .. import prepacked
from ..errors import ModelLoadError, PnpOvssError
from .base import Backbone, TextBatch


class BridgeTowerBackbone(Backbone):
    """BridgeTower-ITM. Class tokens are the byte-level BPE pieces of each class name (``Ġbat``,
    ``man``), pooled like BLIP's word pieces by the shared code."""

    model_type = "bridgetower"
    _grad_from = 1
    """First (1-based) cross-modal layer whose attention must be differentiable; set by :meth:`match`."""
    pipeline_defaults: dict[str, Any] = {"image_size": 770, "layer": 4, "head": None}
    """The paper's 770 px input. No reference code exists for BridgeTower (the authors released
    BLIP only), so layer 4 of 6 with the mean of all heads is an untuned starting point: the last
    layer gives zero GradCAM for word tokens (only [CLS] reaches the ITM head); tune on real data."""

    def __init__(self, model: torch.nn.Module, processor: Any, source: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = processor.tokenizer
        self.source = source
        bt = model.bridgetower
        cfg, tcfg, vcfg = model.config, model.config.text_config, model.config.vision_config
        self.native_image_size = int(vcfg.image_size)
        self.patch_size = int(vcfg.patch_size)
        self.num_layers = int(cfg.num_hidden_layers)
        self.num_heads = int(tcfg.num_attention_heads)
        # RoBERTa positions start after the padding index, so two positions are never usable.
        self.max_text_tokens = int(tcfg.max_position_embeddings) - int(tcfg.pad_token_id) - 1
        n_text = len(bt.text_model.encoder.layer)
        self.split = n_text - self.num_layers + 1
        if self.split < 1 or len(bt.vision_model.visual.transformer.resblocks) < n_text:
            raise ModelLoadError(
                f"model {source!r}: its towers ({n_text} text layers, "
                f"{len(bt.vision_model.visual.transformer.resblocks)} vision layers) cannot feed "
                f"{self.num_layers} cross-modal layers"
            )
        ip = processor.image_processor
        self.image_mean = tuple(float(v) for v in ip.image_mean)
        self.image_std = tuple(float(v) for v in ip.image_std)

    @classmethod
    def from_pretrained(cls, source: str, device: str | torch.device = "cpu", **kwargs: Any) -> "BridgeTowerBackbone":
        """Load from a hub id or a ``save_pretrained`` directory (weights and processor)."""
        from transformers import BridgeTowerForImageAndTextRetrieval, BridgeTowerProcessor

        model = BridgeTowerForImageAndTextRetrieval.from_pretrained(source, attn_implementation="eager")
        processor = BridgeTowerProcessor.from_pretrained(source)
        return cls(model.to(device), processor, source, **kwargs)

    # ----------------------------------------------------------------------------- image
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, num_layers, 1+P, D): the vision tower's input to every cross-modal
        layer (layer 0 already layer-normed as the model does), computed once without autograd.

        Unlike BLIP's (B, 1+P, D) this carries one token set per cross-modal layer; the shared
        code only passes it back to :meth:`_itm_logit`.
        """
        bt = self.model.bridgetower
        visual = bt.vision_model.visual
        blocks = visual.transformer.resblocks
        with torch.no_grad():
            x = visual.forward_pre(
                pixel_values.to(bt.vision_model.dtype),
                interpolate_pos_encoding=pixel_values.shape[-1] != self.native_image_size,
            )  # (1+P, B, W): the ViT runs sequence-first
            for block in blocks[: self.split]:
                x = block(x)
            image_type = bt.token_type_embeddings(torch.ones(1, dtype=torch.long, device=x.device))
            per_layer = [bt.cross_modal_image_layernorm(bt._apply_image_transform(visual.forward_post(x), 0) + image_type)]
            for j in range(1, self.num_layers):
                x = blocks[self.split + j - 1](x)
                per_layer.append(bt._apply_image_transform(visual.forward_post(x), j) + image_type)
        return torch.stack(per_layer, dim=1)

    def vision_linears(self) -> list[torch.nn.Linear]:
        return prepacked.linears(self.model.bridgetower.vision_model)  # the MLPs (attention is nn.MultiheadAttention)

    # ----------------------------------------------------------------------------- matching
    def cross_attention_modules(self, layers: Sequence[int]) -> dict[int, torch.nn.Module]:
        stream = self.model.bridgetower.cross_modal_text_layers
        return {layer: stream[layer - 1].crossattention.self for layer in layers}

    def match(
        self,
        image_embeds: torch.Tensor,
        text: TextBatch,
        layers: Sequence[int],
        key_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """As :meth:`Backbone.match`, but autograd records only from the first requested layer on.

        dS/dA depends only on what comes after A, so the cross-modal layers below run without
        autograd: at 770 px their image stream (3026 tokens) would otherwise keep gigabytes of
        activations that no backward pass ever reads.
        """
        self._grad_from = min(layers, default=1)
        try:
            return super().match(image_embeds, text, layers, key_mask)
        finally:
            self._grad_from = 1

    def _itm_logits(self, image_embeds: torch.Tensor, text: TextBatch, key_mask: torch.Tensor | None) -> torch.Tensor:
        return self._cross_modal_logit(image_embeds, text, key_mask, grad_from=self._grad_from)

    def _cross_modal_logit(
        self, image_embeds: torch.Tensor, text: TextBatch, key_mask: torch.Tensor | None, grad_from: int
    ) -> torch.Tensor:
        """The cross-modal half of ``BridgeTowerModel.forward`` on cached vision features, then the
        ITM head's (no match, match) logits. Cross-modal layers before ``grad_from`` (1-based) run without
        autograd and that layer's image input is made a grad-requiring leaf, so the attention
        probabilities from there on are differentiable. ``key_mask`` hides image tokens from both
        places the cross-modal encoder reads them: the text stream's cross-attention and the image
        stream's self-attention."""
        from transformers.masking_utils import create_bidirectional_mask

        if image_embeds.dim() != 4 or image_embeds.shape[1] != self.num_layers:
            raise PnpOvssError("BridgeTower needs the per-layer image features of its own encode_image")
        bt = self.model.bridgetower
        text_layers = bt.text_model.encoder.layer
        with torch.no_grad():  # frozen text tower on token ids: nothing here can need a gradient
            text_embeds = bt.text_model.embeddings(input_ids=text.input_ids)
            # The model builds its text mask from a length-1 query, then broadcasts it over queries.
            text_mask = create_bidirectional_mask(
                config=bt.config, inputs_embeds=text_embeds[:, 0:1, :], attention_mask=text.attention_mask
            )
            image_mask = None
            if key_mask is not None:
                image_mask = create_bidirectional_mask(
                    config=bt.config, inputs_embeds=text_embeds[:, 0:1, :], attention_mask=key_mask,
                    encoder_hidden_states=image_embeds[:, 0],
                )
            for layer in text_layers[: self.split]:
                text_embeds = layer(text_embeds, text_mask)
            text_type = bt.token_type_embeddings(torch.zeros(1, dtype=torch.long, device=text_embeds.device))
            text_in = bt.cross_modal_text_layernorm(bt._apply_text_transform(text_embeds, 0) + text_type)
        image_in = image_embeds[:, 0]
        grad_wanted = torch.is_grad_enabled()
        for j in range(self.num_layers):
            with torch.set_grad_enabled(grad_wanted and j + 1 >= grad_from):
                if j:
                    text_embeds = text_layers[self.split + j - 1](text_embeds, text_mask)
                    text_in = bt.cross_modal_text_link_tower[j - 1](
                        bt._apply_text_transform(text_embeds, j) + text_type, text_out, text_mask
                    )
                    image_in = bt.cross_modal_image_link_tower[j - 1](image_embeds[:, j], image_out, None)
                if grad_wanted and j + 1 == grad_from:
                    image_in = image_in.detach().requires_grad_(True)
                text_out = bt.cross_modal_text_layers[j](
                    text_in, image_in, attention_mask=text_mask, encoder_attention_mask=image_mask
                )[0]
                image_out = bt.cross_modal_image_layers[j](
                    image_in, text_in, attention_mask=image_mask, encoder_attention_mask=text_mask
                )[0]
        with torch.set_grad_enabled(grad_wanted):
            return self.model.itm_score(bt.get_cls_features(text_out, image_out))
