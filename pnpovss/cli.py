"""``pnpovss`` command line. Every user error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .config import BACKGROUND_MODES, FIELDS, list_presets
from .errors import ConfigError, PnpOvssError
from .fileio import IMAGE_SUFFIXES


def _fail_cleanly(fn: Callable) -> Callable:
    """Turn library errors into click's one-line ``Error: ...`` (exit 1) and Ctrl-C into exit 130."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PnpOvssError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: rerun the same command to continue where it stopped", err=True)
            sys.exit(130)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def expand_inputs(items: tuple[str, ...]) -> list[Path]:
    """Files, directories (their image files, sorted) and quoted globs -> image paths. An existing
    path is a path even if it holds glob characters (``scan[1].png``); labels/overlay PNGs that a
    run wrote (their NAME.json beside them) are never taken as inputs from a directory or glob."""
    from .outputs import check_name_length, is_own_output

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


def parse_head(value: str | None) -> int | tuple[int, ...] | None | str:
    """``"9"`` -> 9, ``"3,9"`` -> (3, 9), ``"all"`` -> None (read by the ``head`` field's spec);
    unset -> sentinel (keep preset)."""
    if value is None:
        return "unset"
    try:
        return FIELDS["head"].parse("head", value)
    except ConfigError:
        raise ConfigError(f"--head takes an index, a comma list of indices or 'all', got {value!r}") from None


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


@click.group()
@click.version_option(package_name="pnpovss")
def main() -> None:
    """Training-free open-vocabulary semantic segmentation (PnP-OVSS)."""


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--classes", default=None,
              help='Comma-separated candidate classes, e.g. "cat,grass,sky"; those the model finds in the image '
                   'are segmented (--keep-all: every one).')
@click.option("--vocab", default=None, metavar="NAME|FILE",
              help="Candidate classes from a dataset's vocabulary (voc, context, coco-object, coco-stuff, ade20k, "
                   "toyworld, ...) or a class-name file (one class per line), instead of --classes.")
@click.option("--keep-all", is_flag=True, default=False,
              help="Put every given class into the caption (the paper's protocol: the classes are known to be there).")
@click.option("--clip", "clip_name", default=None,
              help="CLIP for the recurrent presence check (--set presence_rounds=N): open_clip name, local "
                   "directory, or 'toy'.")
@click.option("--out", "out_dir", default="pnpovss-out", show_default=True, type=click.Path(file_okay=False),
              help="Output directory.")
@click.option("--model", default=None, help="Hub id, local directory, or 'toy'. [default: Salesforce/blip-itm-large-flickr]")
@click.option("--preset", type=click.Path(dir_okay=False), default=None,
              help=f"Preset JSON (e.g. a tune run's best.json) or a named preset: {', '.join(list_presets())}.")
@click.option("--image-size", type=int, default=None, help="Square input size; default: the checkpoint's own (384 for BLIP-large).")
@click.option("--layer", type=int, default=None, help="Cross-attention layer, 1-based. [default: 8]")
@click.option("--head", default=None, help="Head index (0-based), comma list to average, or 'all'. [default: 9]")
@click.option("--drop-iters", type=int, default=None, help="Salience DropOut passes (1 = none). [default: 4]")
@click.option("--drop-k", type=int, default=None, help="Patches dropped per pass. [default: 10]")
@click.option("--halving", is_flag=True, default=None, help="Drop half of the remaining patches per pass instead of --drop-k.")
@click.option("--threshold", type=float, default=None, help="Map threshold after min-max. [default: 0.15]")
@click.option("--background/--no-background", default=None, help="Add a background label. [default: on]")
@click.option("--no-crf", is_flag=True, default=False, help="Plain argmax instead of the dense CRF.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Any pipeline option by name, e.g. --set crf_unary=probs --set blur_sigma=0.03 (repeatable).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N.")
@click.option("--dtype", default=None, help="Precision: auto, fp32, bf16 or fp16 (CUDA); see the README. [default: fp32]")
@click.option("--batch-size", default="auto", show_default=True,
              help="Images per forward pass, or auto: sized to the memory the first image takes.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Redo images whose outputs already exist with the same settings (they are skipped otherwise).")
@click.option("--max-pixels", type=click.IntRange(min=0), default=None,
              help="Refuse images with more pixels (Pillow's decompression-bomb guard); 0 = no limit. [default: 178956970]")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes decoding the next images and post-processing (blur, CRF, PNG) finished ones while the "
                   "model runs; 0: all in order in this process. Same files either way.")
@click.option("--skip-bad", is_flag=True, default=False,
              help="Skip unreadable images (listed with the reason in OUT/pnpovss_run.json) instead of stopping.")
@_fail_cleanly
def segment(images: tuple[str, ...], classes: str | None, vocab: str | None, keep_all: bool, clip_name: str | None,
            out_dir: str, model: str | None, preset: str | None,
            image_size: int | None, layer: int | None, head: str | None, drop_iters: int | None,
            drop_k: int | None, halving: bool | None, threshold: float | None, background: bool | None,
            no_crf: bool, assignments: tuple[str, ...], device: str, dtype: str | None, batch_size: str,
            overwrite: bool, max_pixels: int | None, workers: int, skip_bad: bool) -> None:
    """Segment IMAGES (files, directories or globs) into the classes present among the candidates
    (--classes or --vocab).

    Writes NAME.labels.png (palette PNG, pixel = label index; 16-bit greyscale above 256 labels),
    NAME.overlay.png and NAME.json (labels used, every candidate's presence score, config, pixel
    fraction per label) for each image into --out, the three as one unit. An image whose three files
    are already there from the same image content, model, candidates and settings is skipped, so an
    interrupted run continues where it stopped when rerun. OUT/pnpovss_run.json sums the run up.

    Under `torchrun --nproc_per_node N -m pnpovss segment ...` each process segments every N-th
    image into the same --out: the files equal a single-process run's.
    """
    from . import runner
    from .backbones import DEFAULT_MODEL
    from .config import load_preset, parse_assignments
    from .distributed import from_env, process_device, shutdown
    from .fileio import MAX_PIXELS
    from .outputs import remove_stale_temps
    from .pipeline import Segmenter, parse_classes, resolve_device

    if (classes is None) == (vocab is None):
        raise PnpOvssError("give the candidate classes with --classes \"a,b,c\" or --vocab NAME|FILE (one of the two)")
    if vocab is not None:
        from .datasets import load_vocabulary

        names = parse_classes(load_vocabulary(vocab))
    else:
        names = parse_classes(classes)
    settings = parse_assignments(assignments)
    paths = expand_inputs(images)
    runner.check_summary_name(paths)
    limit = MAX_PIXELS if max_pixels is None else (max_pixels or None)
    job = runner.FolderJob(paths, names, Path(out_dir), keep_all, parse_batch_size(batch_size), workers, skip_bad,
                           overwrite, limit)
    given = dict(image_size=image_size, layer=layer, drop_iters=drop_iters, drop_k=drop_k,
                 halving=halving, threshold=threshold, background=background, head=parse_head(head), dtype=dtype)
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None and v != "unset"}
    if head is not None and given["head"] is None:
        overrides["head"] = None  # "all": average every head
    if no_crf:
        overrides["crf"] = False
    overrides = {**settings, **overrides}  # a named option wins over the same key given by --set
    if preset:
        load_preset(preset)  # a bad preset fails before the model loads
    ctx = from_env(device)
    try:
        runner.check_same_inputs(paths, ctx)
        kept = {} if skip_bad else runner.check_images(job, ctx)  # bad input fails before the model loads
        runner.check_out_dir(job.out, ctx)
        source = model or DEFAULT_MODEL
        if ctx.is_main:
            click.echo(f"loading {source} ...", err=True)
        clip = None
        if clip_name is not None:
            from .reward import ClipScorer, load_clip

            clip = ClipScorer(load_clip(clip_name, device=resolve_device(process_device(device, ctx))))
        seg = Segmenter.from_pretrained(source, device=process_device(device, ctx), preset=preset, presence_clip=clip,
                                        **overrides)
        ran = announce(seg, device, quiet=not ctx.is_main)
        remove_stale_temps(job.out)
        summary = runner.run(seg, job, ctx, model=source, ran=ran, kept=kept,
                             echo=lambda line: click.echo(line, err=True))
        if ctx.is_main:
            click.echo(f"{summary.line()}\nwrote {3 * summary.segmented} files to {job.out}", err=True)
    finally:
        shutdown(ctx)


# ------------------------------------------------------------------------------ eval / tune
def _protocol(labels: str | None, all_classes: bool) -> str:
    """``--labels`` with ``--all-classes`` as its older alias."""
    if all_classes and labels not in (None, "all"):
        raise PnpOvssError(f"--all-classes means --labels all; it contradicts --labels {labels}")
    from .evaluate import label_protocol

    return label_protocol(labels, all_classes)


def _dataset_options(fn: Callable) -> Callable:
    """Options shared by ``eval`` and ``tune``: which images, which model, which base settings."""
    from .datasets import dataset_names

    opts = [
        click.option("--dataset", required=True, type=click.Choice(sorted(dataset_names()), case_sensitive=False),
                     help="voc (=voc21), voc20, context (=context59), context60, coco-object, coco-stuff, ade20k, toyworld."),
        click.option("--root", type=click.Path(file_okay=False), default=None,
                     help="Dataset directory (mmsegmentation layout, e.g. data/VOCdevkit/VOC2012) or a parent of it."),
        click.option("--images", type=click.IntRange(min=1), default=None,
                     help="Use the first N images. [default: all; toyworld: 100]"),
        click.option("--labels", "labels", type=click.Choice(["gt", "all", "detect"]), default=None,
                     help="Which classes each caption holds: gt = the image's ground-truth labels (the paper's "
                          "protocol) [default]; all = every dataset class; detect = the presence stage picks them "
                          "from the whole vocabulary (no labels at test time)."),
        click.option("--all-classes", is_flag=True, default=False, help="Same as --labels all."),
        click.option("--model", default=None, help="Hub id, local directory, or 'toy'. [default: the BLIP hub model; toyworld: toy]"),
        click.option("--preset", type=click.Path(dir_okay=False), default=None,
                     help=f"Base preset JSON (e.g. a tune run's best.json) or a named preset: {', '.join(list_presets())}."),
        click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                     help="Any pipeline option by name, e.g. --set threshold=0.1 (repeatable; applied over --preset)."),
        click.option("--device", default="auto", show_default=True, help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N."),
        click.option("--dtype", default=None, help="Precision: auto, fp32, bf16 or fp16 (CUDA); see the README. [default: fp32]"),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="torch CPU threads per process (1 is much faster when other jobs share the cores). [default: torch's]"),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _load_for_dataset(dataset: str, root: str | None, world_seed: int, images: int | None, model: str | None,
                      preset: str | None, device: str, threads: int | None, assignments: tuple[str, ...] = (),
                      echo: bool = True, dtype: str | None = None):
    """(dataset, indices, segmenter) for eval/tune; the toy world defaults to the toy model."""
    import torch

    from .backbones import DEFAULT_MODEL
    from .config import load_preset, parse_assignments
    from .datasets import load_dataset, subset_indices
    from .pipeline import Segmenter

    settings = parse_assignments(assignments)
    if preset:
        load_preset(preset)  # a bad preset fails before the model loads
    if dtype is not None:
        settings["dtype"] = dtype
    if threads:
        torch.set_num_threads(threads)
    ds = load_dataset(dataset, root, seed=world_seed, images=images)
    indices = subset_indices(len(ds), images)
    source = model or ("toy" if ds.name == "toyworld" else DEFAULT_MODEL)
    if echo:
        click.echo(f"loading {source} ...", err=True)
    try:
        settings = ds.pipeline_settings(settings)
    except PnpOvssError as exc:
        raise PnpOvssError(f"--set {exc}") from None
    seg = Segmenter.from_pretrained(source, device=device, preset=preset, **settings)
    return ds, indices, seg


@main.command("eval")
@_dataset_options
@click.option("--seed", type=int, default=0, show_default=True, help="Toy-world seed (toyworld only).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write miou, per_class, the confusion matrix and the settings here.")
@click.option("--background-mode", type=click.Choice(BACKGROUND_MODES), default=None,
              help="dataset: a background channel exactly on datasets with a background class; reference: also "
                   "when a caption names fewer than 3 classes (the reference scripts); always: on every caption "
                   "(the CVPR-era evaluation scripts). [default: dataset]")
@click.option("--batch-size", default="auto", show_default=True,
              help="Images per forward pass, or auto: sized to the memory the first image takes. Scores do not depend on it.")
@_fail_cleanly
def eval_cmd(dataset: str, root: str | None, images: int | None, labels: str | None, all_classes: bool,
             model: str | None, preset: str | None, assignments: tuple[str, ...], device: str, dtype: str | None,
             threads: int | None, seed: int, json_out: str | None, background_mode: str | None,
             batch_size: str) -> None:
    """mIoU of the pipeline on a dataset (mmsegmentation IoUMetric semantics).

    Interrupted (Ctrl-C, a crash)? Rerun the same command: the images already scored are kept in
    the user cache ($PNPOVSS_CACHE/eval, else ~/.cache/pnpovss/eval) and are not scored again.

    Under `torchrun --nproc_per_node N -m pnpovss eval ...` the images are sharded over the N
    processes and the confusion matrices summed: the result equals a single-process run.
    """
    from .distributed import from_env, process_device, shutdown
    from .evaluate import evaluate
    from .fileio import atomic_write_text
    from .metrics import iou_table

    if json_out:
        from .distributed import env_is_main
        from .outputs import check_writable_dir

        if env_is_main():  # only rank 0 writes the JSON
            check_writable_dir(Path(json_out).parent, f"--json {json_out}")  # before the evaluation, not after it
        if Path(json_out).is_dir():
            raise PnpOvssError(f"--json {json_out} is a directory; name a file")
    batch = parse_batch_size(batch_size)
    ctx = from_env(device)
    try:
        if background_mode:
            assignments = (*assignments, f"background_mode={background_mode}")
        ds, indices, seg = _load_for_dataset(dataset, root, seed, images, model, preset, process_device(device, ctx),
                                             threads, assignments, echo=ctx.is_main, dtype=dtype)
        ran = announce(seg, device) if ctx.is_main else {}
        result = evaluate(seg, ds, indices, labels=_protocol(labels, all_classes), dist=ctx, resume=True,
                          batch_size=batch)
        result.meta.update(ran)
        if ctx.is_main:
            click.echo(iou_table(result.summary))
            if "tags" in result.meta:
                t = result.meta["tags"]
                click.echo(f"tags (presence vs ground-truth labels): precision {t['precision']:.2f}  "
                           f"recall {t['recall']:.2f}  F1 {t['f1']:.2f}")
            if json_out:
                atomic_write_text(Path(json_out), json.dumps(result.to_json(), indent=2) + "\n")
                click.echo(f"wrote {json_out}", err=True)
        if result.progress_file is not None:  # the result is out: the saved progress is spent
            result.progress_file.unlink(missing_ok=True)
    finally:
        shutdown(ctx)


@main.command()
@_dataset_options
@click.option("--iters", type=click.IntRange(min=1), default=34, show_default=True,
              help="Trials, trial 0 being the base configuration.")
@click.option("--space", type=click.Path(dir_okay=False), default=None,
              help="Search-space JSON. [default: saliency, every layer, every head and their mean, threshold "
                   "0.05..0.5, DropOut off or T=4 with k 5/10: search/spaces/default.json]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random search (and of the toy world).")
@click.option("--world-seed", type=int, default=None, help="Toy-world seed when it should differ from --seed.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="tune-out", show_default=True,
              help="Run directory: run.json, trace.jsonl, best.json (a preset). Rerun the same command to resume.")
@click.option("--clip", "clip_name", default=None,
              help="open_clip model name, local open_clip directory, or 'toy'. [default: ViT-L-14-336; toyworld: toy]")
@click.option("--clip-pretrained", default="openai", show_default=True, help="Pretrained tag or weights file for --clip NAME.")
@click.option("--clip-template", default=None, help="CLIP prompt, e.g. 'a photo of a {}'. [default: the bare class name]")
@click.option("--reward", type=click.Choice(["contrast", "binary", "continuous", "tags"]), default="contrast", show_default=True,
              help="contrast: log p(class inside its segment) - log p(class outside it) on the trial's own "
                   "segmentation (pnpovss.reward_region; the default, measured in search/runs/toyworld); "
                   "binary: the paper's win count; continuous: mean probability gain over the full class list; "
                   "tags: tune the class-presence stage (presence_threshold) by per-image tag F1 against the "
                   "image-level labels (no CLIP; default space search/spaces/presence.json).")
@click.option("--reward-mask", type=click.Choice(["reference", "half"]), default="reference", show_default=True,
              help="How the blurred reward mask is cut again: at the trial's threshold (the reference code) or at "
                   "half its peak (an option).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Also keep the per-image layer/head maps here, reused by later runs.")
@click.option("--min-z", type=float, default=0.0, show_default=True,
              help="0: the paper's plain argmax of the reward. Above 0, a trial replaces the best only if its "
                   "per-image rewards beat the starting configuration's by this paired z-score (a guard against "
                   "reward noise; 2 is the measured option).")
@_fail_cleanly
def tune(dataset: str, root: str | None, images: int | None, labels: str | None, all_classes: bool,
         model: str | None, preset: str | None, assignments: tuple[str, ...], device: str, dtype: str | None,
         threads: int | None, iters: int,
         space: str | None, seed: int,
         world_seed: int | None, out_dir: str, clip_name: str | None, clip_pretrained: str,
         clip_template: str | None, reward: str, reward_mask: str, cache_dir: str | None, min_z: float) -> None:
    """Label-free random search of saliency, layer, head, threshold and DropOut with a CLIP reward.

    Writes OUT/trace.jsonl (one line per finished trial), OUT/best.json (best so far; a preset for
    `segment --preset` and `eval --preset`). An interrupted run restarted with the same command
    resumes; under torchrun the map cache and each trial's images are split over the processes.
    """
    from .distributed import from_env, process_device, shutdown
    from .reward import DEFAULT_CLIP, ClipScorer, load_clip
    from .search import RewardEvaluator, load_space, run_search

    from .outputs import check_writable_dir

    all_classes = _protocol(labels, all_classes) == "all"
    if labels == "detect":
        raise PnpOvssError("tune --labels takes gt or all; to tune the presence stage use --reward tags")
    from .distributed import env_is_main

    if env_is_main():  # only rank 0 writes the run
        check_writable_dir(Path(out_dir), f"--out {out_dir}")  # before the model and the maps, not after them
    ctx = from_env(device)
    try:
        wseed = seed if world_seed is None else world_seed
        ds, indices, seg = _load_for_dataset(dataset, root, wseed, images, model, preset, process_device(device, ctx),
                                             threads, assignments, echo=ctx.is_main, dtype=dtype)
        if ctx.is_main:
            announce(seg, device)
        run_info = {"dataset": ds.describe(), "root": str(getattr(ds, "root", "")), "images": len(indices),
                    "all_classes": all_classes, "model": seg.backbone.source}
        if reward == "tags":
            from .presence_tuning import DEFAULT_PRESENCE_SPACE, PRESENCE_PARAMS, PresenceEvaluator

            space_obj = load_space(space, seg.backbone, seg.config, searchable=PRESENCE_PARAMS,
                                   default=DEFAULT_PRESENCE_SPACE)
            evaluator: Any = PresenceEvaluator(seg, ds, indices, dist=ctx)
        else:
            space_obj = load_space(space, seg.backbone, seg.config)
            clip_source = clip_name or ("toy" if ds.name == "toyworld" else DEFAULT_CLIP)
            clip = load_clip(clip_source, clip_pretrained, device=str(seg.backbone.device))  # "auto" resolved
            template = clip_template or ds.clip_template or "{}"
            evaluator = RewardEvaluator(seg, ds, indices, ClipScorer(clip, template=template),
                                        all_classes=all_classes, cache_dir=cache_dir, dist=ctx, mask_rule=reward_mask,
                                        contrast=reward == "contrast")
            run_info.update(clip=clip.source, clip_template=template)
        best = run_search(evaluator, space_obj, iters=iters, seed=seed, out_dir=out_dir, reward=reward,
                          min_z=min_z, run_info=run_info)
        if ctx.is_main:
            params = {k: best.params[k] for k in space_obj.values}
            others = ", ".join(f"{k} {v:.4g}" for k, v in best.rewards.items())
            click.echo(f"best trial {best.trial}: {json.dumps(params)} reward {best.reward:.4g} "
                       f"({others}; z vs trial 0 {best.z[reward]:.2f})")
            click.echo(f"preset: {Path(out_dir) / 'best.json'}  (pnpovss eval --preset {Path(out_dir) / 'best.json'} ...)")
    finally:
        shutdown(ctx)


@main.command()
@click.option("--model", default=None, help="Hub id, local directory, or 'toy'. [default: Salesforce/blip-itm-large-flickr]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on (0.0.0.0: the whole network).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to serve on.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@_fail_cleanly
def demo(model: str | None, host: str, port: int, device: str) -> None:
    """Serve a local web page: upload an image, type classes, see and steer the segmentation.

    Needs the demo extra (pip install "pnpovss[demo]"). The page also offers the endpoint
    api_name="segment" (image, "class,class") -> (overlay, JSON) for gradio_client.
    """
    from .backbones import DEFAULT_MODEL
    from .demo import serve

    source = model or DEFAULT_MODEL
    click.echo(f"loading {source} ...", err=True)
    serve(source, host=host, port=port, device=device)


if __name__ == "__main__":  # pragma: no cover
    main()
