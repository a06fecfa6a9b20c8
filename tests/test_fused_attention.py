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


def test_bf16_matmul_attention_close_to_fused_and_to_fp32(segmenter, rng, monkeypatch):
    """Short bf16 sequences on a CPU take the two-matmul form (faster than torch's bf16 fused
    kernel there); both bf16 forms stay within bf16 rounding of the fp32 embeddings (2 tiny layers:
    measured 2.6e-3 of the embeddings' largest value for both; a wrong cast or a missing scale is
    off by far more), and they differ from each other only by rounding."""
    import pnpovss.backbones.blip as blip

    bb = segmenter.backbone
    pixels = bb.preprocess([(rng.random((40, 50, 3)) * 255).astype(np.uint8)], 48)
    ref = bb.encode_image(pixels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        matmul_form = bb.encode_image(pixels).float()
        monkeypatch.setattr(blip, "BF16_CPU_MATMUL_ATTENTION_MAX_TOKENS", 0)
        fused_form = bb.encode_image(pixels).float()
    scale = float(ref.abs().max())
    assert not torch.equal(matmul_form, fused_form)  # the two paths really differ
    for out in (matmul_form, fused_form):
        assert float((out - ref).abs().max()) <= 5e-2 * scale, float((out - ref).abs().max()) / scale
