"""Default model names: the BLIP checkpoint of the pipeline and the CLIP of the tuning reward.

A module of its own, importing nothing, so that the command line's help text reads them (rather
than retyping them) without importing torch. :mod:`pnpovss.backbones` and :mod:`pnpovss.reward`
re-export them under their old names.
"""

DEFAULT_MODEL = "Salesforce/blip-itm-large-flickr"
DEFAULT_CLIP = "ViT-L-14-336"
DEFAULT_CLIP_PRETRAINED = "openai"

DEVICE_ORDER = ("cuda", "xpu", "mps", "cpu")
"""``--device auto``'s preference (:mod:`pnpovss.devices`): NVIDIA/AMD GPUs (ROCm builds report as
``cuda``), then Intel GPUs, then Apple silicon, then the CPU."""
