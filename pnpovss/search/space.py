"""Search spaces: which values of which pipeline fields a tuning run tries, read from JSON (a named
space shipped in ``pnpovss/search/spaces/``, any file, or a dict) and checked against the model and
the base configuration."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..backbones.base import Backbone
from ..config import PipelineConfig
from ..errors import ConfigError, PnpOvssError
from ..fields import fields_for_stage
from ..preset_files import json_names, named_json, read_json

SPACES_DIR = Path(__file__).parent / "spaces"
"""Named spaces shipped with the package (``--space layer_head``); ``search/spaces`` in the
repository points here, so the recorded runs' ``--space search/spaces/NAME.json`` still work."""
def map_params() -> tuple[str, ...]:
    """The fields of stages ``maps`` and ``dropout``: what the map cache can vary per trial."""
    return fields_for_stage("maps", "dropout")


def dropout_params() -> tuple[str, ...]:
    """The fields of stage ``dropout``: they only matter with DropOut passes."""
    return fields_for_stage("dropout")


MAP_PARAMS = map_params()
"""Parameters that change the class maps and that the map cache serves (stages ``maps``: every
layer and head and both saliency kinds come from its one forward/backward; ``dropout``: it runs
the passes). The caption and the encoding stay the base configuration's."""
MASK_PARAMS = ("threshold", "blur_sigma")
"""The post-processing fields the paper's reward masks read (``blur_sigma``, when searched,
replaces the 0.04): the reward's own choice, a subset of stage ``postprocess``."""
DROPOUT_PARAMS = dropout_params()
"""Parameters that only matter with DropOut passes (stage ``dropout``)."""


def canon(value: Any) -> Any:
    """JSON-normal form (tuples -> lists) so values compare the same before and after JSON."""
    return json.loads(json.dumps(value))


def list_spaces() -> list[str]:
    """Names of the search spaces shipped with the package, sorted."""
    return json_names(SPACES_DIR)


def read_space(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object of a named space or a space file (a file that exists wins over a name),
    ``_comment`` keys dropped."""
    path = named_json(name_or_path, SPACES_DIR, "space")
    return _entries(read_json(path, "space", f" (named spaces: {', '.join(list_spaces())})"))


def _entries(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping) or not raw:
        raise PnpOvssError("a search space is a JSON object mapping parameter names to candidate values")
    return {k: v for k, v in raw.items() if not k.startswith("_")}  # "_comment" keys


LAYER_HEAD_SPACE: dict[str, Any] = read_space("layer_head")
"""The earlier default: every layer, every single head and the mean of all heads (BridgeTower's
default and the toy model's are head means, and trial 0 must lie in the space), thresholds
0.05..0.5; single-pass trials, the preset keeps the base DropOut."""
DEFAULT_SPACE: dict[str, Any] = read_space("default")
"""Also the saliency kind and Salience DropOut (off, or T = 4 with k = 5 or 10), which the toy world
shows matter most (measured in ``search/runs/toyworld``). DropOut trials run the real passes
(about one pipeline run per image for each new combination)."""


@dataclass
class SearchSpace:
    """Ordered parameter -> list of candidate values. gradient-free-optimizers searches the
    *indices* of the lists, so any JSON value (a head set, ``null`` = mean of all heads) works."""

    values: dict[str, list]

    def gfo(self) -> dict[str, np.ndarray]:
        return {name: np.arange(len(vals)) for name, vals in self.values.items()}

    def decode(self, position: Mapping[str, Any]) -> dict[str, Any]:
        return {name: self.values[name][int(position[name])] for name in self.values}

    def encode(self, params: Mapping[str, Any]) -> dict[str, int]:
        pos = {}
        for name, vals in self.values.items():
            want = canon(params[name])
            if want not in vals:
                raise PnpOvssError(f"the starting value {name}={want!r} is not in the search space {vals}; add it "
                                   "to the space file (trial 0 is always the base configuration)")
            pos[name] = vals.index(want)
        return pos

    def params_of(self, config: PipelineConfig) -> dict[str, Any]:
        d = config.to_dict()
        return {name: canon(d[name]) for name in self.values}

    @property
    def size(self) -> int:
        return int(np.prod([len(v) for v in self.values.values()]))


def _expand(name: str, spec: Any, backbone: Backbone) -> list:
    if spec == "each":
        if name == "layer":
            return list(range(1, backbone.num_layers + 1))
        if name == "head":
            return list(range(backbone.num_heads))
        raise PnpOvssError(f"space: 'each' is only defined for layer and head, not {name}")
    if spec == "each+mean":
        if name == "head":
            return [*range(backbone.num_heads), None]
        raise PnpOvssError(f"space: 'each+mean' is only defined for head, not {name}")
    if isinstance(spec, dict):
        try:
            start, stop, step = spec["from"], spec["to"], spec.get("step", 1)
        except KeyError:
            raise PnpOvssError(f"space: {name} range needs 'from' and 'to' (and optionally 'step')") from None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, stop, step)):
            raise ConfigError(f"space: {name} range 'from', 'to' and 'step' must be numbers, got {spec!r}")
        if step <= 0 or stop < start:
            raise PnpOvssError(f"space: {name} range from {start} to {stop} step {step} is empty")
        count = int(np.floor((stop - start) / step + 1e-9)) + 1
        vals = [start + k * step for k in range(count)]
        return [round(v, 10) if isinstance(v, float) else v for v in vals]
    if isinstance(spec, list) and spec:
        return [canon(v) for v in spec]
    raise PnpOvssError(f"space: {name} must be a non-empty list, {{'from', 'to', 'step'}}, 'each' or (head) "
                       f"'each+mean', got {spec!r}")


def load_space(spec: str | os.PathLike[str] | Mapping[str, Any] | None, backbone: Backbone,
               base: PipelineConfig, searchable: Sequence[str] | None = None,
               default: Mapping[str, Any] = DEFAULT_SPACE) -> SearchSpace:
    """A named space (:func:`list_spaces`), a space file or a dict (None = ``default``), checked
    against the model and config. ``searchable``: the parameters the objective sees (default: the
    CLIP reward's)."""
    if spec is None:
        raw: Mapping[str, Any] = default
    elif isinstance(spec, Mapping):
        raw = spec
    else:
        raw = read_space(spec)
    raw = _entries(raw)
    known = set(searchable) if searchable is not None else set(map_params()) | set(MASK_PARAMS)
    values: dict[str, list] = {}
    for name, spec_value in raw.items():
        if name not in known:
            raise PnpOvssError(f"space: {name!r} cannot be searched (this objective does not see it); searchable: "
                               f"{', '.join(sorted(known))}")
        vals = _expand(name, spec_value, backbone)
        if len({json.dumps(v) for v in vals}) != len(vals):
            raise PnpOvssError(f"space: {name} lists a value twice")
        for v in vals:
            try:
                cfg = base.replace(**{name: v})
            except ConfigError as exc:
                raise ConfigError(f"space: {exc}") from None
            backbone.check_config(cfg)
        if spec is None:  # the default space always holds the base configuration (trial 0)
            own = canon(base.to_dict()[name])
            vals = vals if own in vals else [*vals, own]
        values[name] = vals
    orphans = [n for n in dropout_params() if n in values and n != "drop_iters"]
    if orphans and "drop_iters" not in values:
        raise PnpOvssError(f"space: {', '.join(orphans)} only matter with DropOut passes, but trials run single-pass "
                           "maps unless drop_iters is searched too; add drop_iters to the space")
    return SearchSpace(values)
