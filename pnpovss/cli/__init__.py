"""``pnpovss`` command line. Every user error is one line on stderr and a non-zero exit.

One module per command (:mod:`.segment`, :mod:`.eval`, :mod:`.tune`, :mod:`.demo`); the options
several commands share are declared once in :mod:`.options`, the helpers they share are in
:mod:`.common`. The names below stay importable from ``pnpovss.cli`` as before the split.
"""

from __future__ import annotations

import click

from . import demo, eval, segment, tune
from .common import _fail_cleanly, announce, expand_inputs, parse_batch_size  # noqa: F401  (importable as before)
from .segment import parse_head


@click.group()
@click.version_option(package_name="pnpovss")
def main() -> None:
    """Training-free open-vocabulary semantic segmentation (PnP-OVSS)."""


main.add_command(segment.segment)
main.add_command(eval.eval_cmd)
main.add_command(tune.tune)
main.add_command(demo.demo)

__all__ = ["main", "announce", "expand_inputs", "parse_batch_size", "parse_head"]
