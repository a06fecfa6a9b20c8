"""``pnpovss`` command line. Every user error is one line on stderr and a non-zero exit.

One module per command (:mod:`.segment`, :mod:`.eval`, :mod:`.tune`, :mod:`.demo`); the options
several commands share are declared once in :mod:`.options`, the helpers they share are in
:mod:`.common`.
"""

from __future__ import annotations

import os
import sys

import click

from . import demo, eval, segment, tune
from .common import INTERRUPTED, announce, expand_inputs, parse_batch_size
from .segment import parse_head


@click.group()
@click.version_option(package_name="pnpovss")
def main() -> None:
    """Training-free open-vocabulary semantic segmentation (PnP-OVSS)."""


main.add_command(segment.segment)
main.add_command(eval.eval_cmd)
main.add_command(tune.tune)
main.add_command(demo.demo)



def run() -> None:
    """The console entry (``pnpovss``, ``python -m pnpovss``): :func:`main`, and a run stopped by
    Ctrl-C leaves at once. Nothing is left to save then (every result is renamed into place whole),
    and the interpreter's teardown (torch's threads, the model, worker bookkeeping) took seconds on
    a loaded machine. Only here, in the process's own entry: ``main`` called in-process (click's
    test runner, a program embedding the CLI) just raises ``SystemExit(130)``."""
    try:
        main()
    except SystemExit as exc:
        if exc.code == INTERRUPTED:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(INTERRUPTED)
        raise


__all__ = ["main", "run", "announce", "expand_inputs", "parse_batch_size", "parse_head"]
