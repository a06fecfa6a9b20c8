"""The Python API: loading through from_pretrained, presets, caching, batch = single."""

import json

import numpy as np
import pytest

from pnpovss import PipelineConfig, PnpOvssError, Segmenter, save_preset


def test_from_pretrained_local_dir_and_overrides(tiny_blip_dir):
    seg = Segmenter.from_pretrained(str(tiny_blip_dir), layer=3, head=(0, 1), threshold=0.3)
    assert seg.config.layer == 3 and seg.config.head == (0, 1) and seg.config.threshold == 0.3
    assert seg.backbone.num_layers == 3 and seg.backbone.num_heads == 2
    assert seg.backbone.grid(32) == (4, 4) and seg.backbone.grid(768) == (96, 96)


def test_default_layer_is_checked_against_the_model(tiny_blip_dir):
    with pytest.raises(PnpOvssError, match="layer 8 is out of range"):
        Segmenter.from_pretrained(str(tiny_blip_dir))


def test_presets_model_dir_then_file_then_kwargs(tiny_blip_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_blip_dir, model)
    (model / "pnpovss_preset.json").write_text(json.dumps({"config": {"layer": 2, "head": 1, "threshold": 0.2}}))
    assert Segmenter.from_pretrained(str(model)).config.layer == 2
    user = tmp_path / "best.json"
    save_preset(user, {"layer": 3, "threshold": 0.4}, reward=1.0)
    seg = Segmenter.from_pretrained(str(model), preset=user, threshold=0.5)
    assert (seg.config.layer, seg.config.head, seg.config.threshold) == (3, 1, 0.5)
    (tmp_path / "bad.json").write_text(json.dumps({"config": {"layr": 3}}))
    with pytest.raises(PnpOvssError, match="unknown pipeline option"):
        Segmenter.from_pretrained(str(model), preset=tmp_path / "bad.json")


def test_image_encoding_is_cached(segmenter, rng, monkeypatch):
    img = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    calls = []
    real = segmenter.backbone.encode_image
    monkeypatch.setattr(segmenter.backbone, "encode_image", lambda px: (calls.append(1), real(px))[1])
    a = segmenter.segment(img, ["cat", "dog"], keep_all=True, drop_iters=1)
    b = segmenter.segment(img, ["sky"], keep_all=True, drop_iters=1, threshold=0.5)
    segmenter.segment(img, ["cat", "sky"], drop_iters=1)  # presence scoring reuses the encoding too
    assert len(calls) == 1
    segmenter.segment(img[:, ::-1], ["sky"], keep_all=True, drop_iters=1)
    assert len(calls) == 2
    assert a.labels.shape == (20, 30) and a.classes == ["background", "cat", "dog"] and b.classes == ["background", "sky"]
    assert a.overlay().size[0] >= 30 and a.heatmap("cat").size == (30, 20)  # the legend may be wider


def test_batch_equals_single(segmenter, rng):
    imgs = [(rng.random((24, 24, 3)) * 255).astype(np.uint8) for _ in range(2)]
    classes = [["cat", "dog"], ["potted plant", "sky", "car"]]
    batch = segmenter.segment_batch(imgs, classes, keep_all=True)
    for img, cls, res in zip(imgs, classes, batch):
        single = segmenter.segment(img, cls, keep_all=True)
        np.testing.assert_allclose(single.grid_maps, res.grid_maps, rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(single.labels, res.labels)


def test_config_validation():
    with pytest.raises(PnpOvssError, match="drop_iters"):
        PipelineConfig(drop_iters=0)
    assert PipelineConfig.from_dict(PipelineConfig(head=(1, 2)).to_dict()).head == (1, 2)


def test_backbone_check_config_is_the_one_model_dependent_check(segmenter):
    """Layer, heads and input size are checked against the model by ``Backbone.check_config``; the
    Segmenter's validation is that call (the tiny model: 3 layers, 2 heads, 8 px patches)."""
    bb, cfg = segmenter.backbone, segmenter.config
    bb.check_config(cfg)
    bb.check_config(cfg, 48)
    for bad, message in ((dict(layer=4), "layer 4 is out of range"), (dict(head=(0, 2)), "head 2 is out of range"),
                         (dict(image_size=36), "36")):
        with pytest.raises(PnpOvssError, match=message):
            bb.check_config(cfg.replace(**bad))
        with pytest.raises(PnpOvssError, match=message):
            segmenter.validate(cfg.replace(**bad))
    with pytest.raises(PnpOvssError, match="36"):
        bb.check_config(cfg, 36)


def test_many_candidates_give_no_tokenizer_length_warning():
    """A candidate list longer than the model's captions is split by the presence stage; the
    tokenizer's "sequence length is longer than ... indexing errors" warning must not appear
    (at transformers' default verbosity, which conftest turns down)."""
    import logging

    from transformers.utils import logging as hf_logging

    seg = Segmenter.from_pretrained("toy", device="cpu")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.get_logger().addHandler(handler)
    try:
        _segment_many(seg)
    finally:
        hf_logging.get_logger().removeHandler(handler)
        hf_logging.set_verbosity(level)
    assert not [r for r in records if "Token indices sequence length" in r]


def _segment_many(seg):
    words = sorted(w for w in seg.backbone.tokenizer.get_vocab() if w.isalpha() and w != "background")
    names = [f"{a} {b}" for a in words[:5] for b in words[5:11]][:30]
    assert seg.backbone.caption_length(seg.config.prompt, names) > seg.backbone.tokenizer.model_max_length
    res = seg.segment(np.zeros((64, 64, 3), np.uint8), names, presence_threshold=0.0)
    assert len(res.presence.scores) == 30


def test_stream_reads_classes_as_batch_does(segmenter, rng):
    """``segment_stream`` with one flat class list gives every image all of it, as ``segment_batch``
    does (it once sliced the flat list per image: one class each); per-image lists still work."""
    imgs = [(rng.random((24, 24, 3)) * 255).astype(np.uint8) for _ in range(3)]
    flat = ["circle", "square", "star"]
    for classes in (flat, "circle,square,star", [["circle"], ["square", "star"], ["star"]]):
        batch = segmenter.segment_batch(imgs, classes, keep_all=True)
        streamed = [r for part in segmenter.segment_stream(imgs, classes, batch_size=2, keep_all=True) for r in part]
        assert [r.classes for r in streamed] == [r.classes for r in batch]
        for a, b in zip(streamed, batch):
            np.testing.assert_array_equal(a.labels, b.labels)
    assert [r.classes for r in batch] == [["background", "circle"], ["background", "square", "star"],
                                          ["background", "star"]]
    assert all(r.classes == ["background", *flat] for r in segmenter.segment_batch(imgs, flat, keep_all=True))
    with pytest.raises(PnpOvssError, match="got 2 class lists for 3 images"):
        next(segmenter.segment_stream(imgs, [["circle"], ["star"]], batch_size=2))
