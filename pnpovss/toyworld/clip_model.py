"""Load the tiny toy-world CLIP (open_clip) shipped in ``weights/clip``.

Why: label-free tuning needs a reward model that scores images showing only one class's
pixels against class names; no pretrained CLIP can be downloaded here, so a tiny one
trained on the toy world stands in for it. Its directory format is :mod:`pnpovss.clip_dir`'s.
"""

from __future__ import annotations

import os

from ..clip_dir import load_clip_dir

DEFAULT_CLIP_DIR = os.path.join(os.path.dirname(__file__), "weights", "clip")


def load_toy_clip(path: str | None = None):
    """Return ``(model, preprocess_fn, tokenizer)``; model in eval mode, float32."""
    return load_clip_dir(path or DEFAULT_CLIP_DIR)
