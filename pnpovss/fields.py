"""The field table: type, range, choices, text parser and stage of every :class:`~pnpovss.PipelineConfig` field.

The one place where pipeline values are validated: the dataclass's ``__post_init__``, presets,
``--set``, ``--head``, the demo's controls and search spaces all go through :data:`FIELDS`. Each
field names the pipeline stage that reads it (:data:`STAGES`); every "fields that matter here" set
and every cache key is derived from those (:func:`fields_for_stage`), so a new field cannot be left
out of one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import ConfigError

BLUR_BORDERS = ("reflect", "nearest", "mirror", "constant", "wrap")
"""scipy ``gaussian_filter`` border modes for ``blur_border``; ``reflect`` is scipy's default, which the reference uses."""
BACKGROUND_MODES = ("dataset", "reference", "always")
"""Values of ``PipelineConfig.background_mode`` (the first is the default)."""
CLASS_NAME_TABLES = ("package", "reference-cvpr", "reference-head")
"""Values of ``PipelineConfig.class_names``: this package's caption names, or the names the
reference wrote in its CVPR-era scripts / at its HEAD (``datasets/classnames/<table>/``)."""
EVAL_LABELS = ("gt", "reference")
"""Values of ``PipelineConfig.eval_labels``: the label protocols a configuration may ask for."""

STAGES = ("input", "encode", "caption", "classes", "maps", "dropout", "postprocess", "protocol")
"""What reads a field, in the pipeline's order: ``input`` the preprocessing (image size);
``encode`` the vision encoder (precision); ``caption`` the text around the class names;
``classes`` which classes enter the caption and whether it gets a background channel (the
presence stage, :meth:`~pnpovss.PipelineConfig.for_caption`); ``maps`` which cross-attention map
GradCAM reads; ``dropout`` Salience DropOut's passes and how they combine; ``postprocess``
threshold, upsampling, background rule, blur and CRF (a result's ``finish``); ``protocol`` read by
``eval`` and ``tune`` around the pipeline, never by it. A field changes the results of its stage
and of every later one."""


@dataclass(frozen=True)
class FieldSpec:
    """Type and range of one :class:`PipelineConfig` field, and how to read it from text.

    ``kind`` is ``int``, ``float``, ``bool``, ``str`` or ``heads``. Python/JSON values must have the
    kind's type already (an int is accepted for a float); only :meth:`parse` converts, and only text
    typed on the command line reaches it."""

    kind: str
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    """``min`` itself is excluded (a strictly positive value)."""
    max_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    """``None`` is allowed (``none`` on the command line)."""
    stage: str = ""
    """The stage that reads the field (one of :data:`STAGES`; required)."""
    before: Any = None
    """With ``changed_default``: the value that behaves as the library did before the field's
    default changed (or before the field existed), what a record lacking the field ran with."""
    changed_default: bool = False
    """The default is not the earlier behaviour: a record that lacks this field ran with ``before``."""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"FieldSpec stage must be one of {', '.join(STAGES)}, got {self.stage!r}")

    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.kind == "heads":
            return "a 0-based head index (integer >= 0), a non-empty list of them, or null for the mean of all heads"
        if self.choices:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string"}[self.kind]
            if self.min is not None:
                text += f" {'>' if self.min_open else '>='} {self.min:g}"
            if self.max is not None:
                text += f"{' and' if self.min is not None else ''} {'<' if self.max_open else '<='} {self.max:g}"
        return text + (" or null" if self.optional else "")

    def check(self, name: str, value: Any) -> Any:
        """``value`` if it is valid (lists of heads become tuples, ints in float fields floats);
        otherwise :class:`ConfigError` naming the field, the value and what is expected."""
        if value is None and (self.optional or self.kind == "heads"):
            return None
        ok = True
        if self.kind == "heads":
            items = [value] if isinstance(value, int) else value
            ok = (isinstance(value, (int, list, tuple)) and len(items) > 0
                  and all(isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in items))
            if ok:
                return value if isinstance(value, int) else tuple(items)
        elif self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "str":
            ok = isinstance(value, str) and (not self.choices or value in self.choices)
        else:
            types = (int,) if self.kind == "int" else (int, float)
            ok = isinstance(value, types) and not isinstance(value, bool)
            if ok and self.kind == "float":
                try:
                    ok = math.isfinite(value)
                except OverflowError:  # an int too large for a float
                    ok = False
            if ok:
                value = float(value) if self.kind == "float" else value
                ok = ((self.min is None or value > self.min or (value == self.min and not self.min_open))
                      and (self.max is None or value < self.max or (value == self.max and not self.max_open)))
        if not ok:
            raise ConfigError(f"{name}={value!r}: expected {self.expected()}")
        return value

    def parse(self, name: str, text: str) -> Any:
        """Command-line text -> a checked value (``none``/``null`` for optional fields; ``all`` or
        ``mean`` for the mean of all heads)."""
        raw = text.strip()
        low = raw.lower()
        try:
            if (self.optional and low in ("none", "null")) or (self.kind == "heads" and low in ("all", "mean", "none", "null")):
                value: Any = None
            elif self.kind == "heads":
                value = heads_from_text(raw)
            elif self.kind == "bool":
                if low not in _TRUE + _FALSE:
                    raise ValueError
                value = low in _TRUE
            elif self.kind == "int":
                value = int(raw)
            elif self.kind == "float":
                value = float(raw)
            else:
                value = text if name == "prompt" else raw  # a prompt's trailing space matters
        except ValueError:
            raise ConfigError(f"{name}={text!r}: expected {self.expected()}") from None
        return self.check(name, value)


_TRUE, _FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no")

FIELDS: dict[str, FieldSpec] = {
    "image_size": FieldSpec("int", min=16, optional=True, stage="input"),
    "prompt": FieldSpec("str", stage="caption"),
    "layer": FieldSpec("int", min=1, stage="maps"),
    "head": FieldSpec("heads", stage="maps"),
    "saliency": FieldSpec("str", choices=("gradcam", "attention"), stage="maps"),
    "drop_iters": FieldSpec("int", min=1, stage="dropout"),
    "drop_k": FieldSpec("int", min=0, stage="dropout"),
    "halving": FieldSpec("bool", stage="dropout"),
    "count_first_twice": FieldSpec("bool", stage="dropout"),
    "drop_mode": FieldSpec("str", choices=("reencode", "attention"), stage="dropout"),
    "threshold": FieldSpec("float", min=0.0, max=1.0, max_open=True, stage="postprocess"),
    "threshold_mode": FieldSpec("str", choices=("keep", "binary", "absolute"), stage="postprocess"),
    "background": FieldSpec("bool", stage="classes"),
    "background_rule": FieldSpec("str", choices=("zero", "one_minus_sum", "one_minus_sum_blurred"), stage="postprocess"),
    "blur": FieldSpec("bool", stage="postprocess"),
    "blur_sigma": FieldSpec("float", min=0.0, min_open=True, stage="postprocess"),
    "crf": FieldSpec("bool", stage="postprocess"),
    "crf_unary": FieldSpec("str", choices=("softmax", "probs"), stage="postprocess"),
    "crf_iters": FieldSpec("int", min=1, stage="postprocess"),
    "crf_gaussian_sxy": FieldSpec("float", min=0.0, min_open=True, stage="postprocess"),
    "crf_gaussian_compat": FieldSpec("float", min=0.0, stage="postprocess"),
    "crf_bilateral_sxy": FieldSpec("float", min=0.0, min_open=True, stage="postprocess"),
    "crf_bilateral_srgb": FieldSpec("float", min=0.0, min_open=True, stage="postprocess"),
    "crf_bilateral_compat": FieldSpec("float", min=0.0, stage="postprocess"),
    "crf_reference_side": FieldSpec("int", min=16, optional=True, stage="postprocess",
                                    changed_default=True, before=None),  # pixels until its default became 512
    "postprocess_max_side": FieldSpec("int", min=16, optional=True, stage="postprocess"),
    "presence_threshold": FieldSpec("float", min=0.0, max=1.0, stage="classes"),
    "presence_rounds": FieldSpec("int", min=0, stage="classes"),
    "presence_clip_ratio": FieldSpec("float", min=0.0, max=1.0, stage="classes"),
    "presence_confident": FieldSpec("float", min=0.0, max=1.0, stage="classes"),
    "presence_clip_model": FieldSpec("str", optional=True, stage="classes"),
    "presence_clip_template": FieldSpec("str", stage="classes"),
    "align_corners": FieldSpec("bool", stage="postprocess"),
    "blur_border": FieldSpec("str", choices=BLUR_BORDERS, stage="postprocess"),
    "background_mode": FieldSpec("str", choices=BACKGROUND_MODES, stage="classes"),
    "pass_combine": FieldSpec("str", choices=("sum", "minmax"), stage="dropout"),
    "drop_saliency": FieldSpec("str", choices=("classes", "reference"), stage="dropout"),
    "dtype": FieldSpec("str", choices=("auto", "fp32", "bf16", "fp16"), stage="encode"),
    "combine_passes": FieldSpec("str", choices=("all", "first"), stage="dropout"),
    "zero_dropped": FieldSpec("str", choices=("before_minmax", "after_minmax"), stage="dropout"),
    "upsample": FieldSpec("str", choices=("bilinear", "bicubic_constant"), stage="postprocess"),
    "class_names": FieldSpec("str", choices=CLASS_NAME_TABLES, stage="protocol"),
    "reward_synonyms": FieldSpec("bool", stage="protocol"),
    "eval_labels": FieldSpec("str", choices=EVAL_LABELS, stage="protocol"),
}
"""One entry per :class:`PipelineConfig` field: the one place where values are validated (the
dataclass, presets, ``--set``, ``--head``, search spaces all go through it). A new field adds
one line here."""


def field_spec(name: str) -> FieldSpec:
    """The field's entry in :data:`FIELDS` (every field has one: ``pnpovss.config`` checks it)."""
    try:
        return FIELDS[name]
    except KeyError:
        check_keys({name: None})
        raise


def fields_for_stage(*stages: str, table: Mapping[str, FieldSpec] | None = None) -> tuple[str, ...]:
    """Names of the fields read by any of ``stages``, in table order (``table``: default
    :data:`FIELDS`). Derive every stage-dependent set and cache key from this."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; stages: {', '.join(STAGES)}")
    return tuple(name for name, spec in (FIELDS if table is None else table).items() if spec.stage in stages)


def check_keys(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` as a dict when every key is a field; otherwise one line naming the unknown ones."""
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown pipeline option(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}"
        )
    return dict(overrides)


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Known keys, each value valid for its field (field by field; no other field is looked at)."""
    return {k: field_spec(k).check(k, v) for k, v in check_keys(overrides).items()}


def heads_from_text(text: str) -> int | tuple[int, ...]:
    """``"9"`` -> 9, ``"3,9"`` -> (3, 9); ValueError if an item is not an integer. (Keywords such
    as ``all`` are each caller's to handle.)"""
    heads = tuple(int(v) for v in text.split(","))
    return heads[0] if len(heads) == 1 else heads


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["crf_unary=probs", "threshold=0.1", "head=all"]`` -> checked overrides (the CLI's ``--set``),
    each value read from text by its field's :class:`FieldSpec`."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set crf_unary=probs")
        check_keys({key: None})
        try:
            out[key] = field_spec(key).parse(key, raw)
        except ConfigError as exc:
            raise ConfigError(f"--set {exc}") from None
    return out
