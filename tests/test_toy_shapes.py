"""The shape-world toy models (``--model toy-shapes``, ``--model toy-bridgetower``): registry, defaults,
the trainer's BridgeTower path, and plain PIL drawings (the issue's bar: IoU >= 0.5 with presence on)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pnpovss.backbones import ALIASES, TOY_MODELS, resolve_source
from pnpovss.cli import main
from pnpovss.errors import ModelLoadError
from pnpovss.toyworld.drawings import DRAWN_SHAPES, plain_drawing
from pnpovss.toyworld.world import SHAPES


def test_toy_models_are_registered_with_their_worlds():
    assert TOY_MODELS == {"toy": "toyworld", "toy-shapes": "toyworld-shapes", "toy-bridgetower": "toyworld-shapes"}
    assert set(TOY_MODELS) <= set(ALIASES)


def test_a_toy_model_not_in_the_installation_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setitem(ALIASES, "toy-bridgetower", str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match=r"the toy model 'toy-bridgetower' is not in this installation \(.*missing is missing\)"):
        resolve_source("toy-bridgetower")
    Image.new("RGB", (32, 32), (128, 128, 128)).save(tmp_path / "x.png")
    res = CliRunner().invoke(main, ["segment", str(tmp_path / "x.png"), "--model", "toy-bridgetower",
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "the toy model 'toy-bridgetower' is not in this installation" in res.output
    assert [line for line in res.output.splitlines() if line.startswith("Error")] == res.output.splitlines()[-1:]


def test_eval_on_the_shapes_world_defaults_to_toy_shapes(monkeypatch, tiny_blip_dir, tmp_path):
    """``eval --dataset toyworld-shapes`` without ``--model`` loads ``toy-shapes`` and records it by name."""
    monkeypatch.setitem(ALIASES, "toy-shapes", str(tiny_blip_dir))
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"config": {"layer": 2, "head": 1, "drop_iters": 1}}))
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(main, ["eval", "--dataset", "toyworld-shapes", "--seed", "2", "--images", "2", "--preset",
                                    str(preset), "--json", str(out), "--threads", "1"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert "loading toy-shapes" in res.output
    assert data["dataset"] == "toyworld-shapes" and data["model"] == "toy-shapes"
    assert np.asarray(data["confusion_matrix"]).sum() == 2 * 96 * 96


def test_segment_with_a_toy_model_defaults_to_its_world_vocabulary(monkeypatch, tiny_blip_dir, tmp_path):
    from pnpovss.cli.segment import _candidates

    monkeypatch.setitem(ALIASES, "toy-shapes", str(tiny_blip_dir))
    assert _candidates(None, None, "toy-shapes") == list(SHAPES)
    assert _candidates(None, None, "toy") == list(SHAPES)


def test_train_bridgetower_smoke_loads_through_the_pipeline(tmp_path):
    """Three steps of the one training loop with ``--arch bridgetower`` on the shapes world give a
    directory the pipeline loads (its own preset: the training size, a word-reaching layer) and runs."""
    from pnpovss import Segmenter
    from pnpovss.toyworld.world import make_sample
    from tools.toyworld.train_itm import main as train

    out = tmp_path / "bt"
    train(["--arch", "bridgetower", "--world", "toyworld-shapes", "--out", str(out), "--steps", "3", "--batch", "4",
           "--pool", "12", "--probe-every", "2", "--probe-n", "4", "--warmup", "1", "--curriculum-steps", "1",
           "--vision-warmup-steps", "1", "--text-layers", "2", "--vision-layers", "2", "--cross-layers", "2",
           "--vision-hidden", "64", "--text-hidden", "64", "--image-size", "48"])
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["arch"] == "bridgetower" and record["config"]["world"] == "toyworld-shapes"
    assert record["history"] and "presence_auc" in record["history"][-1]
    seg = Segmenter.from_pretrained(str(out))
    assert seg.config.image_size == 48 and seg.config.layer == 1
    s = make_sample(0, 0, size=48, world="toyworld-shapes")
    res = seg.segment(s.image, list(s.labels))
    assert res.labels.shape == (48, 48) and res.classes[0] == "background" and set(res.classes[1:]) <= set(s.labels)


# ------------------------------------------------------------------ plain drawings (the bar)


TOY_SHAPES_DIR = ALIASES["toy-shapes"]
MEASURED = Path(__file__).resolve().parent.parent / "bench" / "results" / "toy_drawings_blip_shapes_distilled.json"


def _not_shipped_reason() -> str:
    """Why the bar cannot be tested yet, with the last checkpoint's recorded drawings measurement."""
    if not MEASURED.is_file():
        return "toy-shapes is not shipped (no trained shape-world BLIP yet)"
    rec = json.loads(MEASURED.read_text())
    got = ", ".join(f"{k} IoU {v['iou']:.2f} (kept: {v['kept']})" for k, v in rec["drawings"].items())
    return f"toy-shapes is not shipped: the training checkpoint {rec['model']} measured {got} ({MEASURED.name})"


@pytest.mark.skipif(not os.path.isdir(TOY_SHAPES_DIR), reason=_not_shipped_reason())
@pytest.mark.parametrize("shape,colour", DRAWN_SHAPES)
def test_toy_shapes_finds_plain_drawn_shapes(shape, colour):
    """The issue's bar: with all six shapes as candidates, presence keeps the drawn class and its mask
    reaches IoU >= 0.5 (``bench/toy_drawings.py`` records the same measurement)."""
    from pnpovss import Segmenter

    seg = Segmenter.from_pretrained("toy-shapes")
    img, mask = plain_drawing(shape, colour, seed=SHAPES.index(shape))
    res = seg.segment(img, list(SHAPES))
    assert shape in res.presence.kept
    pred = res.labels == res.classes.index(shape)
    iou = (pred & mask).sum() / (pred | mask).sum()
    assert iou >= 0.5, iou


def test_the_page_examples_include_the_plain_drawings(tmp_path):
    """The demo page's examples: the drawn strip (exact labels, no texture inside a shape) and a
    shape-world scene beside the textured world's."""
    from pnpovss.demo.app import example_inputs
    from pnpovss.toyworld.drawings import drawn_row

    rows = example_inputs(tmp_path)
    drawn = [r for r in rows if Path(r[0]).name == "drawn-shapes.png"]
    assert drawn and drawn[0][1] == ", ".join(s for s, _ in DRAWN_SHAPES)
    img = np.asarray(Image.open(drawn[0][0]).convert("RGB"))
    expect, labels = drawn_row(size=128)
    assert np.array_equal(img, expect)
    for i, (_, colour) in enumerate(DRAWN_SHAPES, 1):
        assert (img[labels == i] == colour).all()  # plain fill: every pixel of a shape is its colour
    assert any(Path(r[0]).name.startswith("toyworld-shapes-") for r in rows)


# ------------------------------------------------------------------ the learnability and distillation tools


def test_learnability_records_a_held_out_curve(tmp_path):
    from tools.toyworld.learnability import main as learnability

    out = tmp_path / "cnn.json"
    learnability(["--net", "cnn", "--steps", "2", "--every", "1", "--held-out", "12", "--json", str(out)])
    rec = json.loads(out.read_text())
    assert rec["net"] == "cnn" and rec["chance"] == round(1 / len(SHAPES), 4)
    assert [row["step"] for row in rec["curve"]] == [0, 1, 2]
    assert all(0 <= row["held_out_accuracy"] <= 1 for row in rec["curve"])
    assert rec["command"].startswith("python -m tools.toyworld.learnability --net cnn")


def test_distilled_tower_continues_in_the_itm_trainer(tmp_path):
    """``distill`` writes a checkpoint ``train_itm --init`` continues (its record kept as the first stage)."""
    from tools.toyworld.distill import main as distill
    from tools.toyworld.train_itm import main as train

    first, second = tmp_path / "distilled", tmp_path / "itm"
    distill(["--out", str(first), "--teacher-stages", "2:easy", "1:world", "--distill-steps", "2", "--held-out", "8"])
    rec = json.loads((first / "training.json").read_text())
    assert [r["teacher_step"] for r in rec["distilled"]["history"] if "teacher_step" in r] == [3]
    assert rec["distilled"]["history"][-1]["distill_step"] == 2
    train(["--init", str(first), "--world", "toyworld-shapes", "--out", str(second), "--steps", "2", "--batch", "4",
           "--pool", "12", "--probe-every", "0", "--warmup", "1", "--head-warmup", "1", "--curriculum-steps", "0",
           "--vision-warmup-steps", "0"])
    stages = json.loads((second / "training.json").read_text())["stages"]
    assert stages[0]["config"]["world"] == "toyworld-shapes" and stages[0]["distilled"] == rec["distilled"]


def test_the_drawings_bench_runs_and_records_each_drawing(tmp_path, monkeypatch):
    """``bench/toy_drawings.py`` end to end with the shipped ``toy`` model (the shape-world bar's record)."""
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "bench"))  # as when run there
    bench = importlib.import_module("records").bench_module("toy_drawings")
    out = tmp_path / "drawings.json"
    assert bench.main(["--model", "toy", "--json", str(out), "--set", "threshold=0.2"]) == 0
    rec = json.loads(out.read_text())
    assert list(rec["drawings"]) == [s for s, _ in DRAWN_SHAPES] and rec["overrides"] == {"threshold": 0.2}
    assert all(0 <= d["iou"] <= 1 and 0 <= d["iou_label_given"] <= 1 for d in rec["drawings"].values())


@pytest.mark.parametrize("stage", ["80:hard", "80", "x:easy"])
def test_distill_rejects_a_malformed_teacher_stage_in_one_line(stage, tmp_path):
    from tools.toyworld.distill import main as distill

    with pytest.raises(SystemExit, match=r"--teacher-stages .*expected STEPS:TASK"):
        distill(["--out", str(tmp_path / "d"), "--teacher-stages", stage])
    assert not (tmp_path / "d").exists()
