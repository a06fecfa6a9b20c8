"""The reference's evaluation protocol (``--labels reference``) and the options that reproduce
its scripts: whole-vocabulary captions cut at 500 tokens, pass-0-only combination, the
normalise-then-zero order, bicubic-constant upsampling, class-name tables, bare-name reward text."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pnpovss import PipelineConfig, load_preset
from pnpovss import evaluate as evaluate_mod
from pnpovss.cli import main
from pnpovss.datasets import load_dataset
from pnpovss.datasets.mmseg import ADE20K, PascalVOC
from pnpovss.dropout import combine_pass_maps
from pnpovss.errors import ConfigError
from pnpovss.evaluate import evaluate, predict, vocabulary_caption
from pnpovss.fields import parse_assignments
from pnpovss.postprocess import upsample_bicubic_constant


@pytest.fixture(scope="module")
def toy():
    return load_dataset("toyworld", seed=0, images=3, size=48)


def segmenter_with(segmenter, **settings):
    """The shared tiny segmenter with other settings (a copy: the session fixture stays as it was)."""
    from pnpovss import Segmenter

    return Segmenter(segmenter.backbone, segmenter.config.replace(layer=2, head=1, **settings))


@pytest.mark.parametrize("item, message", [
    ("combine_passes=last", "combine_passes='last': expected one of 'all', 'first'"),
    ("zero_dropped=never", "expected one of 'before_minmax', 'after_minmax'"),
    ("upsample=nearest", "expected one of 'bilinear', 'bicubic_constant'"),
    ("class_names=paper", "expected one of 'package', 'reference-cvpr', 'reference-head'"),
    ("reward_synonyms=maybe", "expected true or false"),
    ("eval_labels=all", "expected one of 'gt', 'reference'"),
])
def test_new_fields_are_checked_like_every_field(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_assignments([item])
    key, _, _ = item.partition("=")
    with pytest.raises(ConfigError, match=key):
        PipelineConfig().replace(**{key: 1})  # a wrong type from a preset or the API


def test_defaults_leave_segment_as_it_was():
    cfg = PipelineConfig()
    assert (cfg.combine_passes, cfg.zero_dropped, cfg.upsample, cfg.class_names, cfg.reward_synonyms,
            cfg.eval_labels) == ("all", "before_minmax", "bilinear", "package", True, "gt")


def test_every_reference_cvpr_preset_reproduces_its_script():
    for name in ("voc", "context", "ade20k", "coco-object", "coco-stuff"):
        p = load_preset(f"reference-cvpr-{name}")
        assert (p["eval_labels"], p["class_names"], p["upsample"], p["zero_dropped"]) == (
            "reference", "reference-cvpr", "bicubic_constant", "after_minmax")
        assert p["postprocess_max_side"] is None and p["reward_synonyms"] is False
        assert p["combine_passes"] == ("first" if name == "voc" else "all")
        assert p["crf_bilateral_sxy"] == (20.0 if name.startswith("coco") else 50.0)
        assert p["background_mode"] == ("dataset" if name == "coco-stuff" else "always")
    head = load_preset("reference-head")
    assert head["class_names"] == "reference-head" and head["postprocess_max_side"] is None
    about = json.loads((Path(__file__).resolve().parent.parent / "pnpovss/presets/reference-cvpr-ade20k.json")
                       .read_text())["about"]
    assert about["model"].startswith("Salesforce/blip-itm-large-flickr")


def test_combination_options():
    raw = [torch.tensor([[0.0, 1.0, 4.0, 2.0]]), torch.tensor([[5.0, 1.0, 0.5, 3.0]])]
    keep = [torch.ones(4, dtype=torch.bool), torch.tensor([True, True, True, False])]
    minmax = PipelineConfig(pass_combine="minmax")
    # pass 1, patch 3 dropped: zeroing first makes 0 its minimum; the reference's minimum stays 0.5
    before = combine_pass_maps(raw, keep, minmax)
    after = combine_pass_maps(raw, keep, minmax.replace(zero_dropped="after_minmax"))
    p0 = torch.tensor([0.0, 0.25, 1.0, 0.5])
    assert torch.allclose(before[0], 2 * p0 + torch.tensor([1.0, 0.2, 0.1, 0.0]))
    assert torch.allclose(after[0], 2 * p0 + torch.tensor([1.0, 0.5 / 4.5, 0.0, 0.0]))
    # patch 0, pass 1's maximum, dropped: zeroing first rescales the rest, the reference does not
    keep[1] = torch.tensor([False, True, True, True])
    before = combine_pass_maps(raw, keep, minmax)
    after = combine_pass_maps(raw, keep, minmax.replace(zero_dropped="after_minmax"))
    assert torch.allclose(before[0], 2 * p0 + torch.tensor([0.0, 1 / 3, 0.5 / 3, 1.0]))
    assert torch.allclose(after[0], 2 * p0 + torch.tensor([0.0, 0.5 / 4.5, 0.0, 2.5 / 4.5]))
    first = combine_pass_maps(raw, keep, minmax.replace(combine_passes="first"))
    assert torch.allclose(first[0], 2 * p0)
    assert torch.allclose(combine_pass_maps(raw, keep, PipelineConfig()), 2 * raw[0] + raw[1] * keep[1])


def test_pass_zero_only_runs_one_pass(segmenter, rng, monkeypatch):
    seg = segmenter_with(segmenter, drop_iters=5, halving=True, pass_combine="minmax", combine_passes="first")
    image = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    encodes = []
    real = seg.backbone.encode_image
    monkeypatch.setattr(seg.backbone, "encode_image", lambda px: (encodes.append(1), real(px))[1])
    first = seg.segment(image, ["cat", "dog"], keep_all=True)
    assert len(encodes) == 1  # the image's own encoding; no re-encoded pass
    single = seg.segment(image, ["cat", "dog"], keep_all=True, drop_iters=1, combine_passes="all")
    assert np.array_equal(first.grid_maps, single.grid_maps)


def test_bicubic_constant_matches_skimage_resize():
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(0)
    maps = (rng.random((3, 9, 7)) > 0.5) * rng.random((3, 9, 7)).astype(np.float32)
    maps[2] = 1.0  # a constant map: shifted to 0, as Attmap_resize does
    got = upsample_bicubic_constant(maps, (61, 40))
    for m, g in zip(maps, got):
        m = m - m.min()
        m = m / m.max() if m.max() > 0 else m
        assert np.array_equal(g, transform.resize(m, (61, 40), order=3, mode="constant"))
    assert not got[2].any() and got[0].max() <= 1.0 and got[0][0, 0] < got[0].max()


def test_reference_class_name_tables(tmp_path):
    voc = PascalVOC.__new__(PascalVOC)
    voc.synonyms = [["background"]] + [[n.strip() for n in line.split(",")] for line in
                                       (Path(__file__).resolve().parent.parent / "pnpovss/datasets/classnames/voc.txt")
                                       .read_text().splitlines()[1:]]
    voc.classnames_file = "voc.txt"
    assert voc.caption_names() == voc.classes
    ref = voc.caption_names("reference-cvpr")
    assert [ref[11], ref[16], ref[20]] == ["table", "pottedplant", "tvmonitor"] and ref[0] == "background"
    ade = ADE20K.__new__(ADE20K)
    ade.synonyms = [[n.strip() for n in line.split(",")] for line in
                    (Path(__file__).resolve().parent.parent / "pnpovss/datasets/classnames/ade20k.txt").read_text().splitlines()]
    ade.classnames_file = "ade20k.txt"
    cvpr, head = ade.caption_names("reference-cvpr"), ade.caption_names("reference-head")
    assert sum(a != b for a, b in zip(ade.classes, cvpr)) == 12 and sum(a != b for a, b in zip(ade.classes, head)) == 22
    assert head[ade.classes.index("chest of drawers")] == "chestofdrawers" and cvpr[ade.classes.index("earth")] == "ground"
    toy = load_dataset("toyworld", seed=0, images=1, size=48)
    assert toy.caption_names("reference-cvpr") == toy.classes  # the reference never evaluated it


def test_reference_protocol_captions_the_vocabulary_and_keeps_the_labels(segmenter, toy):
    seg = segmenter_with(segmenter)
    sample = toy[0]
    labels = toy.image_labels(sample.label)
    assert 0 < len(labels) < len(toy.foreground_ids)
    pred, used = predict(seg, toy, sample, labels="reference")
    assert used == labels and set(np.unique(pred)) <= {0, *labels}
    full = seg.segment(sample.image, [toy.classes[i] for i in toy.foreground_ids], keep_all=True)
    kept = seg.segment(sample.image, [toy.classes[i] for i in labels], caption=[toy.classes[i] for i in toy.foreground_ids])
    rows = [toy.foreground_ids.index(i) for i in labels]
    assert np.array_equal(kept.grid_maps, full.grid_maps[rows])  # maps made with the whole caption
    gt = seg.segment(sample.image, [toy.classes[i] for i in labels], keep_all=True)
    assert not np.array_equal(kept.grid_maps, gt.grid_maps)  # ... which differ from a labels-only caption
    assert kept.classes == ["background", *(toy.classes[i] for i in labels)]
    with pytest.raises(Exception, match="'moon' is not in the caption's classes"):
        seg.segment(sample.image, ["moon"], caption=["circle"])


def test_caption_is_cut_where_the_reference_truncates(segmenter, toy, monkeypatch, caplog):
    seg = segmenter_with(segmenter)
    names = [toy.classes[i] for i in toy.foreground_ids]
    tok = seg.backbone.tokenizer
    full = len(tok(seg.config.prompt + " ".join(names))["input_ids"])
    limit = full - 3
    truncated = tok.decode(tok(seg.config.prompt + " ".join(names), truncation=True, max_length=limit)["input_ids"],
                           skip_special_tokens=True)
    expected = [n for n in names if n in truncated.split()]
    assert 0 < len(expected) < len(names)
    assert seg.backbone.classes_within(seg.config.prompt, names, limit) == len(expected)
    monkeypatch.setattr(evaluate_mod, "REFERENCE_CAPTION_TOKENS", limit)
    with caplog.at_level(logging.WARNING, logger="pnpovss.evaluate"):
        vocab = vocabulary_caption(seg, toy)
    assert [toy.classes[i] for i in vocab] == expected
    cut = names[len(expected):]
    assert f"{len(cut)} classes are never predicted: {', '.join(cut)}" in caplog.text
    result = evaluate(seg, toy, range(len(toy)), labels="reference", progress=False)
    for name in cut:
        assert result.matrix[:, toy.classes.index(name)].sum() == 0


def test_eval_takes_the_protocol_from_the_preset(tiny_blip_dir, tmp_path):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"config": {"layer": 2, "head": 1, "drop_iters": 2, "eval_labels": "reference"}}))
    for extra, protocol in (([], "reference"), (["--labels", "gt"], "gt")):
        out = tmp_path / f"{protocol}.json"
        res = CliRunner().invoke(main, ["eval", "--dataset", "toyworld", "--images", "2", "--model", str(tiny_blip_dir),
                                        "--preset", str(preset), "--json", str(out), "--threads", "1", *extra],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert json.loads(out.read_text())["labels"] == protocol


def test_tune_takes_the_reference_protocol_from_its_configuration(segmenter, toy, tiny_clip_dir, tmp_path):
    from pnpovss.reward import ClipScorer, load_clip
    from pnpovss.search import RewardEvaluator

    res = CliRunner().invoke(main, ["tune", "--dataset", "toyworld", "--labels", "reference", "--model", "toy",
                                    "--out", str(tmp_path / "t")])
    assert res.exit_code == 1 and "--set eval_labels=reference" in res.output

    class Recording(ClipScorer):
        def text_embeddings(self, names):
            self.texts = names
            return super().text_embeddings(names)

    scorer = Recording(load_clip(str(tiny_clip_dir)))
    seg = segmenter_with(segmenter, eval_labels="reference", reward_synonyms=False)
    ev = RewardEvaluator(seg, toy, range(len(toy)), scorer)
    ev.build(progress=False)
    assert scorer.texts == [[toy.classes[i]] for i in toy.foreground_ids]
    entry = ev._images[0]
    assert entry["caption"] == toy.foreground_ids and entry["labels"] == toy.image_labels(toy[0].label)
    scores = ev.evaluate({"layer": 2, "head": 1, "threshold": 0.15})
    gt = RewardEvaluator(segmenter_with(segmenter), toy, range(len(toy)), scorer)
    assert scores != gt.evaluate({"layer": 2, "head": 1, "threshold": 0.15})
