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
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import PnpOvssError

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

    def __post_init__(self) -> None:
        problems = []
        if self.image_size is not None and self.image_size < 16:
            problems.append(f"image_size must be >= 16, got {self.image_size}")
        if self.layer < 1:
            problems.append(f"layer is 1-based and must be >= 1, got {self.layer}")
        heads = self.heads_tuple()
        if heads is not None and (not heads or min(heads) < 0):
            problems.append(f"head must be a 0-based index or a non-empty set of them, got {self.head!r}")
        if self.drop_iters < 1:
            problems.append(f"drop_iters must be >= 1 (1 = no dropout), got {self.drop_iters}")
        if self.drop_k < 0:
            problems.append(f"drop_k must be >= 0, got {self.drop_k}")
        if not 0.0 <= self.threshold < 1.0:
            problems.append(f"threshold must be in [0, 1), got {self.threshold}")
        if self.saliency not in ("gradcam", "attention"):
            problems.append(f"saliency must be 'gradcam' or 'attention', got {self.saliency!r}")
        if self.drop_mode not in ("reencode", "attention"):
            problems.append(f"drop_mode must be 'reencode' or 'attention', got {self.drop_mode!r}")
        if self.background_rule not in ("zero", "one_minus_sum", "one_minus_sum_blurred"):
            problems.append("background_rule must be 'zero', 'one_minus_sum' or 'one_minus_sum_blurred', "
                            f"got {self.background_rule!r}")
        if self.threshold_mode not in ("keep", "binary", "absolute"):
            problems.append(f"threshold_mode must be 'keep', 'binary' or 'absolute', got {self.threshold_mode!r}")
        if self.crf_unary not in ("softmax", "probs"):
            problems.append(f"crf_unary must be 'softmax' or 'probs', got {self.crf_unary!r}")
        if self.blur_sigma <= 0:
            problems.append(f"blur_sigma must be > 0, got {self.blur_sigma}")
        if self.crf_iters < 1:
            problems.append(f"crf_iters must be >= 1, got {self.crf_iters}")
        if self.pass_combine not in ("sum", "minmax"):
            problems.append(f"pass_combine must be 'sum' or 'minmax', got {self.pass_combine!r}")
        if self.drop_saliency not in ("classes", "reference"):
            problems.append(f"drop_saliency must be 'classes' or 'reference', got {self.drop_saliency!r}")
        if self.background_mode not in BACKGROUND_MODES:
            problems.append(f"background_mode must be 'dataset', 'reference' or 'always', got {self.background_mode!r}")
        if self.blur_border not in BLUR_BORDERS:
            problems.append("blur_border must be 'reflect', 'nearest', 'mirror', 'constant' or 'wrap', "
                            f"got {self.blur_border!r}")
        if problems:
            raise PnpOvssError("; ".join(problems))

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


def _check_keys(overrides: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(PipelineConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise PnpOvssError(
            f"unknown pipeline option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    out = dict(overrides)
    if isinstance(out.get("head"), list):
        out["head"] = tuple(int(h) for h in out["head"])
    return out


def heads_from_text(text: str) -> int | tuple[int, ...]:
    """``"9"`` -> 9, ``"3,9"`` -> (3, 9); ValueError if an item is not an integer. (Keywords such
    as ``all`` are each caller's to handle.)"""
    heads = tuple(int(v) for v in text.split(","))
    return heads[0] if len(heads) == 1 else heads


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["crf_unary=probs", "threshold=0.1", "head=all"]`` -> typed overrides (the CLI's ``--set``).

    Values are converted to the type of the field's default; ``head`` takes an index, a comma list
    or ``all``; ``none`` clears ``image_size`` and ``head``."""
    defaults = PipelineConfig()
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip().replace("-", "_"), raw.strip()
        if not sep or not key:
            raise PnpOvssError(f"--set {item!r}: expected KEY=VALUE, e.g. --set crf_unary=probs")
        _check_keys({key: None})
        current = getattr(defaults, key)
        try:
            if raw.lower() in ("none", "all") and key in ("head", "image_size"):
                value: Any = None
            elif key == "head":
                value = heads_from_text(raw)
            elif isinstance(current, bool):
                if raw.lower() not in ("true", "false", "1", "0", "on", "off", "yes", "no"):
                    raise ValueError
                value = raw.lower() in ("true", "1", "on", "yes")
            elif isinstance(current, int) or key == "image_size":
                value = int(raw)
            elif isinstance(current, float):
                value = float(raw)
            else:
                value = raw
        except ValueError:
            raise PnpOvssError(f"--set {item!r}: {raw!r} is not a valid {key} (default {current!r})") from None
        out[key] = value
    defaults.replace(**out)  # reject bad values now, before any model is loaded
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
    return _check_keys(cfg)


def save_preset(path: str | os.PathLike[str], config: PipelineConfig | Mapping[str, Any], **meta: Any) -> None:
    """Write a preset atomically; ``meta`` (model, reward, search trace…) is stored beside the config."""
    from .imageio import atomic_write_text

    cfg = config.to_dict() if isinstance(config, PipelineConfig) else dict(config)
    atomic_write_text(Path(path), json.dumps({"config": cfg, **meta}, indent=2, sort_keys=True) + "\n")


__all__ = ["PipelineConfig", "HeadSpec", "list_presets", "load_preset", "parse_assignments", "save_preset",
           "PRESET_FILENAME"]
