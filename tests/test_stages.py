"""Settings that know their stage: every field names the stage that reads it, and every
stage-dependent set and cache key is derived from that (a new field cannot be left out of one)."""

import dataclasses

import numpy as np
import pytest

from pnpovss import fields
from pnpovss.config import PipelineConfig
from pnpovss.demo.engine import DemoEngine
from pnpovss.fields import FIELDS, STAGES, FieldSpec, fields_for_stage
from pnpovss.pipeline import encoding_key
from pnpovss.result import PendingResult
from pnpovss.search import space
from pnpovss.search.cache import layer_head_key, trial_key


def test_every_field_names_a_known_stage():
    assert {spec.stage for spec in FIELDS.values()} <= set(STAGES)
    assert set(FIELDS) == {f.name for f in dataclasses.fields(PipelineConfig)}
    assert sum(len(fields_for_stage(s)) for s in STAGES) == len(FIELDS)
    assert fields_for_stage("input", "encode") == ("image_size", "dtype")
    with pytest.raises(ValueError, match="stage must be one of"):
        FieldSpec("int")
    with pytest.raises(ValueError, match="unknown stage 'paint'"):
        fields_for_stage("paint")


def _derived(cfg) -> dict:
    """Every stage-dependent set and key of the package for configuration ``cfg``."""
    rgb = np.zeros((4, 4, 3), np.uint8)
    return {
        "encoding_key": encoding_key(rgb, 32, "fp32", False, cfg),
        "layer_head_key": layer_head_key("model", rgb, ["a"], 32, "fp32", cfg),
        "trial_key": trial_key(0, cfg),
        "demo_key": DemoEngine._key("digest", ["a"], cfg, {}),
        "map_params": space.map_params(),
        "dropout_params": space.dropout_params(),
    }


WHO_READS = {  # the demo keys its grid maps by every field but the post-processing ones
    "input": {"encoding_key", "layer_head_key", "demo_key"},
    "encode": {"encoding_key", "layer_head_key", "demo_key"},
    "caption": {"layer_head_key", "demo_key"},
    "classes": {"demo_key"},
    "maps": {"trial_key", "demo_key", "map_params"},
    "dropout": {"trial_key", "demo_key", "map_params", "dropout_params"},
    "postprocess": set(),
    "protocol": {"demo_key"},
}


@pytest.mark.parametrize("stage", STAGES)
def test_a_new_field_reaches_every_derived_set_of_its_stage(stage, monkeypatch):
    """A field added to a scratch table (and to a scratch config class) changes exactly the sets and
    keys its stage feeds; a post-processing field is the one a cached result may restyle."""
    assert set(WHO_READS) == set(STAGES)
    monkeypatch.setattr(fields, "FIELDS", {**FIELDS, "scratch": FieldSpec("int", stage=stage)})
    Scratch = dataclasses.make_dataclass("Scratch", [("scratch", int, 0)], bases=(PipelineConfig,), frozen=True)
    before, after = _derived(Scratch()), _derived(Scratch(scratch=1))
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {k for k in WHO_READS[stage] if not k.endswith("params")}
    for name in ("map_params", "dropout_params"):
        assert ("scratch" in after[name]) == (name in WHO_READS[stage])
    assert ("scratch" in fields_for_stage(stage)) and fields_for_stage(stage)[-1] == "scratch"
    pending = PendingResult.from_maps(np.zeros((4, 4, 3), np.uint8), ["a"], Scratch(), np.zeros((1, 2, 2), np.float32))
    if stage == "postprocess":
        assert pending.restyled(Scratch(scratch=1)).config.scratch == 1
    else:
        with pytest.raises(ValueError, match="restyled changes scratch"):
            pending.restyled(Scratch(scratch=1))


def test_derived_sets_of_the_real_table():
    from pnpovss.demo import POSTPROCESS_FIELDS

    assert POSTPROCESS_FIELDS == set(fields_for_stage("postprocess")) and "background" not in POSTPROCESS_FIELDS
    assert set(space.DROPOUT_PARAMS) >= {"drop_iters", "drop_k", "combine_passes", "zero_dropped", "pass_combine"}
    assert set(space.MAP_PARAMS) == {"layer", "head", "saliency", *space.DROPOUT_PARAMS}
    assert set(space.MASK_PARAMS) <= set(fields_for_stage("postprocess"))
    # the DropOut memo of tune once left combine_passes and zero_dropped out of its key
    base = PipelineConfig(drop_iters=4)
    for name, other in (("combine_passes", "first"), ("zero_dropped", "after_minmax"), ("pass_combine", "minmax"),
                        ("drop_saliency", "reference")):
        assert trial_key(0, base) != trial_key(0, base.replace(**{name: other}))


def test_a_changed_default_is_not_taken_for_the_earlier_behaviour():
    """A record written before ``crf_reference_side`` existed ran with kernels in pixels (``None``),
    not with today's default (512): resume checks match it only with ``None``, and a record read
    back gets ``None``. A field whose default never changed reads as its default."""
    from pnpovss.config import PipelineConfig, as_recorded, earlier_values

    record = PipelineConfig(crf_reference_side=None).to_dict()
    del record["crf_reference_side"]  # as written before the field existed
    assert "crf_reference_side" not in as_recorded(PipelineConfig(crf_reference_side=None).to_dict(), record)
    assert as_recorded(PipelineConfig().to_dict(), record)["crf_reference_side"] == 512  # other behaviour: redo
    assert PipelineConfig.from_record(record).crf_reference_side is None
    assert PipelineConfig.from_record(record) == PipelineConfig(crf_reference_side=None)
    assert earlier_values()["threshold"] == PipelineConfig().threshold
