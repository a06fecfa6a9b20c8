"""Salience DropOut: which patches are dropped, that they stay dropped, and that the re-encoded
image really has those pixels at the mean colour."""

import numpy as np
import pytest
import torch

from pnpovss import PipelineConfig
from pnpovss import dropout as dropout_mod
from pnpovss.dropout import mask_patches, salience_dropout, select_patches


def test_select_fixed_k_takes_most_salient_remaining():
    sal = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.2, 0.0]])
    dropped = torch.tensor([[False, True, False, False, False, False]])
    new = select_patches(sal, dropped, k=2)
    assert new.nonzero()[:, 1].tolist() == [2, 3]  # 0.9 already dropped -> 0.7, 0.5


def test_select_halving_and_exhaustion():
    sal = torch.arange(8, dtype=torch.float32)[None]
    dropped = torch.zeros(1, 8, dtype=torch.bool)
    first = select_patches(sal, dropped, k=None)
    assert first.nonzero()[:, 1].tolist() == [4, 5, 6, 7]
    second = select_patches(sal, first, k=None)
    assert second.nonzero()[:, 1].tolist() == [2, 3]
    everything = torch.ones(1, 8, dtype=torch.bool)
    assert not select_patches(sal, everything, k=3).any()
    assert select_patches(sal, dropped, k=100).all()


def test_mask_patches_zeroes_exactly_the_patch_pixels():
    px = torch.ones(1, 3, 8, 8)
    dropped = torch.tensor([[False, True, False, False]])  # grid 2x2, patch (0, 1)
    out = mask_patches(px, dropped, (2, 2))
    assert out[0, :, :4, 4:].abs().sum() == 0
    assert out.sum() == 3 * 64 - 3 * 16


@pytest.mark.parametrize("halving", [False, True])
def test_dropout_passes_reencode_masked_pixels(segmenter, rng, monkeypatch, halving):
    bb = segmenter.backbone
    image = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    pixels = bb.preprocess([image], 32)
    text = bb.build_text("a picture of ", [["cat", "dog"]])
    seen_pixels, seen_maps = [], []
    real_encode, real_maps = bb.encode_image, dropout_mod.token_maps
    monkeypatch.setattr(bb, "encode_image", lambda px: (seen_pixels.append(px.clone()), real_encode(px))[1])

    def recording_maps(*args, **kwargs):
        out = real_maps(*args, **kwargs)
        seen_maps.append(out.clone())
        return out

    monkeypatch.setattr(dropout_mod, "token_maps", recording_maps)
    cfg = PipelineConfig(layer=2, head=1, drop_iters=3, drop_k=3, halving=halving)
    result = salience_dropout(bb, pixels, real_encode(pixels), text, cfg)

    assert len(seen_pixels) == 2 and len(result.dropped) == 2
    expected_counts = [8, 12] if halving else [3, 6]
    assert [int(d.sum()) for d in result.dropped] == expected_counts
    assert bool((result.dropped[1] >= result.dropped[0]).all())  # cumulative
    for px, dropped in zip(seen_pixels, result.dropped):
        torch.testing.assert_close(px, mask_patches(pixels, dropped, (4, 4)))
        keep = ~dropped[0].view(4, 4).repeat_interleave(8, 0).repeat_interleave(8, 1)
        assert px[0][:, ~keep].abs().sum() == 0 and torch.equal(px[0][:, keep], pixels[0][:, keep])
    # pass 1's top-k are exactly the most salient patches of pass 0 (class maps summed)
    cls_sum = sum(seen_maps[0][0, pos].mean(0) for pos in text.class_tokens[0])
    k = 8 if halving else 3
    assert set(torch.topk(cls_sum, k).indices.tolist()) == set(result.dropped[0][0].nonzero()[:, 0].tolist())
    # combined = 2 * pass0 + pass1 + pass2 with dropped patches zeroed in later passes
    masks = [torch.zeros(16, dtype=torch.bool), result.dropped[0][0], result.dropped[1][0]]
    expect = 0
    for t, (maps, m) in enumerate(zip(seen_maps, masks)):
        per_class = torch.stack([(maps[0] * ~m)[pos].mean(0) for pos in text.class_tokens[0]])
        expect = expect + (2 if t == 0 else 1) * per_class
        torch.testing.assert_close(result.passes[t][0], per_class.view(2, 4, 4))  # each pass, as recorded
        if t:
            assert (per_class[:, m] == 0).all()
    torch.testing.assert_close(result.class_maps[0], expect.view(2, 4, 4))
    assert len(result.passes) == 3


def test_attention_drop_mode_encodes_once(segmenter, rng, monkeypatch):
    bb = segmenter.backbone
    pixels = bb.preprocess([(rng.random((32, 32, 3)) * 255).astype(np.uint8)], 32)
    embeds = bb.encode_image(pixels)
    text = bb.build_text("a picture of ", [["cat"]])
    calls = []
    monkeypatch.setattr(bb, "encode_image", lambda px: calls.append(1))
    cfg = PipelineConfig(layer=2, head=0, drop_iters=4, drop_k=2, drop_mode="attention")
    out = salience_dropout(bb, pixels, embeds, text, cfg)
    assert calls == [] and int(out.dropped[-1].sum()) == 6
    assert (out.class_maps[0].view(-1)[out.dropped[-1][0]] != 0).any()  # pass 0 saw them


def test_reference_saliency_counts_every_piece_and_sep():
    """The reference's patch choice: the sum over every class word piece and [SEP] (a 2-piece class
    weighs double); ours: the sum of per-class means."""
    from pnpovss.backbones.base import TextBatch
    from pnpovss.dropout import reference_saliency

    maps = torch.zeros(1, 9, 3)
    maps[0, 4, 0] = maps[0, 5, 0] = 1.0  # class 0 ("bat ##man"): both pieces on patch 0
    maps[0, 6, 1] = 1.5                  # class 1 (one piece) on patch 1
    maps[0, 7, 2] = 5.0                  # [SEP] (last real token) on patch 2
    maps[0, 8, :] = 100.0                # padding: never counted
    text = TextBatch(torch.zeros(1, 9, dtype=torch.long), torch.tensor([[1] * 8 + [0]]), [[[4, 5], [6]]], ["x"])
    torch.testing.assert_close(reference_saliency(maps, text), torch.tensor([[2.0, 1.5, 5.0]]))
    ours = torch.stack([m.sum(0) for m in dropout_mod.pool_classes(maps, text.class_tokens)])
    torch.testing.assert_close(ours, torch.tensor([[1.0, 1.5, 0.0]]))
    assert select_patches(reference_saliency(maps, text), torch.zeros(1, 3, dtype=torch.bool), 1).nonzero()[0, 1] == 2
    assert select_patches(ours, torch.zeros(1, 3, dtype=torch.bool), 1).nonzero()[0, 1] == 1


def test_minmax_pass_combination(segmenter, rng):
    """``pass_combine="minmax"``: each pass's class map is min-max normalised before the (pass 0
    twice) sum. With k = 0 nothing is dropped, so both passes equal pass 0: the sum is 3 x its
    normalised map; the raw ``sum`` is 3 x the raw map."""
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    bb = segmenter.backbone
    px = bb.preprocess([image], 32)
    text = bb.build_text("a picture of ", [["cat", "dog"]])
    cfg = segmenter.config.replace(drop_iters=1)
    raw = salience_dropout(bb, px, bb.encode_image(px), text, cfg).class_maps[0] / 2
    two = cfg.replace(drop_iters=2, drop_k=0)
    summed = salience_dropout(bb, px, bb.encode_image(px), text, two).class_maps[0]
    normed = salience_dropout(bb, px, bb.encode_image(px), text, two.replace(pass_combine="minmax")).class_maps[0]
    flat = raw.view(2, -1)
    expect = (flat - flat.min(1, keepdim=True).values) / (flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values)
    torch.testing.assert_close(summed, 3 * raw, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(normed.view(2, -1), 3 * expect, rtol=1e-5, atol=1e-6)
