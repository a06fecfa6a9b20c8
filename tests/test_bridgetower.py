"""The BridgeTower adapter on a tiny random model: GradCAM equals full-model autograd, the cached
vision features reproduce the public forward, Salience DropOut hides the right patches, and the
CLI runs on a saved model."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pnpovss import PipelineConfig, PnpOvssError, Segmenter, prepacked
from pnpovss.backbones.bridgetower import BridgeTowerBackbone
from pnpovss.cli import main
from pnpovss.dropout import mask_patches, salience_dropout
from pnpovss.execution import ExecutionOptions
from pnpovss.gradcam import cam_from_attention, layer_attention_and_grad, token_maps
from pnpovss.hooks import capture_outputs


@pytest.fixture(scope="module")
def tiny_bt_dir(tmp_path_factory):
    """Random tiny BridgeTower: 56 px, patch 14 (4x4 grid), 2 cross-modal layers of 2 heads."""
    from tools.testing import build_tiny_bridgetower

    return build_tiny_bridgetower(tmp_path_factory.mktemp("tiny-bt"))


@pytest.fixture(scope="module")
def bt(tiny_bt_dir):
    return BridgeTowerBackbone.from_pretrained(str(tiny_bt_dir))


def images(rng, n=2, shape=(40, 50, 3)):
    return [(rng.random(shape) * 255).astype(np.uint8) for _ in range(n)]


def reference_maps(backbone, pixels, text, layer):
    """Independent computation: the public model's forward with every parameter requiring grad,
    dS/dA by retain_grad + backward."""
    model = backbone.model
    model.requires_grad_(True)
    try:
        module = model.bridgetower.cross_modal_text_layers[layer - 1].crossattention.self
        with torch.enable_grad(), capture_outputs({0: module}) as store:
            px = pixels.clone().requires_grad_(True)
            out = model(input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=px,
                        interpolate_pos_encoding=pixels.shape[-1] != backbone.native_image_size)
            attn = store[0]
            attn.retain_grad()
            out.logits[:, 1].sum().backward()
        assert px.grad is not None and px.grad.abs().max() > 0  # the reference went through the ViT
        return attn.detach(), attn.grad.detach()
    finally:
        model.requires_grad_(False)
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("size, layer", [(56, 1), (84, 1), (56, 2)])
def test_gradcam_equals_full_autograd(bt, rng, size, layer):
    pixels = bt.preprocess(images(rng), size)
    text = bt.build_text("a picture of ", [["cat", "batman"], ["potted plant", "dog", "sky"]])
    ref_a, ref_g = reference_maps(bt, pixels, text, layer=layer)
    embeds = bt.encode_image(pixels)
    ours = layer_attention_and_grad(bt, embeds, text, [layer])[layer]
    assert ref_a.shape == (2, 2, text.input_ids.shape[1], 1 + (size // 14) ** 2)
    assert ref_g.abs().max() > 0
    torch.testing.assert_close(ours[0], ref_a, atol=1e-6, rtol=0)
    for heads in [(0,), (1,), None]:
        expected = cam_from_attention(ref_a, ref_g, heads)
        mine = token_maps(bt, embeds, text, layer, heads)
        assert (mine - expected).abs().max().item() < 1e-5


def test_cached_features_reproduce_public_logit(bt, rng):
    pixels = bt.preprocess(images(rng), 56)
    text = bt.build_text("a picture of ", [["cat"], ["dog", "grass", "sky"]])  # padded batch
    with torch.no_grad():
        public = bt.model(input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=pixels)
    embeds = bt.encode_image(pixels)
    logit, attn = bt.match(embeds, text, [1, 2])
    torch.testing.assert_close(logit.detach(), public.logits[:, 1], atol=1e-6, rtol=0)
    both = layer_attention_and_grad(bt, embeds, text, [1, 2])  # one backward serves several layers
    for layer in (1, 2):
        ref_a, ref_g = reference_maps(bt, pixels, text, layer)
        torch.testing.assert_close(both[layer][1], ref_g, atol=1e-6, rtol=1e-4)


def test_backward_never_enters_vision_tower(bt, rng):
    pixels = bt.preprocess(images(rng, 1), 56)
    embeds = bt.encode_image(pixels)
    assert embeds.shape == (1, 2, 17, 32) and not embeds.requires_grad
    calls = []
    handle = bt.model.bridgetower.vision_model.register_full_backward_hook(lambda *a: calls.append(1))
    try:
        token_maps(bt, embeds, bt.build_text("a picture of ", [["cat"]]), 1, None)
    finally:
        handle.remove()
    assert calls == [] and all(p.grad is None for p in bt.model.parameters())


def test_770_px_interpolates_a_55x55_grid(bt, rng):
    """The paper's size: 770 = 55 patches of 14, position embeddings resized bicubically."""
    assert bt.grid(770) == (55, 55)
    embeds = bt.encode_image(bt.preprocess(images(rng, 1), 770))
    assert embeds.shape == (1, 2, 1 + 55 * 55, 32)
    emb = bt.model.bridgetower.vision_model.visual.embeddings
    table = emb.position_embedding.weight
    grid = table[1:].T.reshape(1, -1, 4, 4)
    expected = torch.nn.functional.interpolate(grid, size=(55, 55), mode="bicubic", align_corners=False)
    got = emb.interpolate_pos_encoding(torch.zeros(1, 1 + 55 * 55, 64), 770, 770)
    torch.testing.assert_close(got[0, 1:], expected.reshape(64, -1).T)
    torch.testing.assert_close(got[0, 0], table[0])
    with pytest.raises(PnpOvssError, match="multiple of the model's patch size 14"):
        bt.grid(768)


def test_bpe_pieces_merge_per_class(bt):
    text = bt.build_text("a picture of ", [["batman", "potted plant", "cat", "zq"]])
    toks = bt.tokenizer.convert_ids_to_tokens(text.input_ids[0])
    pieces = [[toks[i] for i in pos] for pos in text.class_tokens[0]]
    assert pieces == [["Ġbat", "man"], ["Ġpotted", "Ġplant"], ["Ġcat"], ["z", "q"]]
    assert toks[0] == "<s>" and toks[-1] == "</s>"
    with pytest.raises(PnpOvssError, match="at most 64"):
        bt.build_text("a picture of ", [[f"class{i}" for i in range(40)]])


def test_reencode_dropout_masks_the_right_patches(bt, rng, monkeypatch):
    pixels = bt.preprocess(images(rng, 1), 56)
    text = bt.build_text("a picture of ", [["cat", "dog"]])
    seen = []
    real = bt.encode_image
    monkeypatch.setattr(bt, "encode_image", lambda px: (seen.append(px.clone()), real(px))[1])
    cfg = PipelineConfig(layer=1, head=1, drop_iters=3, drop_k=3)
    out = salience_dropout(bt, pixels, real(pixels), text, cfg)
    assert [int(d.sum()) for d in out.dropped] == [3, 6] and len(seen) == 2
    first = token_maps(bt, real(pixels), text, 1, (1,))[0]
    saliency = sum(first[pos].mean(0) for pos in text.class_tokens[0])
    assert set(torch.topk(saliency, 3).indices.tolist()) == set(out.dropped[0][0].nonzero()[:, 0].tolist())
    for px, dropped in zip(seen, out.dropped):
        torch.testing.assert_close(px, mask_patches(pixels, dropped, (4, 4)))
        hidden = dropped[0].view(4, 4).repeat_interleave(14, 0).repeat_interleave(14, 1)
        assert px[0][:, hidden].abs().sum() == 0 and torch.equal(px[0][:, ~hidden], pixels[0][:, ~hidden])


def test_attention_drop_hides_patches_from_the_cross_modal_encoder(bt, rng):
    embeds = bt.encode_image(bt.preprocess(images(rng, 1), 56))
    text = bt.build_text("a picture of ", [["cat"]])
    key_mask = torch.ones(1, 17, dtype=torch.long)
    key_mask[0, [3, 9]] = 0
    logit, attn = bt.match(embeds, text, [1, 2], key_mask=key_mask)
    assert all((a[..., [3, 9]] == 0).all() for a in attn.values())
    scrambled = embeds.clone()
    scrambled[:, :, [3, 9]] = torch.randn_like(scrambled[:, :, [3, 9]])  # what hidden patches hold is never read
    torch.testing.assert_close(bt.match(scrambled, text, [1], key_mask=key_mask)[0], logit, atol=1e-6, rtol=0)
    assert (bt.match(scrambled, text, [1])[0] - bt.match(embeds, text, [1])[0]).abs().item() > 1e-6
    cfg = PipelineConfig(layer=1, head=0, drop_iters=3, drop_k=2, drop_mode="attention")
    assert int(salience_dropout(bt, bt.preprocess(images(rng, 1), 56), embeds, text, cfg).dropped[-1].sum()) == 4


def test_paper_defaults_and_model_preset(bt, tiny_bt_dir):
    plain = Segmenter(bt)
    assert plain.config.image_size == 770 and plain.config.layer == 4 and plain.config.head is None
    seg = Segmenter.from_pretrained(str(tiny_bt_dir))  # the tiny model's preset pins its own size
    assert seg.config.image_size == 56 and seg.config.layer == 1


@pytest.mark.skipif(not prepacked.available(), reason="this torch has no oneDNN prepacked linear")
def test_bf16_runs_the_vision_mlps_prepacked_with_autocast_maps(tiny_bt_dir, rng, monkeypatch):
    """BridgeTower's vision tower: its MLP linears run prepacked under bf16 on a CPU (its attention
    is nn.MultiheadAttention, left to autocast), with the maps autocast gives."""
    img = images(rng, 1, (30, 44, 3))[0]
    calls, real = set(), prepacked.linear
    monkeypatch.setattr(prepacked, "linear", lambda m, x: calls.add(id(m)) or real(m, x))
    maps = {}
    for packed in (True, False):
        seg = Segmenter.from_pretrained(str(tiny_bt_dir), execution=ExecutionOptions(prepack=packed))
        maps[packed] = seg.segment(img, ["cat", "batman"], keep_all=True, dtype="bf16").grid_maps
        if packed:
            linears = seg.backbone.vision_linears()
            assert calls == {id(m) for m in linears}  # no image projections: BridgeTower's image side sees the text
            calls.clear()
    assert linears and all(type(m) is torch.nn.Linear for m in linears)
    assert not calls  # prepack=False: autocast's linear only
    np.testing.assert_allclose(maps[True], maps[False], rtol=1e-3, atol=1e-3 * np.abs(maps[False]).max())


def test_cli_segment_on_saved_tiny_bridgetower(tiny_bt_dir, tmp_path, rng):
    Image.fromarray(images(rng, 1, (30, 44, 3))[0]).save(tmp_path / "im.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["segment", str(tmp_path / "im.png"), "--classes", "cat,batman", "--keep-all",
                                    "--model", str(tiny_bt_dir), "--out", str(out), "--drop-iters", "2"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "im.json").read_text())
    assert meta["classes"] == ["background", "cat", "batman"] and meta["config"]["image_size"] == 56
    assert Image.open(out / "im.labels.png").size == (44, 30)


def test_presence_scores_are_the_public_itm_probability(bt, rng):
    """BridgeTower gets class presence through the same Backbone interface: one image's cached
    features against many captions (repeated, since its cross-modal encoder does not broadcast)."""
    from pnpovss.presence import presence_scores

    pixels = bt.preprocess(images(rng, 1), 56)
    names = ["cat", "batman", "sky"]
    got = presence_scores(bt, bt.encode_image(pixels), names, "a picture of ", chunk_size=2)
    for name, score in zip(names, got):
        text = bt.build_text("a picture of ", [[name]])
        with torch.no_grad():
            public = bt.model(input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=pixels)
        assert score == pytest.approx(torch.softmax(public.logits, dim=-1)[0, 1].item(), abs=1e-5)
