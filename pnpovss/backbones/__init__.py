"""Backbone registry and model-source resolution.

``BACKBONES`` maps a Hugging Face ``model_type`` to a builder; a source is a hub id, a local
directory written by ``save_pretrained``, or an alias such as ``toy`` (the offline model shipped
inside the package). The same ``from_pretrained`` path serves all three.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch

from ..defaults import DEFAULT_MODEL, DEFAULT_TOY_MODEL, TOY_MODELS
from ..errors import ModelLoadError
from .base import Backbone, TextBatch, caption_for

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
ALIASES: dict[str, str] = {
    "toy": str(_PACKAGE_DIR / "toyworld" / "weights" / "blip"),
    "toy-shapes": str(_PACKAGE_DIR / "toyworld" / "weights" / "blip-shapes"),
    "toy-bridgetower": str(_PACKAGE_DIR / "toyworld" / "weights" / "bridgetower"),
    "blip-large-flickr": "Salesforce/blip-itm-large-flickr",
    "blip-large-coco": "Salesforce/blip-itm-large-coco",
    "bridgetower-large": "BridgeTower/bridgetower-large-itm-mlm-itc",
}


def _build_blip(source: str, device: str | torch.device) -> Backbone:
    from .blip import BlipBackbone

    return BlipBackbone.from_pretrained(source, device=device)


def _build_bridgetower(source: str, device: str | torch.device) -> Backbone:
    from .bridgetower import BridgeTowerBackbone  # type: ignore[import-not-found]

    return BridgeTowerBackbone.from_pretrained(source, device=device)


BACKBONES: dict[str, Callable[[str, str | torch.device], Backbone]] = {
    "blip": _build_blip,
    "bridgetower": _build_bridgetower,
}


def resolve_source(source: str) -> str:
    """Alias -> path/id; an existing directory stays a path; anything else is taken as a hub id."""
    if source in TOY_MODELS and not os.path.isdir(ALIASES[source]):
        raise ModelLoadError(f"the toy model {source!r} is not in this installation ({ALIASES[source]} is missing); "
                             "pnpovss.toyworld's docstring gives the command that trains it")
    source = ALIASES.get(source, source)
    if os.path.isdir(source):
        return source
    # Hub ids are "name" or "owner/name"; anything else that is not a directory was meant as a path.
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source:
        raise ModelLoadError(f"model directory {source!r} does not exist; pass a directory written by save_pretrained, a hub id, or 'toy'")
    return source


def source_label(source: str) -> str:
    """How records name a model: the alias when ``source`` is the local directory an alias points to
    (the toy model inside the package sits at a different absolute path in every checkout, so a
    recorded run must not name that path), else ``source`` itself."""
    if os.path.isdir(source):
        for name, target in ALIASES.items():
            if os.path.isdir(target) and os.path.samefile(source, target):
                return name
    return source


def model_type_of(source: str) -> str:
    """Read ``model_type`` from a local config.json, or from the hub config of an id."""
    if os.path.isdir(source):
        cfg_path = Path(source) / "config.json"
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"model directory {source!r} has no readable config.json ({exc.__class__.__name__}); "
                                 "save the model there with save_pretrained") from None
        if not isinstance(cfg, dict):
            raise ModelLoadError(f"{cfg_path} holds a JSON {type(cfg).__name__}, not the object save_pretrained writes; "
                                 "save the model there again")
        return str(cfg.get("model_type", ""))
    from huggingface_hub.utils import logging as hub_logging

    level = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()  # its retry warnings would bury our one-line error
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(source).model_type
    except Exception as exc:  # network errors, 404s, offline mode: all mean "cannot get it"
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise ModelLoadError(
            f"could not load model {source!r}: it is not a local directory and fetching it from the "
            f"Hugging Face hub failed ({reason}); check the id and your network, or pass a local "
            "directory saved with save_pretrained, or --model toy"
        ) from None
    finally:
        hub_logging.set_verbosity(level)


def load_backbone(source: str = DEFAULT_MODEL, device: str | torch.device = "cpu") -> Backbone:
    """Build the adapter for ``source`` (hub id, local directory or alias) on ``device``."""
    resolved = resolve_source(source)
    model_type = model_type_of(resolved)
    try:
        builder = BACKBONES[model_type]
    except KeyError:
        raise ModelLoadError(
            f"model {source!r} is a {model_type or 'unknown'!r} model; supported: {', '.join(sorted(BACKBONES))}"
        ) from None
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # our CLI prints its own one-line status
    try:
        return builder(resolved, device)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise ModelLoadError(f"could not load model {source!r} ({reason})") from None
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":
            raise
        weights = sorted(p.name for p in Path(resolved).glob("*.safetensors")) if os.path.isdir(resolved) else []
        where = f"{Path(resolved) / weights[0]}" if len(weights) == 1 else f"the .safetensors weights of {source!r}"
        raise ModelLoadError(f"{where} is truncated or corrupt ({str(exc).splitlines()[0][:160]}); "
                             "download or save the model again") from None
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


__all__ = ["Backbone", "TextBatch", "BACKBONES", "ALIASES", "DEFAULT_MODEL", "DEFAULT_TOY_MODEL", "TOY_MODELS", "load_backbone", "resolve_source",
           "source_label", "caption_for"]
