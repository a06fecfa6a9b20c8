"""Options that several commands share, each declared once with one help text.

Defaults shown in the help come from ``PipelineConfig()``, :mod:`pnpovss.defaults` and the
registries, never retyped; an option the user leaves unset is ``None`` so that the library's
default (or the preset's value) applies.
"""

from __future__ import annotations

from typing import Callable

import click

from ..config import PipelineConfig
from ..preset_files import list_presets
from ..datasets import DATASET_ALIASES, DATASETS, dataset_names
from ..datasets.toyworld import DEFAULT_IMAGES
from ..defaults import DEFAULT_MODEL, DEFAULT_TOY_MODEL, DEVICE_ORDER, TOY_MODELS

DEFAULTS = PipelineConfig()
"""The pipeline's defaults, for help text."""


def default_of(name: str) -> str:
    """A ``PipelineConfig`` field's default as help text shows it (``on``/``off`` for flags, a
    comma list of heads, ``all`` for the mean of every head)."""
    value = getattr(DEFAULTS, name)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "all" if value is None and name == "head" else str(value)


def options(*decorators: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """Several ``click.option`` decorators as one, listed in the order they appear in ``--help``."""

    def apply(fn: Callable) -> Callable:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def _dataset_help() -> str:
    """The registry's names, each alias beside the name it stands for: ``voc (=voc21), voc20, ...``."""
    alias_of = {target: alias for alias, target in DATASET_ALIASES.items()}
    return ", ".join(f"{alias_of[n]} (={n})" if n in alias_of else n for n in DATASETS) + "."


model = click.option("--model", default=None,
                     help=f"Hub id, local directory, or a toy model ({', '.join(TOY_MODELS)}). [default: {DEFAULT_MODEL}; "
                          "eval/tune on " + ", ".join(f"{w}: {m}" for w, m in DEFAULT_TOY_MODEL.items()) + "]")
preset = click.option("--preset", type=click.Path(dir_okay=False), default=None,
                      help=f"Preset JSON (e.g. a tune run's best.json) or a named preset: {', '.join(list_presets())}.")
assignments = click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                           help="Any pipeline option by name, e.g. --set crf_unary=probs --set blur_sigma=0.03 "
                                "(repeatable; applied over --preset).")
dtype = click.option("--dtype", default=None,
                     help="Precision: auto, fp32, bf16 or fp16 (CUDA); see docs/how-to/devices.md. "
                          f"[default: {default_of('dtype')}]")
batch_size = click.option("--batch-size", default="auto", show_default=True,
                          help="Images per forward pass, or auto: sized to the memory the first image takes. "
                               "Results do not depend on it.")


def device(default: str = "auto") -> Callable[[Callable], Callable]:
    """``--device`` (``auto`` on every command)."""
    return click.option("--device", default=default, show_default=True,
                        help=f"auto (the first available of {', '.join(DEVICE_ORDER)}), or one of them, e.g. cpu, cuda, "
                             "cuda:N, mps; a device this machine lacks is an error naming those it has.")


def _dataset(required: bool) -> Callable[[Callable], Callable]:
    return click.option("--dataset", required=required, type=click.Choice(sorted(dataset_names()), case_sensitive=False),
                        help=_dataset_help() if required else f"{_dataset_help()} (Or --suite.)")


_dataset_rest = (
    click.option("--root", type=click.Path(file_okay=False), default=None,
                 help="Dataset directory (mmsegmentation layout, e.g. data/VOCdevkit/VOC2012) or a parent of it."),
    click.option("--images", type=click.IntRange(min=1), default=None,
                 help=f"Use the first N images. [default: all; toyworld: {DEFAULT_IMAGES}]"),
    click.option("--labels", "labels", type=click.Choice(["gt", "all", "detect", "reference"]), default=None,
                 help="Which classes each caption holds: gt = the image's ground-truth labels; reference = every "
                      "dataset class, the ground-truth classes' maps kept (the CVPR-era scripts; cut at 500 "
                      "tokens as theirs); all = every dataset class; detect = the presence stage picks them "
                      "from the whole vocabulary (no labels at test time). [default: the preset's eval_labels, "
                      "else gt; tune takes reference from a preset or --set eval_labels=reference]"),
    click.option("--all-classes", is_flag=True, default=False, help="Same as --labels all."),
    model, preset, assignments, device(), dtype,
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help="torch CPU threads per process (1 is much faster when other jobs share the cores). "
                      "[default: torch's]"),
    click.option("--compile-vision", is_flag=True, default=False,
                 help="Run BLIP's vision encoder through torch.compile: tens of seconds to compile once per "
                      "process; in bf16 on a CPU only a little faster than without it; see docs/results/precision.md."),
)
dataset_options = options(_dataset(True), *_dataset_rest)
"""Options shared by ``eval`` and ``tune``: which images, which model, which base settings."""
eval_dataset_options = options(_dataset(False), *_dataset_rest)
"""The same for ``eval``, whose ``--suite`` names several datasets instead of one ``--dataset``."""

__all__ = ["DEFAULTS", "assignments", "batch_size", "dataset_options", "default_of", "device", "dtype",
           "eval_dataset_options", "model", "options", "preset"]
