"""Pipeline hyper-parameters as plain data, and presets (JSON files of overrides).

Defaults follow the PnP-OVSS paper and its reference code; every constant of the method is a field
here so that a tuning run can change it and a preset file can record it. Precedence when a
:class:`~pnpovss.Segmenter` is built: these defaults < the model directory's own preset
(``pnpovss_preset.json``, e.g. the toy model's measured layer/head) < a user preset file < explicit
keyword arguments / CLI options.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ConfigError, PnpOvssError

PRESET_FILENAME = "pnpovss_preset.json"

BLUR_BORDERS = ("reflect", "nearest", "mirror", "constant", "wrap")
"""scipy ``gaussian_filter`` border modes for ``blur_border``; ``reflect`` is scipy's default, which the reference uses."""
BACKGROUND_MODES = ("dataset", "reference", "always")
"""Values of ``PipelineConfig.background_mode`` (the first is the default)."""
REFERENCE_BACKGROUND_BELOW = 3
"""``background_mode="reference"`` adds the background channel to captions of fewer classes than this."""

HeadSpec = int | tuple[int, ...] | None
"""One head (0-based), a set of heads whose maps are averaged, or ``None`` for all heads."""


@dataclass(frozen=True)
class PipelineConfig:
    """Every knob of the PnP-OVSS pipeline. Field docs give the paper/reference default."""

    image_size: int | None = None
    """Square input size in pixels; ``None`` = the checkpoint's native size (BLIP-large: 384)."""
    prompt: str = "a picture of "
    """Caption prefix; the class names follow it, joined by spaces. Prefix tokens carry no class."""
    layer: int = 8
    """Cross-attention layer read for GradCAM, 1-based as in the paper."""
    head: HeadSpec = 9
    """Attention head (0-based), a tuple of heads to average, or None for the mean of all heads."""
    saliency: str = "gradcam"
    """``gradcam``: A * relu(dS/dA) (the paper); ``attention``: raw cross-attention A (an ablation)."""
    drop_iters: int = 4
    """Salience DropOut passes T (1 = no dropout). Patches are dropped after every pass but the last."""
    drop_k: int = 10
    """Patches dropped after each pass (ignored when ``halving``)."""
    halving: bool = False
    """Drop half of the remaining patches after each pass (the CVPR paper's schedule)."""
    count_first_twice: bool = True
    """Combined map = pass 0 + sum of all passes, i.e. pass 0 counted twice, as the reference code does."""
    drop_mode: str = "reencode"
    """How dropped patches are removed: ``reencode`` (mean colour, image re-encoded; the paper) or
    ``attention`` (the patches' keys are masked out of the cross-attention; one vision pass)."""
    threshold: float = 0.15
    """After per-class min-max normalisation, values below this are set to 0."""
    threshold_mode: str = "keep"
    """``keep``: values at or above the threshold are kept (the reference segmentation script);
    ``binary``: they become 1; ``absolute``: 1 where the combined map itself (no min-max) reaches
    the threshold (the CVPR-era evaluation scripts, on the sum of min-max normalised passes)."""
    background: bool = True
    """Add a background channel (label 0) to the output."""
    background_rule: str = "zero"
    """``zero``: background = 1 where every class map is 0 (reference); ``one_minus_sum``: 1 - sum of class maps
    (clamped); ``one_minus_sum_blurred``: 1 - sum of the *blurred* class maps, the background itself
    not blurred (the CVPR-era evaluation scripts)."""
    blur: bool = True
    """Gaussian-blur every channel before the CRF."""
    blur_sigma: float = 0.05
    """Blur sigma as a fraction of max(H, W) of the output image."""
    crf: bool = True
    """Refine with a dense CRF; False gives the plain argmax of the blurred maps."""
    crf_unary: str = "softmax"
    """CRF unary = -log p with p = ``softmax`` over the channels (reference segmentation script) or
    the maps themselves taken as ``probs`` (reference evaluation scripts; sharper unaries)."""
    crf_iters: int = 10
    crf_gaussian_sxy: float = 3.0
    crf_gaussian_compat: float = 7.0
    crf_bilateral_sxy: float = 50.0
    crf_bilateral_srgb: float = 5.0
    crf_bilateral_compat: float = 10.0
    postprocess_max_side: int | None = 1024
    """Blur and CRF run on a copy of the image whose long side is at most this many pixels, and the
    labels are upsampled back (``None``: always full resolution). Images up to this size are
    post-processed exactly as the reference does; larger ones cost seconds instead of minutes."""
    presence_threshold: float = 0.9
    """Class presence (``pnpovss.presence``): when the class list is a list of candidates (the
    default of ``segment``; ``keep_all`` skips this), a candidate enters the caption only if the
    backbone's ITM match probability for ``prompt + name`` alone reaches this value. A probability
    (softmax of the ITM head's two logits), so it reads the same on any ITM model. 0.9: best mean
    tag F1 on toy-world development seeds 0 and 1 (``bench/toyworld.py --presence-sweep``)."""
    presence_rounds: int = 0
    """Recurrent presence check (CLIP-as-RNN's idea): after segmenting, drop the kept classes whose
    region CLIP does not recognise (masked vs blank, as the tuning reward) and segment again, at most
    this many rounds. 0 = off. Needs a CLIP model (``Segmenter.presence_clip`` / ``--clip``)."""
    align_corners: bool = True
    """Bilinear upsampling of the grid maps with ``align_corners=True`` (reference segmentation
    script); False centres each patch on its pixels (this package's earlier default; an option)."""
    blur_border: str = "reflect"
    """scipy ``gaussian_filter`` border mode of the blur: ``reflect`` (scipy's default, used by the
    reference), ``nearest``, ``mirror``, ``constant`` or ``wrap``."""
    background_mode: str = "dataset"
    """When the background channel is added: ``dataset``: exactly when ``background`` is on
    (evaluation turns it on for datasets with a background class); ``reference``: also when the
    caption names fewer than 3 classes (the reference segmentation scripts on Pascal Context,
    ADE20K and COCO-Stuff; always on VOC and COCO-Object); ``always``: on every caption (the
    CVPR-era evaluation scripts). See :meth:`for_caption`."""
    pass_combine: str = "sum"
    """How the DropOut passes' class maps are combined: ``sum`` of the raw maps (reference
    segmentation script); ``minmax``: each pass's class map min-max normalised first (the CVPR-era
    evaluation scripts, ``New_eval_cam_*.py``)."""
    drop_saliency: str = "classes"
    """Which saliency picks the patches to drop: ``classes``: the sum over classes of each class's
    mean over its word pieces (ours); ``reference``: the sum over every class word piece plus
    ``[SEP]`` (the reference: a k-piece class counts k times)."""
    dtype: str = "fp32"
    """Precision of the network passes: ``fp32`` (the paper), ``bf16``, ``fp16`` (CUDA only) or
    ``auto`` (bf16 on a CPU with native bf16 or on CUDA, fp16 on a CUDA GPU without bf16, else
    fp32); see :mod:`pnpovss.precision`. GradCAM maps are formed in fp32 either way."""

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            try:
                object.__setattr__(self, f.name, field_spec(f.name).check(f.name, getattr(self, f.name)))
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))

    def heads_tuple(self) -> tuple[int, ...] | None:
        """The head spec as a tuple (None = all heads)."""
        if self.head is None:
            return None
        if isinstance(self.head, int):
            return (self.head,)
        return tuple(int(h) for h in self.head)

    def for_caption(self, num_classes: int) -> "PipelineConfig":
        """The configuration for one caption of ``num_classes`` classes: under ``background_mode
        = "reference"`` the background channel is also added when fewer than 3 classes are named,
        under ``"always"`` always."""
        if self.background or self.background_mode == "dataset" or (
                self.background_mode == "reference" and num_classes >= REFERENCE_BACKGROUND_BELOW):
            return self
        return dataclasses.replace(self, background=True)

    def replace(self, **overrides: Any) -> "PipelineConfig":
        """A copy with ``overrides`` applied; an unknown key is an error, not silently ignored."""
        return dataclasses.replace(self, **_check_keys(overrides))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(d["head"], tuple):
            d["head"] = list(d["head"])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PipelineConfig":
        return cls().replace(**dict(data))


# ------------------------------------------------------------------------------ field table
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
    "image_size": FieldSpec("int", min=16, optional=True),
    "prompt": FieldSpec("str"),
    "layer": FieldSpec("int", min=1),
    "head": FieldSpec("heads"),
    "saliency": FieldSpec("str", choices=("gradcam", "attention")),
    "drop_iters": FieldSpec("int", min=1),
    "drop_k": FieldSpec("int", min=0),
    "halving": FieldSpec("bool"),
    "count_first_twice": FieldSpec("bool"),
    "drop_mode": FieldSpec("str", choices=("reencode", "attention")),
    "threshold": FieldSpec("float", min=0.0, max=1.0, max_open=True),
    "threshold_mode": FieldSpec("str", choices=("keep", "binary", "absolute")),
    "background": FieldSpec("bool"),
    "background_rule": FieldSpec("str", choices=("zero", "one_minus_sum", "one_minus_sum_blurred")),
    "blur": FieldSpec("bool"),
    "blur_sigma": FieldSpec("float", min=0.0, min_open=True),
    "crf": FieldSpec("bool"),
    "crf_unary": FieldSpec("str", choices=("softmax", "probs")),
    "crf_iters": FieldSpec("int", min=1),
    "crf_gaussian_sxy": FieldSpec("float", min=0.0, min_open=True),
    "crf_gaussian_compat": FieldSpec("float", min=0.0),
    "crf_bilateral_sxy": FieldSpec("float", min=0.0, min_open=True),
    "crf_bilateral_srgb": FieldSpec("float", min=0.0, min_open=True),
    "crf_bilateral_compat": FieldSpec("float", min=0.0),
    "postprocess_max_side": FieldSpec("int", min=16, optional=True),
    "presence_threshold": FieldSpec("float", min=0.0, max=1.0),
    "presence_rounds": FieldSpec("int", min=0),
    "align_corners": FieldSpec("bool"),
    "blur_border": FieldSpec("str", choices=BLUR_BORDERS),
    "background_mode": FieldSpec("str", choices=BACKGROUND_MODES),
    "pass_combine": FieldSpec("str", choices=("sum", "minmax")),
    "drop_saliency": FieldSpec("str", choices=("classes", "reference")),
    "dtype": FieldSpec("str", choices=("auto", "fp32", "bf16", "fp16")),
}
"""One entry per :class:`PipelineConfig` field: the one place where values are validated (the
dataclass, presets, ``--set``, ``--head``, search spaces all go through it). A new field adds
one line here."""


def field_spec(name: str) -> FieldSpec:
    """The field's entry in :data:`FIELDS`; a field without one is checked against its default's type."""
    spec = FIELDS.get(name)
    if spec is not None:
        return spec
    default = next(f.default for f in fields(PipelineConfig) if f.name == name)
    kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(default), "any")
    return FieldSpec(kind) if kind != "any" else _ANY


class _AnySpec(FieldSpec):
    def check(self, name: str, value: Any) -> Any:
        return value


_ANY = _AnySpec("str")


def _check_keys(overrides: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(PipelineConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"unknown pipeline option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return dict(overrides)


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Known keys, each value valid for its field (field by field; no other field is looked at)."""
    return {k: field_spec(k).check(k, v) for k, v in _check_keys(overrides).items()}


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
        _check_keys({key: None})
        try:
            out[key] = field_spec(key).parse(key, raw)
        except ConfigError as exc:
            raise ConfigError(f"--set {exc}") from None
    return out


PRESETS_DIR = Path(__file__).parent / "presets"
"""Named presets shipped with the package (``--preset reference-head``), one flat JSON file each."""


def list_presets() -> list[str]:
    """Names of the presets shipped with the package, sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def preset_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A preset file path, or the file of a named preset. A file that exists wins over a name."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    named = PRESETS_DIR / f"{name_or_path}.json"
    if str(name_or_path) in list_presets():
        return named
    if p.suffix != ".json" and p.parent == Path("."):
        raise PnpOvssError(f"preset {str(name_or_path)!r} is neither a file nor a named preset; named presets: "
                           f"{', '.join(list_presets())}")
    return p


def load_preset(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a preset: a named one (:func:`list_presets`) or a file, ``{"config": {...}, ...}`` (a
    tuning run's best) or a bare dict of options."""
    p = preset_path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise PnpOvssError(f"preset file {p} does not exist; pass the best.json/preset.json a tune run wrote") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PnpOvssError(f"preset file {p} is not readable JSON ({exc}); regenerate it with 'pnpovss tune'") from None
    if not isinstance(data, dict):
        raise PnpOvssError(f"preset file {p} must hold a JSON object, got {type(data).__name__}")
    cfg = data.get("config", data)
    if not isinstance(cfg, dict):
        raise PnpOvssError(f"preset file {p}: 'config' must be a JSON object")
    try:
        return check_overrides(cfg)
    except ConfigError as exc:
        raise ConfigError(f"preset file {p}: {exc}") from None


def save_preset(path: str | os.PathLike[str], config: PipelineConfig | Mapping[str, Any], **meta: Any) -> None:
    """Write a preset atomically; ``meta`` (model, reward, search trace…) is stored beside the config."""
    from .fileio import atomic_write_text

    cfg = config.to_dict() if isinstance(config, PipelineConfig) else dict(config)
    atomic_write_text(Path(path), json.dumps({"config": cfg, **meta}, indent=2, sort_keys=True) + "\n")


__all__ = ["PipelineConfig", "FIELDS", "FieldSpec", "check_overrides", "HeadSpec", "list_presets", "load_preset",
           "parse_assignments", "save_preset", "PRESET_FILENAME"]
