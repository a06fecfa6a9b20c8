"""One field table validates every pipeline option: API keywords, presets, --set, --head and
search spaces. Wrong-typed values are refused (never converted) with a one-line ConfigError."""

import json
import math

import pytest
from click.testing import CliRunner

from pnpovss import PipelineConfig, Segmenter
from pnpovss.fields import FIELDS, parse_assignments
from pnpovss.preset_files import load_preset
from pnpovss.errors import ConfigError


@pytest.mark.parametrize("overrides, message", [
    ({"halving": "no"}, "halving='no': expected true or false"),
    ({"layer": "1"}, "layer='1': expected an integer >= 1"),
    ({"layer": None}, "layer=None: expected an integer"),
    ({"layer": True}, "layer=True: expected an integer"),
    ({"threshold": "0.3"}, "threshold='0.3': expected a finite number >= 0 and < 1"),
    ({"head": "all"}, "head='all': expected a 0-based head index"),
    ({"head": [1, "2"]}, "head=[1, '2']"),
    ({"head": []}, "head=[]"),
    ({"drop_iters": 2.5}, "drop_iters=2.5: expected an integer >= 1"),
    ({"blur_sigma": math.nan}, "blur_sigma=nan: expected a finite number > 0"),
    ({"blur_sigma": math.inf}, "blur_sigma=inf"),
    ({"crf_gaussian_sxy": -5}, "crf_gaussian_sxy=-5.0: expected a finite number > 0"),
    ({"crf_unary": "magic"}, "crf_unary='magic': expected one of 'softmax', 'probs'"),
    ({"image_size": 8}, "image_size=8: expected an integer >= 16 or null"),
    ({"postprocess_max_side": 10.5}, "postprocess_max_side=10.5"),
])
def test_wrong_values_are_refused_not_converted(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        PipelineConfig().replace(**overrides)
    assert "\n" not in str(err.value)


def test_valid_values_are_normalised():
    cfg = PipelineConfig(head=[3, 1], threshold=0, image_size=None, postprocess_max_side=None)
    assert cfg.head == (3, 1) and isinstance(cfg.threshold, float) and cfg.postprocess_max_side is None
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg


def test_every_field_has_a_table_entry():
    """Adding a field means adding its line to FIELDS (types alone would let 'nan' or -5 through)."""
    from dataclasses import fields

    assert {f.name for f in fields(PipelineConfig)} == set(FIELDS)
    for f in fields(PipelineConfig):  # the defaults themselves pass their own check
        FIELDS[f.name].check(f.name, f.default)


def test_set_parses_text_by_field():
    got = parse_assignments(["halving=no", "head=3,9", "image_size=none", "threshold=0.2",
                            "postprocess_max_side=none", "prompt=a photo of "])
    assert got == {"halving": False, "head": (3, 9), "image_size": None, "threshold": 0.2,
                   "postprocess_max_side": None, "prompt": "a photo of "}
    with pytest.raises(ConfigError, match=r"--set drop_iters='2.5': expected an integer >= 1"):
        parse_assignments(["drop_iters=2.5"])
    with pytest.raises(ConfigError, match="--set threshold=nan: expected a finite number"):
        parse_assignments(["threshold=nan"])


def test_preset_values_are_checked_on_load(tmp_path):
    p = tmp_path / "best.json"
    p.write_text(json.dumps({"config": {"halving": "no"}}))
    with pytest.raises(ConfigError, match=f"preset file {p}: halving='no': expected true or false"):
        load_preset(p)


def test_api_refuses_wrong_types_before_loading(tiny_blip_dir, monkeypatch):
    import pnpovss.factory as factory

    monkeypatch.setattr(factory, "load_backbone", lambda *a, **k: pytest.fail("model loaded before validation"))
    with pytest.raises(ConfigError, match="layer='1'"):
        Segmenter.from_pretrained(str(tiny_blip_dir), layer="1")


def test_cli_refuses_a_wrong_typed_preset_in_one_line(tmp_path, tiny_blip_dir, two_tone_image):
    from PIL import Image

    from pnpovss.cli import main

    Image.fromarray(two_tone_image).save(tmp_path / "a.png")
    (tmp_path / "p.json").write_text(json.dumps({"drop_iters": 2.5}))
    for cmd in (["segment", str(tmp_path / "a.png"), "--classes", "sky", "--out", str(tmp_path / "out")],
                ["eval", "--dataset", "toyworld", "--images", "1"]):
        res = CliRunner().invoke(main, [*cmd, "--model", str(tiny_blip_dir), "--preset", str(tmp_path / "p.json")])
        assert res.exit_code == 1 and res.output.strip().splitlines() == [
            f"Error: preset file {tmp_path / 'p.json'}: drop_iters=2.5: expected an integer >= 1"], res.output
    assert not (tmp_path / "out").exists()


def test_search_space_values_are_checked(segmenter):
    from pnpovss.search import load_space

    with pytest.raises(ConfigError, match=r"space: threshold='0.3': expected a finite number"):
        load_space({"threshold": ["0.3"]}, segmenter.backbone, segmenter.config)
    with pytest.raises(ConfigError, match=r"space: drop_iters=2.5"):
        load_space({"drop_iters": [1, 2.5]}, segmenter.backbone, segmenter.config)
    with pytest.raises(ConfigError, match=r"must be numbers"):
        load_space({"threshold": {"from": "0.1", "to": 0.3}}, segmenter.backbone, segmenter.config)
