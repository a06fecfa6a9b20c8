"""Tiny models built from configs, for tests and benchmarks (no network, random weights).

They are saved with ``save_pretrained`` so that tests load them back through the very same
``from_pretrained`` path a user's hub id or directory takes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

WORDS = (
    "a picture of photo the and with in on cat dog grass sky tree car person bird circle square "
    "triangle star cross heart red green blue yellow black white purple orange big small "
    "potted plant dining table tv monitor ##s ##ing ##ed ##er bat ##man min ##ion"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocab(words: list[str] | tuple[str, ...] = WORDS) -> dict[str, int]:
    """A BERT vocab: specials, ASCII characters and ##letters (so any word tokenises), then ``words``."""
    chars = [chr(c) for c in range(33, 127)]
    tokens = list(dict.fromkeys(SPECIAL + chars + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + list(words)))
    return {tok: i for i, tok in enumerate(tokens)}


def build_tiny_blip(
    out_dir: str | Path | None = None,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 32,
    text_layers: int = 3,
    heads: int = 2,
    seed: int = 0,
) -> Path:
    """A random-weight ``BlipForImageTextRetrieval`` + processor saved to ``out_dir``."""
    from transformers import (BertTokenizerFast, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor,
                              BlipProcessor)

    out = Path(out_dir or tempfile.mkdtemp(prefix="tiny-blip-"))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab=wordpiece_vocab(), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    torch.manual_seed(seed)
    config = BlipConfig(
        vision_config=dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                           num_attention_heads=heads, image_size=image_size, patch_size=patch_size,
                           initializer_range=0.02),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=text_layers, num_attention_heads=heads, encoder_hidden_size=hidden,
                         max_position_embeddings=64, is_decoder=True, initializer_range=0.02,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         sep_token_id=tokenizer.sep_token_id),
    )
    model = BlipForImageTextRetrieval(config).eval()
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
