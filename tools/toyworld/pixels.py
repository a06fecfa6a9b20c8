"""The toy models' input normalisation, shared by both trainers (the saved BLIP processor and the
toy CLIP's ``open_clip_config.json`` record the same values for inference)."""

from __future__ import annotations

import numpy as np
import torch

TOY_MEAN = [0.5, 0.5, 0.5]
TOY_STD = [0.25, 0.25, 0.25]


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float normalised with ``TOY_MEAN``/``TOY_STD``."""
    x = torch.from_numpy(images).float().div_(255.0).permute(0, 3, 1, 2)
    mean = torch.tensor(TOY_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(TOY_STD).view(1, 3, 1, 1)
    return (x - mean) / std
