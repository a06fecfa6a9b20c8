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
    ``binary``: they become 1 (the reference's per-dataset evaluation scripts)."""
    background: bool = True
    """Add a background channel (label 0) to the output."""
    background_rule: str = "zero"
    """``zero``: background = 1 where every class map is 0 (reference); ``one_minus_sum``: 1 - sum of class maps (clamped)."""
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
    dtype: str = "fp32"
    """Precision of the network passes: ``fp32`` (the paper), ``bf16``, ``fp16`` (CUDA only) or
    ``auto`` (bf16 on a CPU with native bf16 or on CUDA, fp16 on a CUDA GPU without bf16, else
    fp32); see :mod:`pnpovss.precision`. GradCAM maps are formed in fp32 either way."""

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
        if self.background_rule not in ("zero", "one_minus_sum"):
            problems.append(f"background_rule must be 'zero' or 'one_minus_sum', got {self.background_rule!r}")
        if self.threshold_mode not in ("keep", "binary"):
            problems.append(f"threshold_mode must be 'keep' or 'binary', got {self.threshold_mode!r}")
        if self.crf_unary not in ("softmax", "probs"):
            problems.append(f"crf_unary must be 'softmax' or 'probs', got {self.crf_unary!r}")
        if self.blur_sigma <= 0:
            problems.append(f"blur_sigma must be > 0, got {self.blur_sigma}")
        if self.crf_iters < 1:
            problems.append(f"crf_iters must be >= 1, got {self.crf_iters}")
        if self.dtype not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(f"dtype must be 'auto', 'fp32', 'bf16' or 'fp16', got {self.dtype!r}")
        if problems:
            raise PnpOvssError("; ".join(problems))

    def heads_tuple(self) -> tuple[int, ...] | None:
        """The head spec as a tuple (None = all heads)."""
        if self.head is None:
            return None
        if isinstance(self.head, int):
            return (self.head,)
        return tuple(int(h) for h in self.head)

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


def load_preset(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a preset file: ``{"config": {...}, ...}`` (a tuning run's best) or a bare dict of options."""
    p = Path(path)
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


__all__ = ["PipelineConfig", "HeadSpec", "load_preset", "parse_assignments", "save_preset", "PRESET_FILENAME"]
