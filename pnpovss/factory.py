"""Loading, in the spirit of segment-anything's ``build_sam``: a model source resolved through the
backbone registry and the configuration settled by its precedence (defaults < the model
directory's ``pnpovss_preset.json`` < a preset file < explicit overrides), and the CLIP of the
presence stage. :meth:`pnpovss.Segmenter.from_pretrained` is the public face of :func:`load`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .backbones import Backbone, load_backbone, resolve_source
from .config import PRESET_FILENAME, PipelineConfig
from .devices import resolve_device
from .errors import PnpOvssError
from .execution import ExecutionOptions
from .precision import resolve_precision
from .preset_files import load_preset


def load(source: str, *, device: str | torch.device | None = "auto", preset: str | os.PathLike[str] | None = None,
         compile_vision: bool = False, execution: ExecutionOptions | None = None,
         **overrides: Any) -> tuple[Backbone, PipelineConfig]:
    """The backbone of ``source`` (hub id, local directory or ``toy``) on ``device`` and its
    configuration: defaults < the model directory's preset < ``preset`` < ``overrides``;
    ``execution`` (default :class:`~pnpovss.execution.ExecutionOptions`) with ``compile_vision``
    says how its passes run. Bad settings fail before the slow model load."""
    PipelineConfig().replace(**overrides)
    if not isinstance(compile_vision, bool):
        raise PnpOvssError(f"compile_vision must be True or False, got {compile_vision!r}")
    execution = execution or ExecutionOptions()
    if compile_vision:
        execution = execution.replace(compile_vision=True)
    user_preset = load_preset(preset) if preset is not None else {}
    dev = resolve_device(device)
    resolve_precision(overrides.get("dtype", user_preset.get("dtype", "fp32")), dev)  # e.g. fp16 on a CPU
    backbone = load_backbone(source, device=dev)
    if execution.compile_vision and not backbone.supports_compiled_vision:
        raise PnpOvssError(f"compile_vision is supported for BLIP models only, not {backbone.model_type}; "
                           "load it without compile_vision")
    backbone.execution = execution
    config = PipelineConfig().replace(**backbone.pipeline_defaults)
    model_preset = Path(resolve_source(source)) / PRESET_FILENAME
    if model_preset.is_file():
        config = config.replace(**load_preset(model_preset))
    return backbone, config.replace(**user_preset).replace(**overrides)


def load_presence_clip(config: PipelineConfig, device: torch.device) -> Any:
    """The :class:`pnpovss.reward.ClipScorer` of ``config.presence_clip_model`` with its template."""
    from .reward import ClipScorer, load_clip

    return ClipScorer(load_clip(config.presence_clip_model, device=device), template=config.presence_clip_template)


__all__ = ["load", "load_presence_clip"]
