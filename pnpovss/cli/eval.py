"""``pnpovss eval``: mIoU of the pipeline on a dataset, through :func:`pnpovss.evaluate.evaluate`,
or on every dataset of a suite (``--suite``, :mod:`pnpovss.suite`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..fields import BACKGROUND_MODES
from ..datasets.base import CLASS_NAME_TABLES, DEFAULT_TABLE
from ..errors import PnpOvssError
from ..suite import SUITES
from . import options as opt
from .common import _fail_cleanly, announce, base_settings, load_for_dataset, parse_batch_size, protocol

if TYPE_CHECKING:
    from ..evaluate import EvalResult


def _check_json_target(json_out: str) -> None:
    """``--json`` must name a writable file; checked before the evaluation, not after it."""
    from ..distributed import env_is_main
    from ..outputs import check_writable_dir

    if env_is_main():  # only rank 0 writes the JSON
        check_writable_dir(Path(json_out).parent, f"--json {json_out}")
    if Path(json_out).is_dir():
        raise PnpOvssError(f"--json {json_out} is a directory; name a file")


def _report(result: EvalResult, json_out: str | None) -> None:
    """The IoU table (and the tag scores under ``--labels detect``) on stdout; ``--json``."""
    from ..fileio import atomic_write_text
    from ..metrics import iou_table

    click.echo(iou_table(result.summary))
    if "tags" in result.meta:
        t = result.meta["tags"]
        click.echo(f"tags (presence vs ground-truth labels): precision {t['precision']:.2f}  "
                   f"recall {t['recall']:.2f}  F1 {t['f1']:.2f}")
    if json_out:
        atomic_write_text(Path(json_out), json.dumps(result.to_json(), indent=2) + "\n")
        click.echo(f"wrote {json_out}", err=True)


def _suite(suite: str, root: str | None, out: str | None, strict: bool, class_names: str | None,
           images: int | None, labels: str, model: str | None, preset: str | None, assignments: tuple[str, ...],
           device: str, dtype: str | None, threads: int | None, compile_vision: bool, batch: int | None) -> None:
    """``--suite``: find the datasets (missing ones said, or --strict), load the model once, run
    :func:`pnpovss.suite.run_suite`, print the table."""
    from ..defaults import DEFAULT_MODEL
    from ..distributed import env_is_main, from_env, process_device, shutdown
    from ..outputs import check_writable_dir
    from ..pipeline import Segmenter
    from ..suite import find_datasets, run_suite

    if root is None:
        raise PnpOvssError(f"--suite {suite} needs --root DATA, the folder holding every dataset (mmsegmentation layout)")
    settings = base_settings(assignments, preset, dtype, threads)
    if "background" in settings:
        raise PnpOvssError("--set background: each dataset of a suite sets the background channel itself")
    datasets, missing = find_datasets(suite, root, class_names=class_names, strict=strict)
    if not datasets:
        raise PnpOvssError(f"--root {root}: none of the {suite} suite's datasets is there; first: {next(iter(missing.values()))}")
    out_dir = Path(out or f"pnpovss-suite-{suite}")
    if env_is_main():
        check_writable_dir(out_dir, f"--out {out_dir}")
    ctx = from_env(device)
    try:
        source = model or DEFAULT_MODEL
        if ctx.is_main:
            click.echo(f"loading {source} ...", err=True)
        seg = Segmenter.from_pretrained(source, device=process_device(device, ctx), preset=preset,
                                        compile_vision=compile_vision, **settings)
        ran = announce(seg, device) if ctx.is_main else {}
        out_dir.mkdir(parents=True, exist_ok=True)
        result = run_suite(seg, suite, datasets, missing, out_dir, images=images, labels=labels, dist=ctx,
                           batch_size=batch, ran=ran, echo=lambda line: click.echo(line, err=True))
        if ctx.is_main:
            click.echo(result.table())
            click.echo(f"wrote {out_dir / (suite + '.json')} and one JSON per dataset", err=True)
    finally:
        shutdown(ctx)


@click.command("eval")
@opt.eval_dataset_options
@click.option("--suite", type=click.Choice(sorted(SUITES)), default=None,
              help="Instead of --dataset: every dataset of the suite from one --root (standard: VOC21, Context60, "
                   "COCO-Object, VOC20, Context59, COCO-Stuff, Cityscapes, ADE20K, the peers' column order); one "
                   "JSON per dataset and the table in --out; an interrupted suite resumes dataset by dataset.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="--suite's output directory. [default: pnpovss-suite-SUITE]")
@click.option("--strict", is_flag=True, default=False,
              help="--suite: fail when a dataset is missing under --root (default: say so and leave it out).")
@click.option("--class-names", type=click.Choice(sorted(CLASS_NAME_TABLES)), default=None,
              help="Whose class names (and synonyms) the captions use: ours, or a peer's published table "
                   f"(sclip: SCLIP's configs/cls_*.txt). [default: {DEFAULT_TABLE}]")
@click.option("--seed", type=int, default=0, show_default=True, help="Toy-world seed (toyworld only).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write miou, per_class, the confusion matrix and the settings here.")
@click.option("--background-mode", type=click.Choice(BACKGROUND_MODES), default=None,
              help="dataset: a background channel exactly on datasets with a background class; reference: also "
                   "when a caption names fewer than 3 classes (the reference scripts); always: on every caption "
                   f"(the CVPR-era evaluation scripts). [default: {opt.default_of('background_mode')}]")
@opt.batch_size
@_fail_cleanly
def eval_cmd(dataset: str | None, root: str | None, images: int | None, labels: str | None, all_classes: bool,
             model: str | None, preset: str | None, assignments: tuple[str, ...], device: str, dtype: str | None,
             threads: int | None, compile_vision: bool, suite: str | None, out_dir: str | None, strict: bool,
             class_names: str | None, seed: int, json_out: str | None, background_mode: str | None,
             batch_size: str) -> None:
    """mIoU of the pipeline on a dataset (mmsegmentation IoUMetric semantics).

    Interrupted (Ctrl-C, a crash)? Rerun the same command: the images already scored are kept in
    the user cache ($PNPOVSS_CACHE/eval, else ~/.cache/pnpovss/eval) and are not scored again.

    Under `torchrun --nproc_per_node N -m pnpovss eval ...` the images are sharded over the N
    processes and the confusion matrices summed: the result equals a single-process run.

    --suite standard --root DATA: the eight datasets of the peers' tables from one data root, the
    table with their mean on stdout (see --suite).
    """
    from ..distributed import from_env, process_device, shutdown
    from ..evaluate import evaluate

    if (dataset is None) == (suite is None):
        raise PnpOvssError("give one dataset with --dataset NAME or several with --suite NAME (one of the two)")
    if suite is None and (out_dir or strict):
        raise PnpOvssError("--out and --strict belong to --suite; a single dataset's result goes to --json FILE")
    if json_out and suite:
        raise PnpOvssError("--suite writes its JSON files into --out DIR; leave out --json")
    batch = parse_batch_size(batch_size)
    if background_mode:
        assignments = (*assignments, f"background_mode={background_mode}")
    if suite:
        return _suite(suite, root, out_dir, strict, class_names, images, protocol(labels, all_classes), model, preset,
                      assignments, device, dtype, threads, compile_vision, batch)
    if json_out:
        _check_json_target(json_out)
    ctx = from_env(device)
    try:
        ds, indices, seg = load_for_dataset(dataset, root, seed, images, model, preset, process_device(device, ctx),
                                            threads, assignments, echo=ctx.is_main, dtype=dtype,
                                            compile_vision=compile_vision, class_names=class_names)
        ran = announce(seg, device) if ctx.is_main else {}
        result = evaluate(seg, ds, indices, labels=protocol(labels, all_classes), dist=ctx, resume=True,
                          batch_size=batch)
        result.meta.update(ran)
        if ctx.is_main:
            _report(result, json_out)
        if result.progress_file is not None:  # the result is out: the saved progress is spent
            result.progress_file.unlink(missing_ok=True)
    finally:
        shutdown(ctx)
