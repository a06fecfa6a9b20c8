"""``pnpovss tune``: the label-free random search (:func:`pnpovss.search.run_search`) with a CLIP
reward, or the presence stage's search by tag F1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..defaults import DEFAULT_CLIP, DEFAULT_CLIP_PRETRAINED
from ..errors import PnpOvssError
from . import options as opt
from .common import _fail_cleanly, announce, load_for_dataset, protocol


@click.command()
@opt.dataset_options
@click.option("--iters", type=click.IntRange(min=1), default=34, show_default=True,
              help="Trials, trial 0 being the base configuration.")
@click.option("--space", type=click.Path(dir_okay=False), default=None,
              help="Search space: a name from pnpovss/search/spaces (default, layer_head, reference, dropout, presence) "
                   "or a JSON file. [default: saliency, every layer, every head and their mean, threshold "
                   "0.05..0.5, DropOut off or T=4 with k 5/10: search/spaces/default.json]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random search (and of the toy world).")
@click.option("--world-seed", type=int, default=None, help="Toy-world seed when it should differ from --seed.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="tune-out", show_default=True,
              help="Run directory: run.json, trace.jsonl, best.json (a preset). Rerun the same command to resume.")
@click.option("--clip", "clip_name", default=None,
              help=f"open_clip model name, local open_clip directory, or 'toy'. [default: {DEFAULT_CLIP}; toyworld: toy]")
@click.option("--clip-pretrained", default=DEFAULT_CLIP_PRETRAINED, show_default=True, help="Pretrained tag or weights file for --clip NAME.")
@click.option("--clip-template", default=None, help="CLIP prompt, e.g. 'a photo of a {}'. [default: the bare class name]")
@click.option("--reward", type=click.Choice(["boundary", "contrast", "binary", "continuous", "tags"]), default="boundary",
              show_default=True,
              help="boundary: log p(class just inside its segment's edge) - log p(class just outside it), on the "
                   "trial's own segmentation (pnpovss.reward_region; the default, measured in search/runs/toyworld); "
                   "contrast: log p(class inside its segment) - log p(class outside it); "
                   "binary: the paper's win count; continuous: mean probability gain over the full class list; "
                   "tags: tune the class-presence stage (presence_threshold) by per-image tag F1 against the "
                   "image-level labels (no CLIP; default space search/spaces/presence.json).")
@click.option("--reward-mask", type=click.Choice(["reference", "half"]), default="reference", show_default=True,
              help="How the blurred reward mask is cut again: at the trial's threshold (the reference code) or at "
                   "half its peak (an option).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Also keep the per-image layer/head maps here, reused by later runs.")
@click.option("--select", "selection", type=click.Choice(["robust", "argmax"]), default=None,
              help="How best.json is chosen from the trials. robust: keep the defaults (trial 0) unless a trial's "
                   "lead is real: significant image by image, on both halves of the images, not contradicted by "
                   "the other rewards, its segments not spreading over the images (pnpovss.search.select; "
                   "measured in bench/tune_robustness.py). argmax: the paper's highest reward. Replaying a "
                   "finished run with another rule re-selects without running anything. "
                   "[default: robust; argmax for --reward tags, which scores against the labels themselves]")
@click.option("--min-z", type=float, default=None,
              help="Paired z-score a trial's per-image rewards must reach over the starting configuration's. "
                   "[default: robust 2; argmax 0, the paper's plain argmax]")
@_fail_cleanly
def tune(dataset: str, root: str | None, images: int | None, labels: str | None, all_classes: bool,
         model: str | None, preset: str | None, assignments: tuple[str, ...], device: str, dtype: str | None,
         threads: int | None, compile_vision: bool, iters: int,
         space: str | None, seed: int,
         world_seed: int | None, out_dir: str, clip_name: str | None, clip_pretrained: str,
         clip_template: str | None, reward: str, reward_mask: str, cache_dir: str | None, selection: str | None,
         min_z: float | None) -> None:
    """Label-free random search of saliency, layer, head, threshold and DropOut with a CLIP reward.

    Writes OUT/trace.jsonl (one line per finished trial), OUT/best.json (best so far; a preset for
    `segment --preset` and `eval --preset`). An interrupted run restarted with the same command
    resumes; under torchrun the map cache and each trial's images are split over the processes.
    """
    from ..backbones import source_label
    from ..distributed import from_env, process_device, shutdown
    from ..outputs import check_writable_dir
    from ..search import run_search

    all_classes = protocol(labels, all_classes) == "all"
    if labels == "detect":
        raise PnpOvssError("tune --labels takes gt or all; to tune the presence stage use --reward tags")
    from ..distributed import env_is_main

    if env_is_main():  # only rank 0 writes the run
        check_writable_dir(Path(out_dir), f"--out {out_dir}")  # before the model and the maps, not after them
    ctx = from_env(device)
    try:
        wseed = seed if world_seed is None else world_seed
        ds, indices, seg = load_for_dataset(dataset, root, wseed, images, model, preset, process_device(device, ctx),
                                             threads, assignments, echo=ctx.is_main, dtype=dtype,
                                             compile_vision=compile_vision)
        if ctx.is_main:
            announce(seg, device)
        run_info = {"dataset": ds.describe(), "root": str(getattr(ds, "root", "")), "images": len(indices),
                    "all_classes": all_classes, "model": source_label(seg.backbone.source)}
        space_obj, evaluator = _objective(reward, space, seg, ds, indices, ctx, run_info, all_classes=all_classes,
                                          clip_name=clip_name, clip_pretrained=clip_pretrained,
                                          clip_template=clip_template, cache_dir=cache_dir, reward_mask=reward_mask)
        if selection is None:
            selection = "argmax" if reward == "tags" else "robust"
        decision = run_search(evaluator, space_obj, iters=iters, seed=seed, out_dir=out_dir, reward=reward,
                              min_z=min_z, run_info=run_info, selection=selection)
        if ctx.is_main:
            best = decision.trial
            params = {k: best.params[k] for k in space_obj.values}
            zs = ", ".join(f"{k} {v:.2f}" for k, v in best.z.items())
            click.echo(f"best trial {best.trial}: {json.dumps(params)} reward {best.reward:.4g} (z vs trial 0: {zs})")
            click.echo(f"why ({selection}): {decision.reason}")
            click.echo(f"preset: {Path(out_dir) / 'best.json'}  (pnpovss eval --preset {Path(out_dir) / 'best.json'} ...)")
    finally:
        shutdown(ctx)


def _objective(reward: str, space: str | None, seg: Any, ds: Any, indices: Any, ctx: Any, run_info: dict[str, Any], *,
               all_classes: bool, clip_name: str | None, clip_pretrained: str, clip_template: str | None,
               cache_dir: str | None, reward_mask: str) -> tuple[Any, Any]:
    """The search space and the objective of ``--reward`` (the CLIP it loads is added to ``run_info``)."""
    from ..backbones import DEFAULT_TOY_MODEL
    from ..reward import DEFAULT_CLIP, ClipScorer, load_clip
    from ..reward_region import REGION_REWARDS
    from ..search import RewardEvaluator, load_space

    if reward == "tags":
        from ..presence_tuning import DEFAULT_PRESENCE_SPACE, PRESENCE_PARAMS, PresenceEvaluator

        space_obj = load_space(space, seg.backbone, seg.config, searchable=PRESENCE_PARAMS,
                               default=DEFAULT_PRESENCE_SPACE)
        return space_obj, PresenceEvaluator(seg, ds, indices, dist=ctx)
    space_obj = load_space(space, seg.backbone, seg.config)
    # the toy CLIP (trained on the class-textured world) is the only offline judge for either toy world
    clip_source = clip_name or ("toy" if ds.name in DEFAULT_TOY_MODEL else DEFAULT_CLIP)
    clip = load_clip(clip_source, clip_pretrained, device=str(seg.backbone.device))  # "auto" resolved
    template = clip_template or ds.clip_template or "{}"
    evaluator = RewardEvaluator(seg, ds, indices, ClipScorer(clip, template=template), all_classes=all_classes,
                                cache_dir=cache_dir, dist=ctx, mask_rule=reward_mask,
                                region=(reward,) if reward in REGION_REWARDS else ())
    run_info.update(clip=clip.source, clip_template=template)
    return space_obj, evaluator
