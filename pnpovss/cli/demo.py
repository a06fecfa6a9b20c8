"""``pnpovss demo``: the local web page of :mod:`pnpovss.demo`."""

from __future__ import annotations

import click

from . import options as opt
from .common import _fail_cleanly, announce


@click.command()
@opt.model
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on (0.0.0.0: the whole network).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to serve on.")
@opt.device()
@opt.dtype
@_fail_cleanly
def demo(model: str | None, host: str, port: int, device: str, dtype: str | None) -> None:
    """Serve a local web page: upload an image, type classes, see and steer the segmentation.

    Needs the demo extra (pip install "pnpovss[demo]"). The page also offers the endpoint
    api_name="segment" (image, "class,class") -> (overlay, JSON) for gradio_client.
    """
    from ..defaults import DEFAULT_MODEL
    from ..demo import serve

    source = model or DEFAULT_MODEL
    click.echo(f"loading {source} ...", err=True)
    serve(source, host=host, port=port, device=device, dtype=dtype, on_load=lambda seg: announce(seg, device))
