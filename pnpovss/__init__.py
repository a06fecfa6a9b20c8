"""pnpovss: training-free open-vocabulary semantic segmentation with PnP-OVSS (Luo et al., CVPR 2024).

>>> from pnpovss import Segmenter
>>> seg = Segmenter.from_pretrained("toy")                      # doctest: +SKIP
>>> res = seg.segment("image.png", ["circle", "star"])          # doctest: +SKIP

The names below are imported on first use (PEP 562), so ``pnpovss --help`` and the error paths
of the CLI do not pay for importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "BACKBONES": "backbones",
    "DEFAULT_MODEL": "backbones",
    "Backbone": "backbones",
    "load_backbone": "backbones",
    "PipelineConfig": "config",
    "load_preset": "preset_files",
    "list_presets": "preset_files",
    "save_preset": "preset_files",
    "ConfigError": "errors",
    "ImageLoadError": "errors",
    "ModelLoadError": "errors",
    "PnpOvssError": "errors",
    "load_image": "fileio",
    "SegmentationResult": "result",
    "Segmenter": "pipeline",
    "Presence": "presence",
    "DATASETS": "datasets",
    "load_dataset": "datasets",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
