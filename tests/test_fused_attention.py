"""The BLIP vision tower runs with fused attention for speed; it must compute the same embeddings
as BLIP's own eager attention and leave the model untouched afterwards."""

import numpy as np
import pytest
import torch

from pnpovss.backbones.blip import fused_attention


def test_fused_vision_attention_equals_eager(segmenter, rng):
    bb = segmenter.backbone
    pixels = bb.preprocess([(rng.random((40, 50, 3)) * 255).astype(np.uint8) for _ in range(2)], 48)
    fused = bb.encode_image(pixels)
    bb.fused_vision_attention = False
    try:
        eager = bb.encode_image(pixels)
    finally:
        del bb.fused_vision_attention
    assert torch.allclose(fused, eager, atol=1e-5), float((fused - eager).abs().max())


def test_fused_attention_is_always_restored(segmenter):
    vision = segmenter.backbone.model.vision_model
    attn = [m for m in vision.modules() if type(m).__name__ == "BlipAttention"]
    assert attn
    with pytest.raises(RuntimeError, match="boom"):
        with fused_attention(vision):
            assert all("forward" in vars(m) for m in attn)
            raise RuntimeError("boom")
    assert not any("forward" in vars(m) for m in attn)

