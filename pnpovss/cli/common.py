"""Pieces the commands share: library errors as one line, input expansion, ``--batch-size``, the
device notice, and loading a dataset with its segmenter for ``eval`` and ``tune``."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ..errors import PnpOvssError
from ..fileio import IMAGE_SUFFIXES


INTERRUPTED = 130
"""Exit status of a run stopped by Ctrl-C."""


def _fail_cleanly(fn: Callable) -> Callable:
    """Turn library errors into click's one-line ``Error: ...`` (exit 1) and Ctrl-C into exit 130
    (at once: see the comment below)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PnpOvssError as exc:
            if exc.reported_by and os.environ.get(exc.reported_by, "0") != "0":
                sys.exit(1)  # under torchrun every process raised it alike: process 0 prints it
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: rerun the same command to continue where it stopped", err=True)
            sys.exit(INTERRUPTED)  # the console entry (pnpovss.cli.run) then leaves at once

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def expand_inputs(items: tuple[str, ...]) -> list[Path]:
    """Files, directories (their image files, sorted) and quoted globs -> image paths. An existing
    path is a path even if it holds glob characters (``scan[1].png``); labels/overlay PNGs that a
    run wrote (their NAME.json beside them) are never taken as inputs from a directory or glob."""
    from ..outputs import check_name_length, is_own_output

    paths: list[Path] = []
    for item in items:
        if Path(item).is_dir():
            found = sorted(p for p in Path(item).iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not is_own_output(p))
            if not found:
                raise PnpOvssError(f"{item}: directory holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif not Path(item).exists() and any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item))
            if not matches:
                raise PnpOvssError(f"{item}: the pattern matches no file")
            paths.extend(Path(m) for m in matches if not Path(m).is_dir() and not is_own_output(Path(m)))
        else:
            paths.append(Path(item))
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems and stems[p.stem] != p:
            raise PnpOvssError(f"{stems[p.stem]} and {p} would write the same output files; rename one or run them separately")
        stems[p.stem] = p
        check_name_length(p.stem)
    return paths


def parse_batch_size(value: str) -> int | None:
    """``--batch-size``: ``auto`` -> None (sized to memory), else a positive integer."""
    if value.strip().lower() == "auto":
        return None
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise PnpOvssError(f"--batch-size takes a positive integer or 'auto', got {value!r}")
    return size


def announce(seg: Any, device: str, quiet: bool = False) -> dict[str, str]:
    """Say once, on stderr, which device and precision run (``auto`` resolved); returns both for
    the output JSON."""
    precision = seg.precision()
    dev = str(seg.backbone.device)
    if not quiet:
        click.echo(f"device: {dev}{' (auto)' if device == 'auto' else ''}, dtype: {precision.describe()}", err=True)
    return {"device": dev, "dtype": precision.name}


def protocol(labels: str | None, all_classes: bool) -> str | None:
    """``--labels`` with ``--all-classes`` as its older alias; None when neither is given (the
    configuration's ``eval_labels`` decides)."""
    if all_classes and labels not in (None, "all"):
        raise PnpOvssError(f"--all-classes means --labels all; it contradicts --labels {labels}")
    if labels == "reference" and click.get_current_context().info_name == "tune":
        raise PnpOvssError("tune takes the reference protocol from its configuration: --set eval_labels=reference "
                           "or a reference-cvpr-* preset")
    from ..evaluate import label_protocol

    return label_protocol(labels, all_classes) if labels or all_classes else None


def base_settings(assignments: tuple[str, ...], preset: str | None, dtype: str | None,
                  threads: int | None) -> dict[str, Any]:
    """``--set`` and ``--dtype`` as pipeline overrides, the preset checked and the threads set,
    before any dataset or model loads."""
    import torch

    from ..fields import parse_assignments
    from ..preset_files import load_preset

    settings = parse_assignments(assignments)
    if preset:
        load_preset(preset)  # a bad preset fails before the model loads
    if dtype is not None:
        settings["dtype"] = dtype
    if threads:
        torch.set_num_threads(threads)
    return settings


def load_for_dataset(dataset: str, root: str | None, world_seed: int, images: int | None, model: str | None,
                     preset: str | None, device: str, threads: int | None, assignments: tuple[str, ...] = (),
                     echo: bool = True, dtype: str | None = None, compile_vision: bool = False,
                     class_names: str | None = None):
    """(dataset, indices, segmenter) for eval/tune; a toy world defaults to its toy model."""
    from ..datasets import load_dataset, subset_indices
    from ..backbones import DEFAULT_TOY_MODEL
    from ..defaults import DEFAULT_MODEL
    from ..pipeline import Segmenter

    settings = base_settings(assignments, preset, dtype, threads)
    ds = load_dataset(dataset, root, seed=world_seed, images=images, class_names=class_names)
    indices = subset_indices(len(ds), images)
    source = model or DEFAULT_TOY_MODEL.get(ds.name, DEFAULT_MODEL)
    if echo:
        click.echo(f"loading {source} ...", err=True)
    try:
        settings = ds.pipeline_settings(settings)
    except PnpOvssError as exc:
        raise PnpOvssError(f"--set {exc}") from None
    seg = Segmenter.from_pretrained(source, device=device, preset=preset, compile_vision=compile_vision, **settings)
    return ds, indices, seg


__all__ = ["announce", "base_settings", "expand_inputs", "load_for_dataset", "parse_batch_size", "protocol"]
