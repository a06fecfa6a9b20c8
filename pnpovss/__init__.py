"""pnpovss: training-free open-vocabulary semantic segmentation with PnP-OVSS (Luo et al., CVPR 2024).

>>> from pnpovss import Segmenter
>>> seg = Segmenter.from_pretrained("toy")                      # doctest: +SKIP
>>> res = seg.segment("image.png", ["circle", "star"])          # doctest: +SKIP
"""

from .backbones import BACKBONES, DEFAULT_MODEL, Backbone, load_backbone
from .config import PipelineConfig, list_presets, load_preset, save_preset
from .errors import ImageLoadError, ModelLoadError, PnpOvssError
from .imageio import load_image
from .pipeline import SegmentationResult, Segmenter
from .datasets import DATASETS, load_dataset

__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "DATASETS",
    "DEFAULT_MODEL",
    "Backbone",
    "ImageLoadError",
    "ModelLoadError",
    "PipelineConfig",
    "PnpOvssError",
    "SegmentationResult",
    "Segmenter",
    "load_backbone",
    "load_dataset",
    "load_image",
    "list_presets",
    "load_preset",
    "save_preset",
]
