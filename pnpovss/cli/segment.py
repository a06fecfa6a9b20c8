"""``pnpovss segment``: the candidate classes and the pipeline options read from the command line,
then :func:`pnpovss.runner.run` over the images (under torchrun, over this process's share)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, PnpOvssError, raised_alike
from ..fields import FIELDS
from ..fileio import MAX_PIXELS
from . import options as opt
from .common import _fail_cleanly, announce, expand_inputs, parse_batch_size


def parse_head(value: str | None) -> int | tuple[int, ...] | None | str:
    """``"9"`` -> 9, ``"3,9"`` -> (3, 9), ``"all"`` -> None (read by the ``head`` field's spec);
    unset -> sentinel (keep preset)."""
    if value is None:
        return "unset"
    try:
        return FIELDS["head"].parse("head", value)
    except ConfigError:
        raise ConfigError(f"--head takes an index, a comma list of indices or 'all', got {value!r}") from None


_pipeline_options = opt.options(
    click.option("--image-size", type=int, default=None,
                 help="Square input size; default: the checkpoint's own (384 for BLIP-large)."),
    click.option("--layer", type=int, default=None,
                 help=f"Cross-attention layer, 1-based. [default: {opt.default_of('layer')}]"),
    click.option("--head", default=None, help="Head index (0-based), comma list to average, or 'all'. "
                                              f"[default: {opt.default_of('head')}]"),
    click.option("--drop-iters", type=int, default=None,
                 help=f"Salience DropOut passes (1 = none). [default: {opt.default_of('drop_iters')}]"),
    click.option("--drop-k", type=int, default=None,
                 help=f"Patches dropped per pass. [default: {opt.default_of('drop_k')}]"),
    click.option("--halving", is_flag=True, default=None,
                 help="Drop half of the remaining patches per pass instead of --drop-k."),
    click.option("--threshold", type=float, default=None,
                 help=f"Map threshold after min-max. [default: {opt.default_of('threshold')}]"),
    click.option("--background/--no-background", default=None,
                 help=f"Add a background label. [default: {opt.default_of('background')}]"),
    click.option("--no-crf", is_flag=True, default=False, help="Plain argmax instead of the dense CRF."),
)
"""The pipeline fields ``segment`` names as options of their own (any field: ``--set``)."""


def _named_overrides(image_size: int | None, layer: int | None, head: str | None, drop_iters: int | None,
                     drop_k: int | None, halving: bool | None, threshold: float | None, background: bool | None,
                     no_crf: bool, dtype: str | None) -> dict[str, Any]:
    """The pipeline options given by name (unset ones left to the preset and the defaults)."""
    given = dict(image_size=image_size, layer=layer, drop_iters=drop_iters, drop_k=drop_k,
                 halving=halving, threshold=threshold, background=background, head=parse_head(head), dtype=dtype)
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None and v != "unset"}
    if head is not None and given["head"] is None:
        overrides["head"] = None  # "all": average every head
    if no_crf:
        overrides["crf"] = False
    return overrides


def _candidates(classes: str | None, vocab: str | None, model: str | None = None) -> list[str]:
    """``--classes`` or ``--vocab`` (exactly one) -> the candidate class names. The shipped toy
    model knows only its world's six shapes, so with ``--model toy`` they are the default."""
    from ..backbones import TOY_MODELS
    from ..pipeline import parse_classes

    if classes is None and vocab is None and model in TOY_MODELS:
        vocab = TOY_MODELS[model]
    if (classes is None) == (vocab is None):
        raise PnpOvssError("give the candidate classes with --classes \"a,b,c\" or --vocab NAME|FILE (one of the two)")
    if vocab is not None:
        from ..datasets import load_vocabulary

        return parse_classes(load_vocabulary(vocab))
    return parse_classes(classes)


def _run(job: Any, model: str | None, preset: str | None, clip_name: str | None, device: str,
         overrides: dict[str, Any]) -> None:
    """Check the inputs and --out, load the model (once per process) and segment this process's share."""
    from .. import runner
    from ..defaults import DEFAULT_MODEL
    from ..distributed import from_env, process_device, shutdown
    from ..outputs import remove_stale_temps
    from ..devices import resolve_device
    from ..pipeline import Segmenter

    try:
        resolve_device(device)  # a device this machine lacks fails before anything is read or started
    except PnpOvssError as exc:  # alike on every process of a machine: its local process 0 says so
        raise raised_alike(exc, "LOCAL_RANK") from None
    ctx = from_env(device)
    try:
        runner.check_same_inputs(job.paths, ctx)
        kept = {} if job.skip_bad else runner.check_images(job, ctx)  # bad input fails before the model loads
        runner.check_out_dir(job.out, ctx)
        runner.check_coco_target(job, ctx)
        source = model or DEFAULT_MODEL
        if ctx.is_main:
            click.echo(f"loading {source} ...", err=True)
        if clip_name is not None:
            overrides = {**overrides, "presence_clip_model": clip_name}
        seg = Segmenter.from_pretrained(source, device=process_device(device, ctx), preset=preset, **overrides)
        ran = announce(seg, device, quiet=not ctx.is_main)
        remove_stale_temps(job.out)
        summary = runner.run(seg, job, ctx, model=source, ran=ran, kept=kept,
                             echo=lambda line: click.echo(line, err=True))
        if ctx.is_main:
            click.echo(f"{summary.line()}\nwrote {3 * summary.segmented} files to {job.out}", err=True)
            if job.coco is not None:
                click.echo(f"wrote COCO annotations of the run to {job.coco}", err=True)
        if summary.skipped and not summary.segmented and not summary.already_done:  # --skip-bad, all bad
            raise raised_alike(PnpOvssError(f"no image could be segmented: all {len(summary.skipped)} were unreadable "
                                            f"(reasons in {job.out / runner.SUMMARY_NAME})"))
    finally:
        shutdown(ctx)


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--classes", default=None,
              help='Comma-separated candidate classes, e.g. "cat,grass,sky"; those the model finds in the image '
                   'are segmented (--keep-all: every one).')
@click.option("--vocab", default=None, metavar="NAME|FILE",
              help="Candidate classes from a dataset's vocabulary (voc, context, coco-object, coco-stuff, ade20k, "
                   "toyworld, ...) or a class-name file (one class per line), instead of --classes. "
                   "[default with --model toy: toyworld]")
@click.option("--keep-all", is_flag=True, default=False,
              help="Put every given class into the caption (the paper's protocol: the classes are known to be there).")
@click.option("--clip", "clip_name", default=None,
              help="CLIP for the presence stage's second opinion (presence_clip_ratio) and recurrent check "
                   "(presence_rounds): open_clip name, local directory, or 'toy' (sets presence_clip_model).")
@click.option("--out", "out_dir", default="pnpovss-out", show_default=True, type=click.Path(file_okay=False),
              help="Output directory.")
@opt.model
@opt.preset
@_pipeline_options
@opt.assignments
@opt.device()
@opt.dtype
@opt.batch_size
@click.option("--overwrite", is_flag=True, default=False,
              help="Redo images whose outputs already exist with the same settings (they are skipped otherwise).")
@click.option("--max-pixels", type=click.IntRange(min=0), default=None,
              help="Refuse images with more pixels (Pillow's decompression-bomb guard); 0 = no limit. "
                   f"[default: {MAX_PIXELS}]")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes decoding the next images and post-processing (blur, CRF, PNG) finished ones while the "
                   "model runs; 0: all in order in this process. Same files either way.")
@click.option("--skip-bad", is_flag=True, default=False,
              help="Skip unreadable images (listed with the reason in OUT/pnpovss_run.json) instead of stopping.")
@click.option("--coco", "coco", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write one COCO annotation file for the whole run (RLE masks, one annotation per image "
                   "and class; categories: the candidates), at the end, complete on a resumed run too. Needs the "
                   "optional 'interop' extra.")
@_fail_cleanly
def segment(images: tuple[str, ...], classes: str | None, vocab: str | None, keep_all: bool, clip_name: str | None,
            out_dir: str, model: str | None, preset: str | None, assignments: tuple[str, ...], device: str,
            dtype: str | None, batch_size: str, overwrite: bool, max_pixels: int | None, workers: int,
            skip_bad: bool, coco: str | None, **named: Any) -> None:
    """Segment IMAGES (files, directories or globs) into the classes present among the candidates
    (--classes or --vocab).

    Writes NAME.labels.png (palette PNG, pixel = label index; 16-bit greyscale above 256 labels),
    NAME.overlay.png and NAME.json (labels used, every candidate's presence score, config, pixel
    fraction per label) for each image into --out, the three as one unit. An image whose three files
    are already there from the same image content, model, candidates and settings is skipped, so an
    interrupted run continues where it stopped when rerun. OUT/pnpovss_run.json sums the run up.
    --coco FILE also writes the run's masks as one COCO annotation file.

    Under `torchrun --nproc_per_node N -m pnpovss segment ...` each process segments every N-th
    image into the same --out: the files equal a single-process run's.
    """
    from .. import runner
    from ..fields import parse_assignments
    from ..preset_files import load_preset

    names = _candidates(classes, vocab, model)
    settings = parse_assignments(assignments)
    paths = expand_inputs(images)
    runner.check_summary_name(paths)
    limit = MAX_PIXELS if max_pixels is None else (max_pixels or None)
    job = runner.FolderJob(paths, names, Path(out_dir), keep_all, parse_batch_size(batch_size), workers, skip_bad,
                           overwrite, limit, Path(coco) if coco else None)
    # a named option (those of _pipeline_options, --dtype) wins over the same key given by --set
    overrides = {**settings, **_named_overrides(dtype=dtype, **named)}
    if preset:
        load_preset(preset)  # a bad preset fails before the model loads
    _run(job, model, preset, clip_name, device, overrides)
