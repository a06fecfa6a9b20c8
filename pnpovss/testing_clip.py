"""A tiny random open_clip CLIP saved as an open_clip ``local-dir`` checkpoint, for tests.

Saved (``open_clip_config.json`` + ``open_clip_model.safetensors``) so tests load it through the
same :func:`pnpovss.reward.load_clip` path as a user's local checkpoint directory.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_clip_config(image_size: int = 32, patch_size: int = 8, width: int = 32, embed_dim: int = 32) -> dict:
    """open_clip ``model_cfg`` of a 1-layer ViT + 1-layer text transformer (SimpleTokenizer vocab)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "width": width, "layers": 1,
                       "head_width": width // 2},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": width, "heads": 2, "layers": 1},
    }


def build_tiny_clip(out_dir: str | Path | None = None, *, seed: int = 0, **cfg: int) -> Path:
    """Random-weight tiny CLIP written as an open_clip local directory; returns the directory."""
    import open_clip
    from safetensors.torch import save_file

    out = Path(out_dir or tempfile.mkdtemp(prefix="tiny-clip-"))
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = tiny_clip_config(**cfg)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg).eval()
    preprocess = {"size": model_cfg["vision_cfg"]["image_size"], "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                  "interpolation": "bicubic", "resize_mode": "shortest"}
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out
