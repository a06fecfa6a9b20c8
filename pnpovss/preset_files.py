"""Presets: JSON files of pipeline overrides, named ones shipped with the package (``--preset NAME``,
:func:`list_presets`) and files such as a tuning run's ``best.json``; the lookup of a name or a path
(:func:`named_json`) serves the named search spaces too."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, PnpOvssError
from .fields import check_overrides
from .fileio import atomic_write_text

PRESETS_DIR = Path(__file__).parent / "presets"
"""Named presets shipped with the package (``--preset reference-head``), one flat JSON file each."""


def json_names(folder: Path) -> list[str]:
    """Names of the JSON files shipped in ``folder`` (named presets, named search spaces), sorted."""
    return sorted(p.stem for p in folder.glob("*.json"))


def named_json(name_or_path: str | os.PathLike[str], folder: Path, kind: str) -> Path:
    """A file path, or the file of a ``kind`` named in ``folder``. A file that exists wins over a name;
    a bare word that names nothing is an error listing the names."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    if str(name_or_path) in json_names(folder):
        return folder / f"{name_or_path}.json"
    if p.suffix != ".json" and p.parent == Path("."):
        raise PnpOvssError(f"{kind} {str(name_or_path)!r} is neither a file nor a named {kind}; named {kind}s: "
                           f"{', '.join(json_names(folder))}")
    return p


def read_json(path: Path, kind: str, missing: str = "", unreadable: str = "") -> Any:
    """The JSON value in ``path``; a missing or unreadable file is a one-line error, ``missing`` and
    ``unreadable`` saying what to do."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PnpOvssError(f"{kind} file {path} does not exist{missing}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PnpOvssError(f"{kind} file {path} is not readable JSON ({exc}){unreadable}") from None


def list_presets() -> list[str]:
    """Names of the presets shipped with the package, sorted."""
    return json_names(PRESETS_DIR)


def preset_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A preset file path, or the file of a named preset. A file that exists wins over a name."""
    return named_json(name_or_path, PRESETS_DIR, "preset")


def load_preset(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a preset: a named one (:func:`list_presets`) or a file, ``{"config": {...}, ...}`` (a
    tuning run's best) or a bare dict of options."""
    p = preset_path(path)
    data = read_json(p, "preset", "; pass the best.json/preset.json a tune run wrote",
                     "; regenerate it with 'pnpovss tune'")
    if not isinstance(data, dict):
        raise PnpOvssError(f"preset file {p} must hold a JSON object, got {type(data).__name__}")
    cfg = data.get("config", data)
    if not isinstance(cfg, dict):
        raise PnpOvssError(f"preset file {p}: 'config' must be a JSON object")
    try:
        return check_overrides(cfg)
    except ConfigError as exc:
        raise ConfigError(f"preset file {p}: {exc}") from None


def save_preset(path: str | os.PathLike[str], config: Any, **meta: Any) -> None:
    """Write a preset atomically; ``config`` is a :class:`~pnpovss.PipelineConfig` (anything with
    ``to_dict``) or a mapping of options; ``meta`` (model, reward, search trace…) is stored beside it."""
    cfg = dict(config) if isinstance(config, Mapping) else config.to_dict()
    atomic_write_text(Path(path), json.dumps({"config": cfg, **meta}, indent=2, sort_keys=True) + "\n")
