"""``pnpovss eval``: mIoU of the pipeline on a dataset, through :func:`pnpovss.evaluate.evaluate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..config import BACKGROUND_MODES
from ..errors import PnpOvssError
from . import options as opt
from .common import _fail_cleanly, announce, load_for_dataset, parse_batch_size, protocol

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


@click.command("eval")
@opt.dataset_options
@click.option("--seed", type=int, default=0, show_default=True, help="Toy-world seed (toyworld only).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write miou, per_class, the confusion matrix and the settings here.")
@click.option("--background-mode", type=click.Choice(BACKGROUND_MODES), default=None,
              help="dataset: a background channel exactly on datasets with a background class; reference: also "
                   "when a caption names fewer than 3 classes (the reference scripts); always: on every caption "
                   f"(the CVPR-era evaluation scripts). [default: {opt.default_of('background_mode')}]")
@opt.batch_size
@_fail_cleanly
def eval_cmd(dataset: str, root: str | None, images: int | None, labels: str | None, all_classes: bool,
             model: str | None, preset: str | None, assignments: tuple[str, ...], device: str, dtype: str | None,
             threads: int | None, compile_vision: bool, seed: int, json_out: str | None, background_mode: str | None,
             batch_size: str) -> None:
    """mIoU of the pipeline on a dataset (mmsegmentation IoUMetric semantics).

    Interrupted (Ctrl-C, a crash)? Rerun the same command: the images already scored are kept in
    the user cache ($PNPOVSS_CACHE/eval, else ~/.cache/pnpovss/eval) and are not scored again.

    Under `torchrun --nproc_per_node N -m pnpovss eval ...` the images are sharded over the N
    processes and the confusion matrices summed: the result equals a single-process run.
    """
    from ..distributed import from_env, process_device, shutdown
    from ..evaluate import evaluate

    if json_out:
        _check_json_target(json_out)
    batch = parse_batch_size(batch_size)
    ctx = from_env(device)
    try:
        if background_mode:
            assignments = (*assignments, f"background_mode={background_mode}")
        ds, indices, seg = load_for_dataset(dataset, root, seed, images, model, preset, process_device(device, ctx),
                                            threads, assignments, echo=ctx.is_main, dtype=dtype,
                                            compile_vision=compile_vision)
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
