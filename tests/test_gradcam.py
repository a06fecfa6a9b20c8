"""GradCAM on cross-attention: our detached, single-layer computation must equal plain autograd
through the full public model (vision encoder and all weights requiring grad)."""

import numpy as np
import pytest
import torch

from pnpovss.gradcam import cam_from_attention, layer_attention_and_grad, pool_classes, token_maps
from pnpovss.hooks import capture_outputs


def reference_maps(backbone, pixels, text, layer):
    """Independent computation: the model's own forward with every parameter requiring grad,
    the attention probabilities' gradient taken by retain_grad + backward."""
    model = backbone.model
    model.requires_grad_(True)
    try:
        module = model.text_encoder.encoder.layer[layer - 1].crossattention.self
        with torch.enable_grad(), capture_outputs({0: module}) as store:
            px = pixels.clone().requires_grad_(True)
            out = model(input_ids=text.input_ids, pixel_values=px, attention_mask=text.attention_mask,
                        interpolate_pos_encoding=pixels.shape[-1] != backbone.native_image_size)
            attn = store[0]
            attn.retain_grad()
            out.itm_score[:, 1].sum().backward()
        assert px.grad is not None  # the reference really went through the vision encoder
        return attn.detach(), attn.grad.detach()
    finally:
        model.requires_grad_(False)
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("size", [32, 48])
def test_gradcam_equals_full_autograd(segmenter, rng, size):
    bb = segmenter.backbone
    images = [(rng.random((40, 50, 3)) * 255).astype(np.uint8) for _ in range(2)]
    pixels = bb.preprocess(images, size)
    text = bb.build_text("a picture of ", [["cat", "batman"], ["potted plant", "dog", "sky"]])
    ref_a, ref_g = reference_maps(bb, pixels, text, layer=2)
    ours = layer_attention_and_grad(bb, bb.encode_image(pixels), text, [2])[2]
    assert ref_g.abs().max() > 0
    torch.testing.assert_close(ours[0], ref_a, atol=1e-6, rtol=0)
    for heads in [(0,), (1,), None]:
        expected = cam_from_attention(ref_a, ref_g, heads)
        mine = token_maps(bb, bb.encode_image(pixels), text, 2, heads)
        assert (mine - expected).abs().max().item() < 1e-5
    manual = (ref_a[:, 1, :, 1:] * ref_g[:, 1, :, 1:].clamp(min=0))
    torch.testing.assert_close(cam_from_attention(ref_a, ref_g, (1,)), manual)


def test_backward_never_enters_vision_encoder(segmenter, rng):
    bb = segmenter.backbone
    pixels = bb.preprocess([(rng.random((32, 32, 3)) * 255).astype(np.uint8)], 32)
    embeds = bb.encode_image(pixels)
    assert embeds.grad_fn is None and not embeds.requires_grad
    calls = []
    handle = bb.model.vision_model.register_full_backward_hook(lambda *a: calls.append(1))
    try:
        text = bb.build_text("a picture of ", [["cat"]])
        token_maps(bb, embeds, text, 3, None)
    finally:
        handle.remove()
    assert calls == []
    assert all(p.grad is None for p in bb.model.parameters())


def test_raw_attention_needs_no_gradient(segmenter, rng):
    bb = segmenter.backbone
    pixels = bb.preprocess([(rng.random((32, 32, 3)) * 255).astype(np.uint8)], 32)
    text = bb.build_text("a picture of ", [["cat", "dog"]])
    out = layer_attention_and_grad(bb, bb.encode_image(pixels), text, [1, 3], with_grad=False)
    assert out[1][1] is None and out[3][0].shape[-1] == 17
    rows = out[3][0].sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))  # probabilities over 1+P keys


def test_class_tokens_cover_multi_piece_words(segmenter):
    bb = segmenter.backbone
    text = bb.build_text("a picture of ", [["batman", "potted plant", "cat", "zq"]])
    toks = bb.tokenizer.convert_ids_to_tokens(text.input_ids[0])
    pieces = [[toks[i] for i in pos] for pos in text.class_tokens[0]]
    assert pieces == [["bat", "##man"], ["potted", "plant"], ["cat"], ["z", "##q"]]
    assert toks[0] == "[ENC]"  # ITM pass uses [ENC] like the LAVIS reference
    maps = torch.arange(len(toks) * 2, dtype=torch.float32).view(1, len(toks), 2)
    pooled = pool_classes(maps, text.class_tokens)[0]
    torch.testing.assert_close(pooled[0], maps[0, [4, 5]].mean(0))


def test_too_many_classes_is_a_clear_error(segmenter):
    from pnpovss import PnpOvssError

    with pytest.raises(PnpOvssError, match="text tokens but the model accepts at most 64"):
        segmenter.backbone.build_text("a picture of ", [[f"class{i}" for i in range(70)]])
