"""Search space, layer/head map cache, resumable random search, best preset."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pnpovss import Segmenter, load_preset
from pnpovss.cli import main
from pnpovss.datasets import load_dataset
from pnpovss.errors import PnpOvssError
from pnpovss.reward import ClipScorer, load_clip
from pnpovss.search import (DEFAULT_SPACE, LAYER_HEAD_SPACE, MapCache, RewardEvaluator, TraceLog, Trial, list_spaces,
                            load_space, run_search)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toy():
    return load_dataset("toyworld", seed=0, images=4, size=48)


@pytest.fixture(scope="module")
def evaluator(segmenter, toy, tiny_clip_dir):
    ev = RewardEvaluator(segmenter, toy, range(len(toy)), ClipScorer(load_clip(str(tiny_clip_dir))))
    ev.build(progress=False)
    return ev


def test_named_spaces_are_the_package_files_the_recorded_runs_name(segmenter):
    """The package ships the named spaces; the recorded runs' ``search/spaces/NAME.json`` are the
    same files, and a name or such a path loads the same space."""
    assert list_spaces() == ["default", "dropout", "layer_head", "presence", "presence_clip", "reference"]
    for name, code in (("default", DEFAULT_SPACE), ("layer_head", LAYER_HEAD_SPACE)):
        shipped = json.loads((REPO / "search" / "spaces" / f"{name}.json").read_text())
        shipped.pop("_comment")
        assert shipped == code and list(shipped) == list(code)  # the order fixes the proposals
    bb, cfg = segmenter.backbone, segmenter.config
    for name in list_spaces():
        if not name.startswith("presence"):
            assert load_space(name, bb, cfg) == load_space(REPO / "search" / "spaces" / f"{name}.json", bb, cfg)
    assert load_space("layer_head", bb, cfg).values["layer"] == [1, 2, 3]
    with pytest.raises(PnpOvssError, match="neither a file nor a named space; named spaces: default, dropout"):
        load_space("nope", bb, cfg)
    space = load_space(None, segmenter.backbone, segmenter.config)
    assert space.values["layer"] == [1, 2, 3] and space.values["head"] == [0, 1, None]
    assert space.values["saliency"] == ["gradcam", "attention"] and space.values["drop_iters"] == [1, 4]
    assert space.values["threshold"][0] == 0.05 and space.size == 2 * 3 * 3 * 10 * 2 * 2
    mean_base = load_space(None, segmenter.backbone, segmenter.config.replace(head=None))
    assert mean_base.encode({"saliency": "gradcam", "layer": 2, "head": None, "threshold": 0.15, "drop_iters": 4,
                             "drop_k": 10})  # a head-mean base lies in it
    assert load_space({"head": "each"}, segmenter.backbone, segmenter.config).values["head"] == [0, 1]
    # a base outside the default grid (here DropOut T = 2, k = 3) is added to the default space, not refused
    odd = load_space(None, segmenter.backbone, segmenter.config.replace(drop_iters=2, drop_k=3))
    assert odd.values["drop_iters"] == [1, 4, 2] and odd.values["drop_k"] == [5, 10, 3]


def test_space_files(segmenter, tmp_path):
    bb, cfg = segmenter.backbone, segmenter.config
    space = load_space({"threshold": {"from": 0.1, "to": 0.3, "step": 0.1}, "head": [0, [0, 1], None]}, bb, cfg)
    assert space.values == {"threshold": [0.1, 0.2, 0.3], "head": [0, [0, 1], None]}
    assert space.decode(space.encode({"threshold": 0.2, "head": (0, 1)})) == {"threshold": 0.2, "head": [0, 1]}
    for bad, message in [({"layer": [1, 9]}, "layer 9 is out of range"), ({"crf_iters": [1, 2]}, "cannot be searched"),
                         ({"head": [0, 0]}, "twice"), ({"drop_k": [5, 10]}, "add drop_iters"), ({"threshold": "each"}, "only defined"),
                         ({"layer": "each+mean"}, "only defined for head"), ({"layer": []}, "non-empty")]:
        with pytest.raises(PnpOvssError, match=message):
            load_space(bad, bb, cfg)
    f = tmp_path / "s.json"
    f.write_text("{nope")
    with pytest.raises(PnpOvssError, match="not readable JSON"):
        load_space(f, bb, cfg)
    with pytest.raises(PnpOvssError, match="starting value"):
        load_space({"threshold": [0.3]}, bb, cfg).encode({"threshold": 0.15})


def _cached_sample(segmenter, toy, index, cache_dir):
    """Toy sample ``index`` in a fresh map cache (as entry 0): (sample, names, cache, backbone, pixels)."""
    sample = toy[index]
    names = [toy.classes[c] for c in toy.image_labels(sample.label)]
    cache = MapCache(segmenter, segmenter.config, cache_dir=cache_dir)
    cache.add(0, sample.image, names)
    bb = segmenter.backbone
    return sample, names, cache, bb, bb.preprocess([sample.image], segmenter.image_size())


def test_cached_maps_equal_pipeline_single_pass(segmenter, toy, tmp_path, monkeypatch):
    sample, names, cache, bb, pixels = _cached_sample(segmenter, toy, 1, tmp_path)
    for layer, head in [(1, 0), (2, 1), (2, (0, 1)), (3, None)]:
        cfg = segmenter.config.replace(layer=layer, head=head, drop_iters=1)
        ref = segmenter.class_grid_maps(pixels, bb.encode_image(pixels), [names], cfg)[0] / 2  # pass 0 counted twice
        got = cache.class_maps(0, cfg, lambda: sample.image, names)
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-3 * float(np.abs(ref).max() + 1e-30))
    # a second cache reads the disk copy without running the model
    monkeypatch.setattr("pnpovss.search.cache.layer_head_maps", lambda *a, **k: pytest.fail("recomputed"))
    again = MapCache(segmenter, segmenter.config, cache_dir=tmp_path)
    again.add(5, sample.image, names)
    assert np.array_equal(again._maps[5].cams, cache._maps[0].cams)
    # DropOut configurations run the real passes
    cfg = segmenter.config.replace(drop_iters=2, drop_k=3)
    ref = segmenter.class_grid_maps(pixels, bb.encode_image(pixels), [names], cfg)[0]
    np.testing.assert_allclose(cache.class_maps(0, cfg, lambda: sample.image, names), ref, rtol=1e-5, atol=1e-9)


def test_cache_keeps_both_saliency_kinds(segmenter, toy, tmp_path, monkeypatch):
    """One forward/backward fills GradCAM and attention maps; the disk copy keeps both."""
    sample, names, cache, bb, pixels = _cached_sample(segmenter, toy, 2, tmp_path)
    for saliency in ("attention", "gradcam"):
        cfg = segmenter.config.replace(layer=1, head=None, drop_iters=1, saliency=saliency)
        ref = segmenter.class_grid_maps(pixels, bb.encode_image(pixels), [names], cfg)[0] / 2
        got = cache.class_maps(0, cfg, lambda: sample.image, names)
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-3 * float(np.abs(ref).max() + 1e-30))
    monkeypatch.setattr("pnpovss.search.cache.layer_head_maps", lambda *a, **k: pytest.fail("recomputed"))
    again = MapCache(segmenter, segmenter.config, cache_dir=tmp_path)
    again.add(1, sample.image, names)
    cfg = segmenter.config.replace(drop_iters=1, saliency="attention")
    np.testing.assert_array_equal(again.class_maps(1, cfg, lambda: sample.image, names),
                                  cache.class_maps(0, cfg, lambda: sample.image, names))
    # DropOut maps are memoised per saliency kind too
    drop = segmenter.config.replace(drop_iters=2, drop_k=3)
    assert not np.array_equal(cache.class_maps(0, drop.replace(saliency="attention"), lambda: sample.image, names),
                              cache.class_maps(0, drop, lambda: sample.image, names))


def test_region_columns_score_the_trial_segmentation(segmenter, toy, tiny_clip_dir):
    scorer = ClipScorer(load_clip(str(tiny_clip_dir)))
    ev = RewardEvaluator(segmenter, toy, range(len(toy)), scorer, region=("contrast", "boundary"))
    params = {"layer": 2, "head": 1, "threshold": 0.15, "saliency": "attention"}
    scores = ev.evaluate(params)
    assert set(scores) == {"binary", "continuous", "contrast", "boundary"} and ev.evaluate(params) == scores
    assert scores["boundary"] != scores["contrast"]
    # each column is the same whichever others are asked for (a run's rewards do not depend on them)
    for name in ("contrast", "boundary"):
        one = RewardEvaluator(segmenter, toy, range(len(toy)), scorer, region=(name,))
        assert one.run_info()["rewards"] == ["binary", "continuous", name]
        assert one.evaluate(params) == {k: scores[k] for k in ("binary", "continuous", name)}
    plain = RewardEvaluator(segmenter, toy, range(len(toy)), scorer)
    assert "rewards" not in plain.run_info()  # runs recorded before the region rewards still resume
    assert {k: plain.evaluate(params)[k] for k in ("binary", "continuous")} == {k: scores[k] for k in ("binary", "continuous")}
    with pytest.raises(PnpOvssError, match="unknown region reward 'edge'; choose from contrast, boundary"):
        RewardEvaluator(segmenter, toy, range(len(toy)), scorer, region=("edge",))


def test_trial_config_uses_single_pass_unless_dropout_is_searched(evaluator):
    assert evaluator.trial_config({"layer": 1}).drop_iters == 1
    assert evaluator.trial_config({"drop_iters": 3}).drop_iters == 3
    scores = evaluator.evaluate({"layer": 2, "head": 1, "threshold": 0.15})
    assert set(scores) == {"binary", "continuous"} and scores["binary"] == int(scores["binary"])
    richer = {"layer": 2, "head": 1, "threshold": 0.15, "drop_iters": 2, "drop_k": 2, "blur_sigma": 0.01}
    assert evaluator.evaluate(richer) == evaluator.evaluate(richer)  # DropOut maps memoised, deterministic


def strip(records):
    return [{k: r[k] for k in ("trial", "params", "reward", "rewards", "z", "images", "repeat")} for r in records]


def test_selection_needs_significance_over_the_base(evaluator, segmenter, tmp_path, monkeypatch):
    space = load_space(None, segmenter.backbone, segmenter.config)
    argmax = run_search(evaluator, space, iters=8, seed=1, out_dir=tmp_path, min_z=0, progress=False,
                        selection="argmax").trial
    trace = TraceLog(tmp_path / "trace.jsonl").load()
    assert trace[0]["z"] == {"binary": 0.0, "continuous": 0.0}
    top = max(r["reward"] for r in trace)
    assert argmax == Trial.from_json(next(r for r in trace if r["reward"] == top))  # min_z 0: the paper's argmax
    base = evaluator.per_image(trace[0]["params"])
    for r in trace[1:]:
        per_image = evaluator.per_image(r["params"])
        assert r["images"]["binary"] == per_image[:, 0].tolist()  # the trace keeps every image's rewards
        gain = per_image[:, 0] - base[:, 0]
        if gain.std(ddof=1) > 0:
            assert r["z"]["binary"] == pytest.approx(gain.mean() / (gain.std(ddof=1) / np.sqrt(len(gain))))
    # re-selecting with another rule or min_z replays the trace: no new evaluation
    monkeypatch.setattr(RewardEvaluator, "per_image", lambda *a: pytest.fail("re-evaluated"))
    strict = run_search(evaluator, space, iters=8, seed=1, out_dir=tmp_path, min_z=1e7, progress=False,
                        selection="argmax")
    assert strict.trial.trial == 0 and json.loads((tmp_path / "best.json").read_text())["min_z"] == 1e7
    robust = run_search(evaluator, space, iters=8, seed=1, out_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / "best.json").read_text())["selection"]["trial"] == robust.trial.trial


def test_resume_after_interrupt_gives_the_same_trace(evaluator, segmenter, tmp_path, monkeypatch):
    space = load_space(None, segmenter.backbone, segmenter.config)
    full = run_search(evaluator, space, iters=10, seed=3, out_dir=tmp_path / "full", progress=False)
    reference = strip(TraceLog(tmp_path / "full" / "trace.jsonl").load())
    assert len(reference) == 10 and [r["trial"] for r in reference] == list(range(10))

    real, calls = RewardEvaluator.per_image, []

    def crash_after_four(self, params):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(params)
        return real(self, params)

    monkeypatch.setattr(RewardEvaluator, "per_image", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        run_search(evaluator, space, iters=10, seed=3, out_dir=tmp_path / "cut", progress=False)
    monkeypatch.setattr(RewardEvaluator, "per_image", real)
    trace = tmp_path / "cut" / "trace.jsonl"
    assert 4 <= len(TraceLog(trace).load()) < 10
    with open(trace, "ab") as f:
        f.write(b'{"trial": 9, "par')  # a kill in the middle of a write
    best = run_search(evaluator, space, iters=10, seed=3, out_dir=tmp_path / "cut", progress=False)
    assert strip(TraceLog(trace).load()) == reference
    assert strip([best.trial.to_json()]) == strip([full.trial.to_json()])
    assert best.reason == full.reason and best.checks == full.checks
    for name in ("best.json", "run.json"):  # the resumed run's outputs equal the uninterrupted run's
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    preset = json.loads((tmp_path / "cut" / "best.json").read_text())
    assert preset["finished"] and preset["params"] == full.trial.params and preset["selection"]["rule"] == "robust"


RECORDED = sorted((REPO / "search" / "runs" / "robustness" / "toyworld").glob("tune-S*/trace.jsonl"))
"""The recorded tuning runs of the current trace format (``search/runs/robustness``; the older
``search/runs/toyworld`` runs are format 2, without per-image rewards)."""
RUN_KEYS = ("seed", "reward", "reward_version", "trace_format", "space", "base_config", "selection")
"""What :func:`run_search` itself puts into ``run.json``; the rest comes from the caller and the objective."""


def test_trial_records_keep_the_trace_line_format():
    """Every recorded trace line is a :class:`Trial` written back byte for byte."""
    assert len(RECORDED) >= 10  # search/runs/robustness/toyworld: the robustness bench's tuning seeds
    for path in RECORDED:
        for line in path.read_text().splitlines():
            assert json.dumps(Trial.from_json(json.loads(line)).to_json(), sort_keys=True) == line
    with pytest.raises(PnpOvssError, match="lacks reward, z, images"):
        Trial.from_json({"trial": 0, "params": {}, "rewards": {}})


@pytest.mark.parametrize("trace", RECORDED, ids=lambda p: "/".join(p.parts[-3:-1]))
def test_recorded_runs_replay_to_their_best_json(trace, tmp_path):
    """A recorded run restarted with its own settings replays every trial (no evaluation) and
    writes its ``best.json`` again byte for byte: the on-disk formats and the selection are unchanged."""
    from types import SimpleNamespace

    from pnpovss import PipelineConfig
    from pnpovss.distributed import DistContext
    from pnpovss.search import SearchSpace

    run = json.loads((trace.parent / "run.json").read_text())
    best = json.loads((trace.parent / "best.json").read_text())
    for name in ("run.json", "trace.jsonl"):
        (tmp_path / name).write_bytes((trace.parent / name).read_bytes())
    first = json.loads(trace.read_text().splitlines()[0])
    evaluator = SimpleNamespace(rewards=tuple(first["rewards"]), columns=tuple(first["images"]), dist=DistContext(),
                                run_info=dict,
                                base=PipelineConfig.from_record(run["base_config"]),
                                per_image=lambda params: pytest.fail("a recorded trial was evaluated again"))
    named = next(sp for sp in (DEFAULT_SPACE, LAYER_HEAD_SPACE) if set(sp) == set(run["space"]))
    space = SearchSpace({k: run["space"][k] for k in named})  # run.json sorts the keys; their order fixes proposals
    got = run_search(evaluator, space, iters=best["iters"], seed=run["seed"], out_dir=tmp_path,
                     reward=run["reward"], min_z=best["min_z"], progress=False, selection=best["selection"]["rule"],
                     run_info={k: v for k, v in run.items() if k not in RUN_KEYS}).trial
    assert got.trial == best["trial"] and got.params == best["params"]
    assert (tmp_path / "run.json").read_bytes() == (trace.parent / "run.json").read_bytes()
    assert (tmp_path / "best.json").read_bytes() == (trace.parent / "best.json").read_bytes()
    assert (tmp_path / "trace.jsonl").read_bytes() == trace.read_bytes()


def test_refuses_to_mix_runs(evaluator, segmenter, tmp_path):
    space = load_space(None, segmenter.backbone, segmenter.config)
    run_search(evaluator, space, iters=3, seed=0, out_dir=tmp_path, progress=False)
    with pytest.raises(PnpOvssError, match="seed differ"):
        run_search(evaluator, space, iters=3, seed=1, out_dir=tmp_path, progress=False)
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["params"]["layer"] = 99
    (tmp_path / "trace.jsonl").write_text("\n".join([lines[0], json.dumps(rec), lines[2]]) + "\n")
    with pytest.raises(PnpOvssError, match="different search"):
        run_search(evaluator, space, iters=3, seed=0, out_dir=tmp_path, progress=False)
    (tmp_path / "trace.jsonl").write_text(lines[0] + "\n{broken\n" + lines[2] + "\n")
    with pytest.raises(PnpOvssError, match="line 2 is not valid JSON"):
        run_search(evaluator, space, iters=3, seed=0, out_dir=tmp_path, progress=False)


def test_best_json_is_a_preset(evaluator, segmenter, tiny_blip_dir, tmp_path):
    space = load_space({"layer": [1, 2], "threshold": [0.15, 0.3]}, segmenter.backbone, segmenter.config)
    best = run_search(evaluator, space, iters=4, seed=0, out_dir=tmp_path, progress=False, selection="argmax").trial
    cfg = load_preset(tmp_path / "best.json")
    assert cfg["layer"] == best.params["layer"] and cfg["drop_iters"] == 4  # DropOut kept at the base value
    seg = Segmenter.from_pretrained(str(tiny_blip_dir), preset=tmp_path / "best.json")
    assert seg.config.threshold == best.params["threshold"]


TUNE_ARGS = ["--dataset", "toyworld", "--images", "3", "--iters", "12", "--seed", "5", "--threads", "1"]
SLOW_TRIALS = """
import sys, time
import pnpovss.search as s
real = s.RewardEvaluator.per_image
def slow(self, params):
    time.sleep(0.5)
    return real(self, params)
s.RewardEvaluator.per_image = slow
from pnpovss.cli import main
main(sys.argv[1:], prog_name="pnpovss")
"""


@pytest.mark.slow
def test_killed_tune_resumes_to_the_uninterrupted_trace(tiny_blip_dir, tiny_clip_dir, tmp_path):
    """A real SIGKILL of a tune process (not a simulated exception): needs a separate Python process
    (~5 s to import torch/transformers/open_clip), hence slow."""
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"config": {"layer": 2, "head": 1}}))
    args = TUNE_ARGS + ["--model", str(tiny_blip_dir), "--clip", str(tiny_clip_dir), "--preset", str(preset)]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_TRIALS, "tune", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    # the uninterrupted reference runs here while the subprocess is still importing
    ref = CliRunner().invoke(main, ["tune", *args, "--out", str(tmp_path / "ref")], catch_exceptions=False)
    assert ref.exit_code == 0, ref.output
    trace = out / "trace.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not trace.exists() or len(trace.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(TraceLog(trace).load(repair=False))
    assert 3 <= done < 12
    res = CliRunner().invoke(main, ["tune", *args, "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert strip(TraceLog(trace).load()) == strip(TraceLog(tmp_path / "ref" / "trace.jsonl").load())
    assert json.loads((out / "best.json").read_text())["params"] == json.loads(
        (tmp_path / "ref" / "best.json").read_text())["params"]


def test_one_writer_per_run_directory(evaluator, segmenter, tmp_path):
    import fcntl

    space = load_space({"threshold": [0.15, 0.3]}, segmenter.backbone, segmenter.config)
    with open(tmp_path / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(PnpOvssError, match="another 'pnpovss tune'"):
            run_search(evaluator, space, iters=2, seed=0, out_dir=tmp_path, progress=False)
    run_search(evaluator, space, iters=2, seed=0, out_dir=tmp_path, progress=False)
    assert not (tmp_path / ".lock").exists()


def test_region_rewards_segment_under_the_caption_background_rule(segmenter, toy, tiny_clip_dir, monkeypatch):
    """The region rewards judge the segmentation ``segment`` would give: its per-caption
    configuration (``background_mode="always"`` adds the background channel on a dataset without
    one), not the trial's configuration as it stands (which once left the channel out)."""
    import copy

    from pnpovss.postprocess import postprocess
    from pnpovss.search import evaluator as module

    plain = copy.copy(toy)
    plain.has_background = False
    seg = Segmenter(segmenter.backbone, segmenter.config.replace(background_mode="always"))
    ev = RewardEvaluator(seg, plain, range(2), ClipScorer(load_clip(str(tiny_clip_dir))), region=("contrast",))
    seen = []
    real = module.segment_masks
    monkeypatch.setattr(module, "segment_masks",
                        lambda labels, rows, background, size: seen.append((labels, background)) or real(
                            labels, rows, background, size))
    params = {"layer": 2, "head": 1, "threshold": 0.15}
    ev.evaluate(params)
    cfg = ev.trial_config(params)
    assert not cfg.background and len(seen) == 2
    for (labels, background), i in zip(seen, ev.indices):
        entry = ev._images[i]
        maps = ev.cache.class_maps(i, cfg, lambda: plain[i].image, entry["names"])
        expected, _ = postprocess(maps, entry["image"], cfg.for_caption(len(entry["caption"])))
        assert background
        np.testing.assert_array_equal(labels, expected)
