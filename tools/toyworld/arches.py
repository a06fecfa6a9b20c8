"""The two architectures the toy trainer (``train_itm``) can train: BLIP-ITM and BridgeTower-ITM.

Why: one training loop serves both backbones the pipeline supports; everything that touches a
model's internals (building, tokenising, the image tokens the patch-level loss reads, the match
logits, the text layer the word-token head reads, the cross-attention the probe reads, saving) is
one method of an ``Arch``, so the loop never branches on the architecture. ``ARCHES`` maps the
``--arch`` name to the class.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from pnpovss.toyworld.world import vocabulary

from .pixels import TOY_MEAN, TOY_STD


class BlipArch:
    """``BlipForImageTextRetrieval``: a ViT, a BERT text side with cross-attention, an ITM head."""

    name = "blip"
    model_class = "BlipForImageTextRetrieval"

    def tokenizer(self):
        """Offline BERT word-piece tokenizer over the toy vocabulary, mirroring BLIP's specials."""
        from transformers import BertTokenizerFast

        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[ENC]", "[DEC]"] + vocabulary()
        # transformers 5 takes the vocabulary as a dict (a ``vocab_file=`` kwarg is silently ignored)
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True, model_max_length=32)
        tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
        return tok

    def build(self, cfg, tok) -> nn.Module:
        """A small ``BlipForImageTextRetrieval`` (cross-attention needs ``is_decoder=True``)."""
        from transformers import BlipConfig, BlipForImageTextRetrieval

        text_config = dict(
            vocab_size=len(tok), hidden_size=cfg.text_hidden, encoder_hidden_size=cfg.vision_hidden,
            intermediate_size=cfg.text_hidden * 4, num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.heads,
            max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, is_decoder=True,
            pad_token_id=tok.pad_token_id, bos_token_id=tok.convert_tokens_to_ids("[DEC]"),
            sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id, initializer_range=0.02,
        )
        vision_config = dict(
            hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_hidden * 4, num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.heads, image_size=cfg.image_size, patch_size=cfg.patch, attention_dropout=0.0,
            initializer_range=0.02,
        )
        config = BlipConfig(text_config=text_config, vision_config=vision_config, projection_dim=64,
                            image_text_hidden_size=64, initializer_range=0.02)
        return BlipForImageTextRetrieval(config)

    def load(self, path: str) -> nn.Module:
        from transformers import BlipForImageTextRetrieval

        return BlipForImageTextRetrieval.from_pretrained(path)

    def vocab_size(self, model) -> int:
        return model.config.text_config.vocab_size

    def widths(self, model) -> tuple[int, int]:
        """(image token width, text token width at the word-token head's layer)."""
        return model.config.vision_config.hidden_size, model.config.text_config.hidden_size

    def encode(self, tok, texts: list[str], itm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise; for ITM the first token becomes [ENC], as in LAVIS (the pipeline does too)."""
        enc = tok(texts, padding=True, return_tensors="pt")
        ids = enc["input_ids"].clone()
        if itm:
            ids[:, 0] = tok.convert_tokens_to_ids("[ENC]")
        return ids, enc["attention_mask"]

    def image_tokens(self, model, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 1 + P, D) image tokens: what the patch-level loss reads and the text side attends to."""
        return model.vision_model(pixel_values=pixels).last_hidden_state

    def match(self, model, ids, att, pixels: torch.Tensor, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(N, 2) ITM logits of text ``n`` against image ``rows[n]`` (image tokens encoded once)."""
        n, k = tokens.shape[0], len(rows) // tokens.shape[0]
        if k * n == len(rows) and torch.equal(rows, torch.arange(n).repeat(k)):
            img = torch.cat([tokens] * k, 0)  # the BLIP trainer's original graph: bitwise the same weights
        else:
            img = tokens[rows]
        h = model.text_encoder(input_ids=ids, attention_mask=att, encoder_hidden_states=img,
                               encoder_attention_mask=torch.ones(img.shape[:2], dtype=torch.long)).last_hidden_state
        return model.itm_head(h[:, 0])

    def match_full(self, model, ids, att, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 2) ITM logits through the public forward (what the pipeline differentiates)."""
        return model(input_ids=ids, pixel_values=pixels, attention_mask=att, use_itm_head=True).itm_score

    def text_layer(self, model, layer: int) -> nn.Module:
        return model.text_encoder.encoder.layer[layer]

    def text_layer_output(self, out: Any) -> torch.Tensor:
        return out[0] if isinstance(out, tuple) else out

    def cross_attention(self, model) -> dict[int, nn.Module]:
        return {L: layer.crossattention.self for L, layer in enumerate(model.text_encoder.encoder.layer)}

    def contrastive(self, model, tok, tokens: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(image, text) unit features for the ITC loss, from the model's own projections."""
        ids, att = self.encode(tok, texts, itm=False)
        th = model.text_encoder(input_ids=ids, attention_mask=att).last_hidden_state
        tf = nn.functional.normalize(model.text_proj(th[:, 0]), dim=-1)
        vf = nn.functional.normalize(model.vision_proj(tokens[:, 0]), dim=-1)
        return vf, tf

    def save(self, model, tok, cfg, out: str) -> None:
        from transformers import BlipImageProcessor, BlipProcessor

        model.save_pretrained(out)
        ip = BlipImageProcessor(size={"height": cfg.image_size, "width": cfg.image_size}, image_mean=TOY_MEAN,
                                image_std=TOY_STD, do_convert_rgb=True)
        BlipProcessor(image_processor=ip, tokenizer=tok).save_pretrained(out)


class BridgeTowerArch:
    """``BridgeTowerForImageAndTextRetrieval``: a ViT and a RoBERTa tower whose top layers feed
    cross-modal layers through bridges; the text stream's cross-attention is what GradCAM reads.

    The public forward does not encode an image once for several texts, so ``match`` repeats the
    pixels (FACTS.md); the patch-level loss reads the vision tower's output tokens."""

    name = "bridgetower"
    model_class = "BridgeTowerForImageAndTextRetrieval"

    def tokenizer(self):
        """Offline RoBERTa tokenizer: a small byte-level BPE trained on the toy vocabulary's captions."""
        from tools.testing import byte_bpe_tokenizer

        return byte_bpe_tokenizer(tuple(vocabulary()), vocab_size=320)

    def build(self, cfg, tok) -> nn.Module:
        """Tiny BridgeTower: ``text_layers`` tower layers each side (equal depths), of which the last
        ``cross_layers`` feed as many cross-modal layers."""
        from transformers import BridgeTowerForImageAndTextRetrieval

        from tools.testing import bridgetower_config

        config = bridgetower_config(tok, image_size=cfg.image_size, patch_size=cfg.patch, hidden=cfg.text_hidden,
                                    vision_hidden=cfg.vision_hidden, text_layers=cfg.text_layers,
                                    cross_layers=cfg.cross_layers, heads=cfg.heads, intermediate=cfg.text_hidden * 4,
                                    max_positions=66)
        # std-0.02 (BERT-style) weights instead of BridgeTower's 0.05 default, as tools/testing.py does
        for c in (config, config.vision_config, config.text_config):
            c.initializer_factor = 0.4
        return BridgeTowerForImageAndTextRetrieval(config)

    def load(self, path: str) -> nn.Module:
        from transformers import BridgeTowerForImageAndTextRetrieval

        return BridgeTowerForImageAndTextRetrieval.from_pretrained(path, attn_implementation="eager")

    def vocab_size(self, model) -> int:
        return model.config.text_config.vocab_size

    def widths(self, model) -> tuple[int, int]:
        return model.config.vision_config.hidden_size, model.config.hidden_size

    def encode(self, tok, texts: list[str], itm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        enc = tok(texts, padding=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def image_tokens(self, model, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 1 + P, D): the vision tower's last layer (its forward stacks every layer's output)."""
        return model.bridgetower.vision_model(pixels)[-1]

    def match(self, model, ids, att, pixels: torch.Tensor, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.match_full(model, ids, att, pixels[rows])

    def match_full(self, model, ids, att, pixels: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=att, pixel_values=pixels).logits

    def text_layer(self, model, layer: int) -> nn.Module:
        return model.bridgetower.cross_modal_text_layers[layer]

    def text_layer_output(self, out: Any) -> torch.Tensor:
        return out[0] if isinstance(out, tuple) else out

    def cross_attention(self, model) -> dict[int, nn.Module]:
        return {L: layer.crossattention.self for L, layer in enumerate(model.bridgetower.cross_modal_text_layers)}

    def contrastive(self, model, tok, tokens, texts):
        """None: the retrieval model has no contrastive projections, so ITC is not trained."""
        return

    def save(self, model, tok, cfg, out: str) -> None:
        from transformers import BridgeTowerImageProcessor, BridgeTowerProcessor

        model.save_pretrained(out)
        ip = BridgeTowerImageProcessor(size={"shortest_edge": cfg.image_size}, size_divisor=cfg.patch,
                                       crop_size={"height": cfg.image_size, "width": cfg.image_size},
                                       image_mean=TOY_MEAN, image_std=TOY_STD, do_center_crop=True)
        BridgeTowerProcessor(image_processor=ip, tokenizer=tok).save_pretrained(out)
        # the adapter's defaults are the real checkpoint's (770 px, a deep layer): pin the toy model's size and a
        # layer whose word tokens still reach the ITM head (the last layer's GradCAM is zero for words)
        preset = os.path.join(out, "pnpovss_preset.json")
        if not os.path.exists(preset):
            with open(preset, "w") as f:
                json.dump({"config": {"image_size": cfg.image_size, "layer": 1}}, f, indent=2)
                f.write("\n")


ARCHES: dict[str, type] = {"blip": BlipArch, "bridgetower": BridgeTowerArch}
"""``--arch`` name -> architecture class."""

__all__ = ["ARCHES", "BlipArch", "BridgeTowerArch"]
