"""Named presets shipped with the package: what each reproduces, selection by name or path."""

import json

import pytest
from click.testing import CliRunner

from pnpovss import PipelineConfig, PnpOvssError, Segmenter, list_presets, load_preset
from pnpovss.cli import main

CVPR = ("voc", "context", "ade20k", "coco-object", "coco-stuff")


def test_named_presets_are_listed_and_valid():
    assert list_presets() == sorted(["reference-head", *(f"reference-cvpr-{d}" for d in CVPR)])
    for name in list_presets():
        cfg = PipelineConfig.from_dict(load_preset(name))
        assert "background" not in load_preset(name)  # the dataset decides (eval refuses a mismatch)
        assert load_preset(name)["crf_reference_side"] is None  # the reference's CRF kernels, in pixels
        assert (cfg.layer, cfg.head, cfg.saliency, cfg.drop_saliency) == (8, 9, "gradcam", "reference")


def test_reference_head_preset():
    cfg = PipelineConfig.from_dict(load_preset("reference-head"))
    assert (cfg.image_size, cfg.drop_iters, cfg.drop_k, cfg.halving, cfg.threshold) == (336, 4, 10, False, 0.15)
    assert (cfg.threshold_mode, cfg.crf_unary, cfg.background_rule, cfg.background_mode) == (
        "keep", "softmax", "zero", "reference")


@pytest.mark.parametrize("dataset", CVPR)
def test_reference_cvpr_presets(dataset):
    cfg = PipelineConfig.from_dict(load_preset(f"reference-cvpr-{dataset}"))
    assert (cfg.image_size, cfg.drop_iters, cfg.halving) == (768, 5, True)
    assert cfg.threshold == (0.15 if dataset == "voc" else 0.1)
    assert (cfg.threshold_mode, cfg.pass_combine, cfg.background_rule, cfg.crf_unary, cfg.crf_iters) == (
        "absolute", "minmax", "one_minus_sum_blurred", "probs", 20)


def test_preset_by_name_or_path(tiny_blip_dir, tmp_path):
    seg = Segmenter.from_pretrained(str(tiny_blip_dir), preset="reference-cvpr-voc", layer=2, head=1)
    assert seg.config.image_size == 768 and seg.config.pass_combine == "minmax"
    own = tmp_path / "reference-head"  # a file that exists wins over the name
    own.write_text(json.dumps({"threshold": 0.3}))
    assert load_preset(own) == {"threshold": 0.3}
    with pytest.raises(PnpOvssError, match="preset 'reference-hed' is neither a file nor a named preset; named "
                                           "presets: reference-cvpr-ade20k, "):
        load_preset("reference-hed")
    with pytest.raises(PnpOvssError, match="does not exist"):
        load_preset(tmp_path / "missing.json")


def test_eval_command_takes_a_preset_name(tiny_blip_dir, tmp_path):
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(main, ["eval", "--dataset", "toyworld", "--images", "1", "--model", str(tiny_blip_dir),
                                    "--preset", "reference-head", "--set", "layer=2", "--set", "head=1",
                                    "--set", "image_size=64", "--json", str(out), "--threads", "1"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    cfg = json.loads(out.read_text())["config"]
    assert cfg["drop_iters"] == 4 and cfg["background_mode"] == "reference" and cfg["drop_saliency"] == "reference"
    bad = CliRunner().invoke(main, ["eval", "--dataset", "toyworld", "--images", "1", "--model", str(tiny_blip_dir),
                                    "--preset", "no-such-preset"])
    assert bad.exit_code == 1 and "Error: preset 'no-such-preset' is neither a file nor a named preset" in bad.output
