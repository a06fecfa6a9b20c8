"""The BLIP vision tower runs with fused attention for speed; it must compute the same embeddings
as BLIP's own eager attention, actually run where it is on, and be seen by no other thread."""

import threading

import numpy as np
import pytest
import torch

from pnpovss.backbones.blip import fused_attention
from pnpovss.execution import replacement_of


def _sdpa_calls(monkeypatch) -> list:
    calls, real = [], torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_fused_vision_attention_equals_eager_and_is_taken(segmenter, rng, monkeypatch):
    bb = segmenter.backbone
    pixels = bb.preprocess([(rng.random((40, 50, 3)) * 255).astype(np.uint8) for _ in range(2)], 48)
    calls = _sdpa_calls(monkeypatch)
    assert bb.execution.fused_attention
    fused = bb.encode_image(pixels)
    n_attn = sum(type(m).__name__ == "BlipAttention" for m in bb.model.vision_model.modules())
    assert len(calls) == n_attn > 0  # the fast path ran, once per vision layer
    bb.fused_vision_attention = False
    try:
        eager = bb.encode_image(pixels)
    finally:
        bb.fused_vision_attention = True
    assert len(calls) == n_attn  # switched off: BLIP's own attention
    assert torch.allclose(fused, eager, atol=1e-5), float((fused - eager).abs().max())


def test_fused_attention_is_always_undone(segmenter):
    vision = segmenter.backbone.model.vision_model
    attn = [m for m in vision.modules() if type(m).__name__ == "BlipAttention"]
    assert attn
    with pytest.raises(RuntimeError, match="boom"):
        with fused_attention(vision):
            assert all(replacement_of(m) is not None for m in attn)
            raise RuntimeError("boom")
    assert all(replacement_of(m) is None for m in attn)


def test_another_thread_never_sees_the_replacement(segmenter, rng):
    """A replacement belongs to the thread that entered the block: a second thread running the
    same module meanwhile gets the module's own forward (BLIP's eager attention, with probabilities)."""
    vision = segmenter.backbone.model.vision_model
    module = next(m for m in vision.modules() if type(m).__name__ == "BlipAttention")
    x = torch.randn(1, 5, module.embed_dim)
    inside, done, seen = threading.Event(), threading.Event(), {}

    def other() -> None:
        inside.wait(10)
        seen["replacement"] = replacement_of(module)
        seen["probs"] = module(x)[1]
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with fused_attention(vision):
        assert module(x)[1] is None  # this thread: fused, no probabilities
        inside.set()
        done.wait(10)
    thread.join()
    assert seen["replacement"] is None and seen["probs"] is not None
