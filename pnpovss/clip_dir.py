"""open_clip checkpoints stored as a plain directory: ``open_clip_config.json`` (the open_clip
``model_cfg`` plus top-level ``image_size``/``mean``/``std``) and ``open_clip_model.safetensors``.
The toy world's CLIP ships in this format (``toy``); :func:`pnpovss.reward.load_clip` reads any
such directory."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
import torch

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


def build_clip(model_cfg: dict) -> torch.nn.Module:
    """Rebuild the open_clip ``CLIP`` from the stored config dict."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    return CLIP(
        embed_dim=model_cfg["embed_dim"],
        vision_cfg=CLIPVisionCfg(**model_cfg["vision_cfg"]),
        text_cfg=CLIPTextCfg(**model_cfg["text_cfg"]),
        quick_gelu=model_cfg.get("quick_gelu", False),
    )


def make_preprocess(image_size: int, mean: list[float], std: list[float]) -> Callable:
    """PIL image or (H,W,3) uint8 array -> (3,S,S) float tensor, as used in training."""

    def preprocess(img) -> torch.Tensor:
        from PIL import Image

        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img, dtype=np.uint8))
        img = img.convert("RGB")
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)

    return preprocess


def load_clip_dir(path: str):
    """Return ``(model, preprocess_fn, tokenizer)`` of the directory ``path``; model in eval mode, float32."""
    from open_clip.tokenizer import SimpleTokenizer
    from safetensors.torch import load_file

    with open(os.path.join(path, CONFIG_NAME)) as f:
        cfg = json.load(f)
    model = build_clip(cfg["model_cfg"])
    state = {k: v.float() for k, v in load_file(os.path.join(path, WEIGHTS_NAME)).items()}
    model.load_state_dict(state)
    model.eval()
    pre = make_preprocess(cfg["image_size"], cfg["mean"], cfg["std"])
    tok = SimpleTokenizer(context_length=cfg["model_cfg"]["text_cfg"]["context_length"])
    return model, pre, tok


__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "build_clip", "load_clip_dir", "make_preprocess"]
