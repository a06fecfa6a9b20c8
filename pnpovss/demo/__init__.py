"""``pnpovss demo``: a local web page to upload an image, type classes and steer the pipeline.

:mod:`.engine` holds the logic (caching of grid maps, outputs; no Gradio), :mod:`.answer` one answer
and its views; :mod:`.app` builds the
Gradio page around it. Gradio is an optional dependency (``pip install "pnpovss[demo]"``) imported
only when a page is built.
"""

from .app import build_app, serve
from .answer import DemoResult
from .engine import POSTPROCESS_FIELDS, DemoEngine, segment_kwargs

__all__ = ["POSTPROCESS_FIELDS", "DemoEngine", "DemoResult", "build_app", "segment_kwargs", "serve"]
