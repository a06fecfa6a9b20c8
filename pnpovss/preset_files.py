"""Presets: JSON files of pipeline overrides, named ones shipped with the package (``--preset NAME``,
:func:`list_presets`) and files such as a tuning run's ``best.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .errors import ConfigError, PnpOvssError
from .fields import check_overrides

if TYPE_CHECKING:
    from .config import PipelineConfig

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
    from .config import PipelineConfig
    from .fileio import atomic_write_text

    cfg = config.to_dict() if isinstance(config, PipelineConfig) else dict(config)
    atomic_write_text(Path(path), json.dumps({"config": cfg, **meta}, indent=2, sort_keys=True) + "\n")
