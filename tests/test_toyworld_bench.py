"""The shipped toy model loads through the same from_pretrained path as hub/local checkpoints, and
the per-stage benchmark runs end to end on a few images."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pnpovss import Segmenter
from pnpovss.backbones import ALIASES, resolve_source, source_label
from tools.testing import has_cxx_compiler

ROOT = Path(__file__).resolve().parent.parent


def test_toy_alias_is_a_saved_pretrained_directory_with_its_preset():
    path = Path(resolve_source("toy"))
    assert path == Path(ALIASES["toy"]) and (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    seg = Segmenter.from_pretrained("toy")
    preset = json.loads((path / "pnpovss_preset.json").read_text())["config"]
    assert {key: getattr(seg.config, key) for key in preset} == preset
    assert seg.backbone.grid(seg.image_size()) == (12, 12)
    same = Segmenter.from_pretrained(str(path))  # the directory itself, as a user would pass it
    assert same.config == seg.config


def test_records_name_the_toy_model_by_its_alias(tmp_path):
    """The package's toy model sits at another absolute path in every checkout: records (run.json,
    eval JSON) name it ``toy``, so a recorded run resumes from any clone; other sources stay as given."""
    path = resolve_source("toy")
    assert source_label(path) == "toy" and source_label(str(Path(path) / ".." / "blip")) == "toy"
    copy = tmp_path / "blip"
    shutil.copytree(path, copy)
    assert source_label(str(copy)) == str(copy)  # a copy is another model directory
    assert source_label("Salesforce/blip-itm-large-coco") == "Salesforce/blip-itm-large-coco"
    recorded = [json.loads(p.read_text()) for p in ROOT.glob("search/runs/*/**/run.json")]
    assert recorded and {r["model"] for r in recorded} == {"toy"}


def test_toy_model_segments_the_example():
    """The README's example (a showcase picked by examples/make_example.py) still comes out right:
    a regression test of the shipped weights + the default pipeline through the public API."""
    import importlib.util as util

    spec = util.spec_from_file_location("make_example", ROOT / "examples" / "make_example.py")
    example = util.module_from_spec(spec)
    spec.loader.exec_module(example)
    from pnpovss.toyworld.world import make_sample

    sample = make_sample(1, 39)  # examples/shapes.png
    res = Segmenter.from_pretrained("toy").segment(ROOT / "examples" / "shapes.png", ["circle", "star"])
    for name in ("circle", "star"):
        assert example.class_iou(sample, res.labels, res.classes, name) > 0.5, name


def load_bench():
    spec = importlib.util.spec_from_file_location("toybench", ROOT / "bench" / "toyworld.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_sweep_writes_the_preset_it_measured_best(tmp_path):

    model = tmp_path / "toy"
    shutil.copytree(resolve_source("toy"), model)
    bench = load_bench()
    out = bench.sweep(str(model), seed=3, images=2, size=96)
    best = out["best"]
    cell = bench.sweep_cell(out["preset"]["layer"], out["preset"]["head"])
    assert cell == f"L{best['layer']}H{best['head']}"
    assert out["miou_by_layer_head"][cell] == max(out["miou_by_layer_head"].values())
    assert out["miou_by_drop_k"][str(best["drop_k"])] == max(out["miou_by_drop_k"].values())
    bench.write_preset(str(model), out, "test")
    config = Segmenter.from_pretrained(str(model)).config
    assert (config.layer, config.head, config.drop_k) == (out["preset"]["layer"], out["preset"]["head"], best["drop_k"])


def test_benchmark_small_run_has_every_row():
    bench = load_bench()
    out = bench.run("toy", seed=3, images=5, size=96)  # 5 images: one full batch of 4 and a last batch of 1
    expected = {"random_weights", "no_vlm", "attention", "gradcam", "gradcam+dropout", "gradcam+dropout+blur",
                "full", "vocab_all", "vocab_reference", "vocab_detect", "vocab_detect_recurrent", "oracle_grid_maps"}
    assert set(out["rows"]) == expected and set(out["options"]) == {*bench.OPTIONS, "full_batch4"}
    assert out["pixel_agreement_with_full"]["full_batch4"] == 1.0  # batching changes no label
    assert out["options"]["full_batch4"]["miou"] == out["rows"]["full"]["miou"]
    assert 0.9 <= out["pixel_agreement_with_full"]["full_bf16"] <= 1.0
    for row in out["rows"].values():
        assert 0 <= row["miou"] <= 100 and set(row["per_class"]) == set(bench.CLASSES)
    assert out["seconds_per_image"] > 0 and out["layer"] >= 1
    assert np.isfinite(out["rows"]["full"]["miou"])
    # perfect patch maps through the default post-processing nearly recover the exact masks
    assert out["rows"]["oracle_grid_maps"]["miou"] > 80
    # every figure as recorded on this fixed seed (python bench/toyworld.py --seed 3 --images 5
    # --threads 1 --json bench/results/toyworld_seed3_images5.json): 5 images move a row's mIoU by
    # several points per changed image, so a changed pipeline shows; bf16 may round otherwise on other CPUs
    recorded = json.loads((ROOT / "bench" / "results" / "toyworld_seed3_images5.json").read_text())
    assert (recorded["seed"], recorded["images"], recorded["layer"]) == (3, 5, out["layer"])
    for group in ("rows", "options"):
        for name, row in recorded[group].items():
            tolerance = 2.0 if "bf16" in name else 0.05
            assert out[group][name]["miou"] == pytest.approx(row["miou"], abs=tolerance), (group, name)


@pytest.mark.skipif(not has_cxx_compiler(), reason="torch.compile (inductor) needs a C++ compiler")
def test_benchmark_compiled_row():
    """``--compiled-row``: bf16 with the compiled vision encoder, scored and compared with ``full``;
    the backbone is left uncompiled afterwards."""
    bench = load_bench()
    out = bench.run("toy", seed=3, images=2, size=96, compiled_row=True)
    row = out["options"]["full_bf16_compiled"]
    assert row["compile_vision"] and 0 <= row["miou"] <= 100 and "full_bf16_compiled" not in out["rows"]
    assert 0.9 <= out["pixel_agreement_with_full"]["full_bf16_compiled"] <= 1.0


def test_benchmark_runs_on_the_shapes_world(monkeypatch):
    """``--world toyworld-shapes`` draws every image from the shape world and records the world (the
    default world's records stay without the key)."""
    bench = load_bench()
    worlds = []
    real = bench.make_sample

    def spy(seed, index, size=96, world="toyworld"):
        worlds.append(world)
        return real(seed, index, size, world)

    monkeypatch.setattr(bench, "make_sample", spy)
    out = bench.run("toy", seed=3, images=2, size=96, world="toyworld-shapes")
    assert worlds == ["toyworld-shapes"] * 2
    assert out["world"] == "toyworld-shapes" and out["rows"]["oracle_grid_maps"]["miou"] > 80
