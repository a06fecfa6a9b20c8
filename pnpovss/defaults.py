"""Default model names: the BLIP checkpoint of the pipeline and the CLIP of the tuning reward.

A module of its own, importing nothing, so that the command line's help text reads them (rather
than retyping them) without importing torch. :mod:`pnpovss.backbones` and :mod:`pnpovss.reward`
re-export them under their old names.
"""

DEFAULT_MODEL = "Salesforce/blip-itm-large-flickr"
DEFAULT_CLIP = "ViT-L-14-336"
DEFAULT_CLIP_PRETRAINED = "openai"

TOY_MODELS: dict[str, str] = {"toy": "toyworld", "toy-shapes": "toyworld-shapes", "toy-bridgetower": "toyworld-shapes"}
"""The offline toy models shipped inside the package (aliases of :mod:`pnpovss.backbones`) -> the toy
world each was trained on (its ``--vocab`` when ``segment`` is given no classes)."""
DEFAULT_TOY_MODEL: dict[str, str] = {"toyworld": "toy", "toyworld-shapes": "toy-shapes"}
"""The model ``eval``/``tune`` use on a toy-world dataset when ``--model`` is not given."""

DEVICE_ORDER = ("cuda", "xpu", "mps", "cpu")
"""``--device auto``'s preference (:mod:`pnpovss.devices`): NVIDIA/AMD GPUs (ROCm builds report as
``cuda``), then Intel GPUs, then Apple silicon, then the CPU."""
