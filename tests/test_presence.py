"""Class presence: scores are the ITM match probability, the selection rules, the recurrent check,
keep_all = the paper's pipeline, vocabularies and the eval protocols."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pnpovss import PnpOvssError, Segmenter
from pnpovss.cli import main
from pnpovss.datasets import load_vocabulary
from pnpovss.postprocess import postprocess
from pnpovss.presence import Presence, clip_opinion, presence_scores, select_classes
from pnpovss.toyworld import SHAPES

ROOT = Path(__file__).resolve().parent.parent


def test_scores_equal_the_public_itm_probability(segmenter, rng):
    """Against the model's own whole-network forward (vision encoder with eager attention, one
    caption at a time): the chunked, broadcast scores are the same probabilities."""
    bb = segmenter.backbone
    img = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
    pixels = bb.preprocess([img], 32)
    names = ["cat", "dog", "sky", "grass", "tree"]
    got = presence_scores(bb, bb.encode_image(pixels), names, "a picture of ", chunk_size=2)
    for name, score in zip(names, got):
        text = bb.build_text("a picture of ", [[name]])
        with torch.no_grad():
            out = bb.model(input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=pixels)
        ref = torch.softmax(out.itm_score, dim=-1)[0, 1].item()
        assert score == pytest.approx(ref, abs=1e-5)


def test_selection_threshold_capacity_and_nothing_present():
    names, scores = ["a", "b", "c", "d"], [0.2, 0.95, 0.6, 0.91]
    assert select_classes(names, scores, 0.5, background=True) == (["b", "c", "d"], [])  # candidate order
    kept, notes = select_classes(names, scores, 0.5, background=True, fits=lambda n: len(n) <= 2)
    assert kept == ["b", "d"] and "did not fit" in notes[0] and "c" in notes[0]  # the best-scoring ones
    kept, notes = select_classes(names, scores, 0.99, background=True)
    assert kept == [] and "all background" in notes[0]
    kept, notes = select_classes(names, scores, 0.99, background=False)
    assert kept == ["b"] and "best-scoring" in notes[0]


def test_second_opinion_drops_only_uncertain_candidates_clip_rejects():
    """CLIP vetoes a candidate only below presence_confident and under the ratio of its best."""
    names, scores = ["a", "b", "c", "d"], [0.995, 0.95, 0.9, 0.2]
    clip = [0.0001, 0.0001, 0.5, 0.4998]
    kept, notes = select_classes(names, scores, 0.5, background=True, clip=clip, clip_ratio=0.01, confident=0.99)
    assert kept == ["a", "c"]  # a: confident, kept whatever CLIP says; b: uncertain, 0.0002 of CLIP's best
    assert len(notes) == 1 and "second opinion dropped b " in notes[0]
    assert select_classes(names, scores, 0.5, background=True, clip=clip, clip_ratio=0.0, confident=0.99)[0] == [
        "a", "b", "c"]  # ratio 0: off
    assert select_classes(names, scores, 0.5, background=True, clip=clip, clip_ratio=0.01, confident=0.9)[0] == [
        "a", "b", "c"]  # all confident
    kept, notes = select_classes(["b", "x"], [0.95, 0.1], 0.5, background=True, clip=[1e-5, 1 - 1e-5],
                                 clip_ratio=0.01, confident=0.99)
    assert kept == [] and "second opinion" in notes[0] and "all background" in notes[1]


def test_clip_opinion_is_clips_own_zero_shot_softmax(tiny_clip_dir, rng):
    """Against a direct computation: softmax over the candidates at the model's learned scale."""
    from pnpovss.reward import ClipScorer, load_clip

    scorer = ClipScorer(load_clip(str(tiny_clip_dir)), template="a photo of a {}.")
    img = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    names = ["cat", "dog", "sky"]
    got = clip_opinion(scorer, img, names)
    model = scorer.clip.model
    with torch.no_grad():
        image = torch.nn.functional.normalize(model.encode_image(scorer.image_tensor(img)[None]), dim=-1)
        text = torch.nn.functional.normalize(
            model.encode_text(scorer.clip.tokenizer([f"a photo of a {n}." for n in names])), dim=-1)
        ref = torch.softmax(model.logit_scale.exp() * image @ text.T, dim=-1)[0].numpy()
    assert np.allclose(got, ref, atol=1e-6) and got.sum() == pytest.approx(1.0)


def test_second_opinion_in_the_segmenter_loads_the_configured_clip(segmenter, tiny_clip_dir, rng):
    seg = Segmenter(segmenter.backbone, segmenter.config)
    img = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    names = ["cat", "dog", "sky"]
    with pytest.raises(PnpOvssError, match="needs a CLIP model"):
        seg.segment(img, names, presence_clip_ratio=0.5)
    res = seg.segment(img, names, presence_threshold=0.0, presence_confident=1.0, presence_clip_ratio=0.5,
                      presence_clip_model=str(tiny_clip_dir))
    pres = res.presence
    assert pres.clip_scores is not None and sum(pres.clip_scores) == pytest.approx(1.0)
    assert pres.kept == [c for c, p in zip(names, pres.clip_scores) if p >= 0.5 * max(pres.clip_scores)]
    assert all("clip" in v for v in pres.to_json().values())
    assert res.classes == ["background", *pres.kept]
    first = seg.clip_scorer(seg.config.replace(presence_clip_model=str(tiny_clip_dir)))
    assert seg.clip_scorer(seg.config.replace(presence_clip_model=str(tiny_clip_dir))) is first  # loaded once
    assert seg.detect_classes(img, names, presence_threshold=0.0, presence_confident=1.0, presence_clip_ratio=0.5,
                              presence_clip_model=str(tiny_clip_dir)).kept == pres.kept
    with pytest.raises(PnpOvssError, match="presence_clip_template must contain"):
        seg.segment(img, names, presence_clip_template="a photo")


def test_keep_all_is_the_papers_pipeline(segmenter, rng):
    """keep_all=True runs exactly the known-classes computation (maps of every given class, then
    the post-processing), whatever the presence scores say."""
    img = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    names = ["cat", "dog"]
    res = segmenter.segment(img, names, keep_all=True, drop_iters=2)
    cfg = segmenter.config.replace(drop_iters=2)
    bb = segmenter.backbone
    pixels = bb.preprocess([img], segmenter.image_size(cfg))
    maps = segmenter.class_grid_maps(pixels, bb.encode_image(pixels), [names], cfg)[0]
    labels, scores = postprocess(maps, img, cfg)
    assert res.classes == ["background", *names] and res.presence is None
    assert np.array_equal(res.labels, labels) and np.allclose(res.scores, scores)


def test_filtered_result_carries_every_score_and_uses_the_kept_classes(segmenter, rng):
    img = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    names = ["cat", "dog", "sky"]
    scores = segmenter.detect_classes(img, names).scores
    threshold = sorted(scores)[1]  # keeps exactly the two best
    res = segmenter.segment(img, names, presence_threshold=threshold)
    kept = [n for n, s in zip(names, scores) if s >= threshold]
    assert res.presence.kept == kept and res.classes == ["background", *kept]
    assert res.presence.to_json() == {n: {"score": round(s, 6), "kept": n in kept} for n, s in zip(names, scores)}
    same = segmenter.segment(img, kept, keep_all=True)
    assert np.array_equal(res.labels, same.labels)
    none = segmenter.segment(img, names, presence_threshold=1.0)  # nothing passes: all background
    assert none.classes == ["background"] and not none.labels.any() and none.presence.kept == []
    solo = segmenter.segment(img, names, presence_threshold=1.0, background=False)
    assert solo.classes == [names[int(np.argmax(scores))]] and not solo.labels.any()


def test_batch_with_presence_equals_single_images(segmenter, rng):
    imgs = [(rng.random((30, 40, 3)) * 255).astype(np.uint8) for _ in range(3)]
    names = ["cat", "dog", "sky"]
    threshold = float(np.median(segmenter.detect_classes(imgs[0], names).scores))
    batch = segmenter.segment_batch(imgs, names, presence_threshold=threshold)
    for img, res in zip(imgs, batch):
        single = segmenter.segment(img, names, presence_threshold=threshold)
        assert res.classes == single.classes and np.array_equal(res.labels, single.labels)


def test_recurrent_check_drops_unrecognised_classes_and_stops(segmenter, rng, monkeypatch):
    """A fake CLIP verdict that rejects the first kept class each time: every round re-segments
    without it, at most presence_rounds rounds, and nothing changes once every class passes."""
    import pnpovss.presence as presence

    calls = []

    def reject_first(scorer, rgb, labels, label_names, kept, candidates):
        calls.append(list(kept))
        assert list(label_names[1:]) == list(kept)  # judged on the segmentation of exactly the kept set
        return list(kept[1:]) if len(kept) > 1 else list(kept)

    monkeypatch.setattr(presence, "recognised", reject_first)
    img = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    names = ["cat", "dog", "sky", "tree"]
    seg = Segmenter(segmenter.backbone, segmenter.config, presence_clip=object())
    res = seg.segment(img, names, presence_threshold=0.0, presence_rounds=2)
    assert calls == [names, names[1:]] and res.presence.kept == names[2:] and res.classes == ["background", *names[2:]]
    assert res.presence.dropped_by_check == [["cat"], ["dog"]]
    calls.clear()
    res = seg.segment(img, names[:1], presence_threshold=0.0, presence_rounds=5)
    assert calls == [["cat"]] and res.presence.kept == ["cat"]  # unchanged after one round: stop
    with pytest.raises(PnpOvssError, match="needs a CLIP model"):
        segmenter.segment(img, names, presence_rounds=1)


def test_recurrent_check_with_a_real_clip(segmenter, tiny_clip_dir, rng):
    from pnpovss.reward import ClipScorer, load_clip

    seg = Segmenter(segmenter.backbone, segmenter.config, presence_clip=ClipScorer(load_clip(str(tiny_clip_dir))))
    img = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    res = seg.segment(img, ["cat", "dog", "sky"], presence_threshold=0.0, presence_rounds=3)
    assert len(res.presence.dropped_by_check) <= 3
    assert res.classes == ["background", *res.presence.kept]


def test_a_150_class_vocabulary_runs_end_to_end(segmenter, rng):
    """ADE20K's 150 names as candidates on the tiny model: scored in chunks; every one passing
    threshold 0 is more than its 64-token caption holds, so the best-scoring ones are kept."""
    vocab = load_vocabulary("ade20k")
    assert len(vocab) == 150
    img = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    res = segmenter.segment(img, vocab, presence_threshold=0.0)
    pres = res.presence
    assert len(pres.scores) == 150 and 0 < len(pres.kept) < 150 and "did not fit" in pres.notes[0]
    best = sorted(range(150), key=lambda i: -pres.scores[i])[: len(pres.kept)]
    assert set(pres.kept) == {vocab[i] for i in best}
    assert res.classes == ["background", *pres.kept]


def test_vocabularies_and_their_errors(tmp_path):
    assert load_vocabulary("toyworld") == ["circle", "square", "triangle", "star", "cross", "heart"]
    voc = load_vocabulary("voc")
    assert len(voc) == 20 and "background" not in voc and voc[0] == "aeroplane"  # first synonym, no background
    f = tmp_path / "v.txt"
    f.write_text("background\ncat, kitty\n\ndog\n")
    assert load_vocabulary(str(f)) == ["cat", "dog"]
    with pytest.raises(PnpOvssError, match="neither a dataset name"):
        load_vocabulary("nonsense")
    with pytest.raises(PnpOvssError, match="neither a dataset name"):
        load_vocabulary(str(tmp_path))  # a directory is no class-name file
    (tmp_path / "empty.txt").write_text("background\n\n")
    with pytest.raises(PnpOvssError, match="holds no class names"):
        load_vocabulary(str(tmp_path / "empty.txt"))
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(PnpOvssError, match="not readable"):
        load_vocabulary(str(tmp_path / "bad.txt"))


def test_segment_command_filters_the_candidates_offline(tmp_path):
    """The docs' check (README, docs/how-to/classes.md): all six shapes as candidates on the shipped example keep circle and
    star, and the JSON shows every score."""
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["segment", str(ROOT / "examples" / "shapes.png"), "--model", "toy",
                                    "--classes", "circle,square,triangle,star,cross,heart", "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "shapes.json").read_text())
    assert meta["classes"] == ["background", "circle", "star"] and not meta["keep_all"]
    assert set(meta["presence"]) == {"circle", "square", "triangle", "star", "cross", "heart"}
    assert [c for c, v in meta["presence"].items() if v["kept"]] == ["circle", "star"]
    assert all("clip" in v for v in meta["presence"].values())  # the toy preset asks CLIP's second opinion
    assert min(meta["presence"][c]["score"] for c in ("circle", "star")) > max(
        v["score"] for c, v in meta["presence"].items() if c not in ("circle", "star"))
    res = CliRunner().invoke(main, ["segment", str(ROOT / "examples" / "shapes.png"), "--model", "toy",
                                    "--vocab", "toyworld", "--keep-all", "--out", str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "all" / "shapes.json").read_text())
    assert meta["keep_all"] and meta["presence"] is None and len(meta["classes"]) == 7
    # the toy model's own six shapes are its default candidates
    res = CliRunner().invoke(main, ["segment", str(ROOT / "examples" / "shapes.png"), "--model", "toy",
                                    "--out", str(tmp_path / "default")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "default" / "shapes.labels.png").read_bytes() == (out / "shapes.labels.png").read_bytes()
    assert set(json.loads((tmp_path / "default" / "shapes.json").read_text())["presence"]) == set(SHAPES)


@pytest.mark.parametrize("args, message", [
    (["--model", "toy", "--vocab", "nonsense"], "neither a dataset name"),
    (["--model", "toy", "--classes", "a", "--vocab", "voc"], "one of the two"),
    ([], "one of the two"),  # the default (hub) model has no default vocabulary; refused before loading it
])
def test_segment_vocabulary_errors_are_one_line(tmp_path, args, message):
    res = CliRunner().invoke(main, ["segment", str(ROOT / "examples" / "shapes.png"),
                                    "--out", str(tmp_path / "o"), *args])
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_eval_detect_matches_the_bench_row(tmp_path):
    """`pnpovss eval --labels detect` on the toy world gives the bench's vocab_detect figure for the
    same seed and images, and records tag precision/recall/F1; gt and all are the other rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("toybench", ROOT / "bench" / "toyworld.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run("toy", seed=4, images=3, size=96)
    for protocol, row in (("detect", "vocab_detect"), ("gt", "full"), ("all", "vocab_all")):
        out = tmp_path / f"{protocol}.json"
        res = CliRunner().invoke(main, ["eval", "--dataset", "toyworld", "--seed", "4", "--images", "3",
                                        "--labels", protocol, "--json", str(out), "--threads", "1"],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        data = json.loads(out.read_text())
        assert data["labels"] == protocol
        assert data["miou"] == pytest.approx(rows["rows"][row]["miou"], abs=1e-9), protocol
        if protocol == "detect":
            assert data["tags"] == rows["tags"]["vocab_detect"] and "F1" in res.output
        else:
            assert "tags" not in data


def test_presence_record_round_trips():
    p = Presence(["a", "b"], [0.5, 0.25], ["a"])
    assert p.to_json() == {"a": {"score": 0.5, "kept": True}, "b": {"score": 0.25, "kept": False}}


def test_presence_space_file_matches_code():
    from pnpovss.presence_tuning import DEFAULT_PRESENCE_SPACE

    shipped = json.loads((ROOT / "search" / "spaces" / "presence.json").read_text())
    shipped.pop("_comment")
    assert shipped == DEFAULT_PRESENCE_SPACE


def test_presence_tuning_scores_tag_f1_of_the_pipelines_own_decision():
    """Each image's reward is the F1 of the classes segment() keeps (whole vocabulary as candidates)
    against its image-level labels, at the trial's threshold."""
    from pnpovss.datasets import load_dataset
    from pnpovss.presence_tuning import PresenceEvaluator, image_f1

    seg = Segmenter.from_pretrained("toy")
    ds = load_dataset("toyworld", seed=3, images=4)
    ev = PresenceEvaluator(seg, ds, range(4))
    ev.build(progress=False)
    for t in (0.2, 0.9, 1.0):
        got = ev.per_image({"presence_threshold": t})[:, 0]
        for i, value in enumerate(got):
            s = ds[i]
            kept = seg.segment(s.image, ds.classes[1:], presence_threshold=t).presence.kept
            assert value == pytest.approx(image_f1([ds.classes.index(k) for k in kept], ds.image_labels(s.label)))
    assert image_f1([], []) == 1.0 and image_f1([1], []) == 0.0 and image_f1([1, 2], [2, 3]) == 0.5


def test_tune_tags_command_writes_a_presence_preset(tmp_path):
    out = tmp_path / "run"
    args = ["tune", "--dataset", "toyworld", "--seed", "3", "--images", "4", "--reward", "tags", "--iters", "4",
            "--out", str(out), "--threads", "1"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    best = json.loads((out / "best.json").read_text())
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    assert best["config"]["presence_threshold"] == best["params"]["presence_threshold"]
    assert best["rewards"]["tags"] == max(t["rewards"]["tags"] for t in trace)
    assert trace[0]["params"] == {"presence_threshold": 0.5}  # trial 0: the toy model's preset
    res = CliRunner().invoke(main, ["tune", "--dataset", "toyworld", "--reward", "tags", "--images", "2",
                                    "--out", str(tmp_path / "x"), "--space", str(ROOT / "search" / "spaces" / "default.json")])
    assert res.exit_code != 0 and "cannot be searched" in res.output


def test_shared_image_attention_is_always_restored(segmenter):
    from pnpovss.backbones.blip import shared_image_attention
    from pnpovss.execution import replacement_of

    modules = list(segmenter.backbone.cross_attention_modules([1, 2, 3]).values())
    with pytest.raises(RuntimeError, match="boom"):
        with shared_image_attention(modules):
            assert all(replacement_of(m) is not None for m in modules)
            raise RuntimeError("boom")
    assert all(replacement_of(m) is None for m in modules)


def test_shared_image_attention_is_taken_for_one_image(segmenter, rng, monkeypatch):
    """Presence scoring of one image runs the shared-image cross-attention (the fast path), and
    the same probabilities as BLIP's own attention when it is switched off."""
    from pnpovss.backbones import blip

    made = []
    real = blip._shared_image_forward
    monkeypatch.setattr(blip, "_shared_image_forward", lambda m: made.append(m) or real(m))
    bb = segmenter.backbone
    embeds = bb.encode_image(bb.preprocess([(rng.random((32, 32, 3)) * 255).astype(np.uint8)], 48))
    text = bb.build_text("a picture of ", [["cat"], ["dog"], ["sky"]])
    fast = bb.match_probability(embeds, text)
    assert len(made) == bb.num_layers
    bb.execution = bb.execution.replace(shared_image_attention=False)
    try:
        plain = bb.match_probability(embeds, text)
    finally:
        bb.execution = bb.execution.replace(shared_image_attention=True)
    assert len(made) == bb.num_layers
    assert torch.allclose(fast, plain, atol=1e-5)
