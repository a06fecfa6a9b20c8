"""Compatibility names: :mod:`pnpovss.fileio` (reading images, atomic writes) and
:mod:`pnpovss.visualize` (palette, label PNG, overlay) were split out of this module. New code
imports from those two; this module only re-exports them for callers written before the split."""

from .fileio import (  # noqa: F401
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    ImageInput,
    array_to_rgb,
    atomic_save_image,
    atomic_write_bytes,
    atomic_write_text,
    load_image,
    pil_to_rgb,
    tensor_to_rgb,
)
from .visualize import LEGEND_FONTS, label_png, legend_font, overlay_image, palette  # noqa: F401
