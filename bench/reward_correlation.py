"""Does the label-free reward rank configurations like the true mIoU does? (prints JSON)

    python bench/reward_correlation.py --model toy --clip toy --seed 1 --images 60 --configs 32 --threads 1 --diagnose

Draws ``--configs`` distinct random configurations from the search space (``--space``; default:
tune's default space: saliency, layer, head, threshold, DropOut), scores each with every reward
variant exactly as ``pnpovss tune`` does (``binary``: the paper's; ``continuous``; ``contrast``:
region vs complement, and ``boundary``: just inside vs just outside the edge, both on the trial's own
segmentation, :mod:`pnpovss.reward_region`) and with the
true mIoU on the same images, and reports Spearman's rank correlation of each variant with

* ``miou``: what ``pnpovss eval --preset`` gives for that configuration (full pipeline), and
* ``miou_single_pass``: the post-processing applied to the maps the reward sees (the same maps as
  ``miou`` when DropOut is in the space).

``binary`` and ``continuous`` are computed under every reward mask rule (``reference``, the
default, and ``half``; see :mod:`pnpovss.reward`); ``contrast`` and ``boundary`` do not use those
masks, so they are the same under both. ``spearman`` covers all configurations, ``spearman_usable`` the usable ones
(at least half of the labelled classes' single-pass maps keep a patch after the threshold: maps not
empty), ``spearman_without_last_layer`` leaves out the last layer (the earlier record's split).

``--diagnose`` adds where ranking can be lost, part by part: the toy CLIP's top-1 accuracy on
images masked by the *true* masks (the judge's own strength), what a mask covering everything gains
in the paper's masked-vs-blank test, how many images carry a single label (the paper's binary reward
always scores them 0), and how many distinct values the binary reward takes (ties).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from pnpovss import Segmenter
from pnpovss.backbones import source_label
from pnpovss.datasets import load_dataset
from pnpovss.evaluate import caption_class_ids, evaluate
from pnpovss.fileio import atomic_write_text
from pnpovss.metrics import ConfusionMatrix
from pnpovss.postprocess import postprocess, threshold_maps, upsample
from pnpovss.reward import MASK_RULES, ClipScorer, load_clip
from pnpovss.reward_region import REGION_REWARDS
from pnpovss.search import RewardEvaluator, load_space

VARIANTS = ("binary", "continuous", *REGION_REWARDS)


def sample_configs(space, count: int, seed: int) -> list[dict]:
    """``count`` distinct parameter sets, uniformly over the space's grid."""
    rng = np.random.default_rng(seed)
    names = list(space.values)
    sizes = [len(space.values[n]) for n in names]
    picks = rng.choice(int(np.prod(sizes)), size=min(count, int(np.prod(sizes))), replace=False)
    out = []
    for flat in picks:
        idx = np.unravel_index(int(flat), sizes)
        out.append({n: space.values[n][int(i)] for n, i in zip(names, idx)})
    return out


def single_pass_miou(ev: RewardEvaluator, params: dict) -> float:
    """mIoU of the post-processed single-pass maps (what the reward looks at)."""
    ds, cfg = ev.dataset, ev.trial_config(params)
    cm = ConfusionMatrix(ds.num_classes, ds.ignore_index)
    for i in ev.indices:
        sample = ds[i]
        ids = caption_class_ids(ds, sample, ev.all_classes)
        pred = np.zeros(sample.label.shape, np.int64)
        if ids:
            maps = ev.cache.class_maps(i, cfg, lambda: sample.image, [ds.classes[c] for c in ids])
            labels, _ = postprocess(maps, sample.image, cfg)
            pred = np.asarray(([0] if ds.has_background else []) + ids)[labels]
        cm.update(pred, sample.label)
    return cm.summary(ds.classes)["miou"]


def spearman(x: list[float], y: list[float]) -> float | None:
    rho = spearmanr(x, y).statistic
    return None if np.isnan(rho) else round(float(rho), 4)


def correlations(rows: list[dict], rule: str) -> dict[str, float | None]:
    """Spearman's rho of each reward variant (under mask ``rule``) with each mIoU."""
    if len(rows) < 3:
        return {}
    return {f"{variant}_vs_{target}": spearman([r["rewards"][rule][variant] for r in rows], [r[target] for r in rows])
            for variant in VARIANTS for target in ("miou", "miou_single_pass")}


def nonempty_share(ev: RewardEvaluator, params: dict) -> float:
    """Share of (image, labelled class) pairs whose single-pass class map survives the threshold:
    a configuration is *usable* when most of its maps are not empty."""
    cfg, kept, total = ev.trial_config(params).replace(drop_iters=1), 0, 0
    for i in ev.indices:
        entry = ev._images[i]
        if not entry["labels"]:
            continue
        maps = ev.cache.class_maps(i, cfg, lambda: ev.dataset[i].image, entry["names"])
        rows = [entry["caption"].index(c) for c in entry["labels"]]
        kept += int((threshold_maps(maps[rows], cfg.threshold) > 0).reshape(len(rows), -1).any(axis=1).sum())
        total += len(rows)
    return kept / max(total, 1)


def diagnose(ev: RewardEvaluator, rows: list[dict]) -> dict:
    """Where the reward's ranking can be lost, part by part (see the module doc)."""
    ds, scorer = ev.dataset, ev.scorer
    size = scorer.clip.image_size
    hits = {"inside": 0, "complement_not_top": 0, "full_image": 0}
    gain = {"gt_inside_minus_blank": [], "gt_inside_minus_complement": [], "full_minus_blank": []}
    n = single = 0
    for i in ev.indices:
        sample, entry = ds[i], ev._images[i]
        labels = entry["labels"]
        if not labels:
            continue
        single += len(labels) == 1
        gt = upsample(np.stack([(sample.label == c) for c in labels]).astype(np.float32), (size, size)) >= 0.5
        own = [ev._row[c] for c in labels]
        inside = scorer.masked_embeddings(("gt", i), entry["clip"], gt)
        outside = scorer.masked_embeddings(("gt", i), entry["clip"], ~gt)
        full = scorer.masked_embeddings(("gt", i), entry["clip"], np.ones_like(gt))
        blank = scorer.blank_embedding()[None]
        for k, c in enumerate(own):
            p_in = scorer.probabilities(inside[k : k + 1], ev.text)[0]
            p_out = scorer.probabilities(outside[k : k + 1], ev.text)[0]
            p_full = scorer.probabilities(full[k : k + 1], ev.text)[0]
            p_blank = scorer.probabilities(blank, ev.text)[0]
            hits["inside"] += int(p_in.argmax()) == c
            hits["complement_not_top"] += int(p_out.argmax()) != c
            hits["full_image"] += int(p_full.argmax()) == c
            gain["gt_inside_minus_blank"].append(float(p_in[c] - p_blank[c]))
            gain["gt_inside_minus_complement"].append(float(p_in[c] - p_out[c]))
            gain["full_minus_blank"].append(float(p_full[c] - p_blank[c]))
            n += 1
    binary = [r["rewards"][MASK_RULES[0]]["binary"] for r in rows]
    return {
        "clip_on_ground_truth_masks": {
            "classes": n, "top1_inside_gt_mask_pct": round(100 * hits["inside"] / n, 2),
            "top1_whole_image_pct": round(100 * hits["full_image"] / n, 2),
            "complement_not_recognised_pct": round(100 * hits["complement_not_top"] / n, 2),
            **{f"mean_{k}": round(float(np.mean(v)), 4) for k, v in gain.items()},
            "note": "a mask covering everything gains mean_full_minus_blank in the paper's test, against "
                    "mean_gt_inside_minus_blank for the true mask: the paper's test hardly penalises it"},
        "single_label_images": single, "images_with_labels": len([i for i in ev.indices if ev._images[i]["labels"]]),
        "binary_reward_ties": {"configs": len(binary), "distinct_values": len(set(binary))},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--clip", default="toy")
    ap.add_argument("--seed", type=int, default=1, help="toy-world seed of the images")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--configs", type=int, default=32)
    ap.add_argument("--config-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--space", default=None, help="search-space JSON (default: tune's default space)")
    ap.add_argument("--diagnose", action="store_true", help="also measure the reward chain part by part")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    ds = load_dataset("toyworld", seed=args.seed, images=args.images)
    seg = Segmenter.from_pretrained(args.model, preset=args.preset, background=True)
    scorer = ClipScorer(load_clip(args.clip), template=ds.clip_template or "{}")
    ev = RewardEvaluator(seg, ds, range(len(ds)), scorer, region=tuple(REGION_REWARDS))
    ev.build(progress=False)
    space = load_space(args.space, seg.backbone, seg.config)
    rows = []
    for n, params in enumerate(sample_configs(space, args.configs, args.config_seed)):
        rewards = {}
        for rule in MASK_RULES:  # same maps and images, only the mask rule differs
            ev.mask_rule = rule
            rewards[rule] = ev.evaluate(params)
        tuned = Segmenter(seg.backbone, seg.config.replace(**params))
        miou = evaluate(tuned, ds, range(len(ds)), progress=False).summary["miou"]
        rows.append({"params": params, "rewards": rewards, "miou": miou,
                     "miou_single_pass": single_pass_miou(ev, params), "nonempty": round(nonempty_share(ev, params), 4)})
        print(f"[{n + 1}/{args.configs}] {json.dumps(rows[-1])}", file=sys.stderr)
    ev.mask_rule = MASK_RULES[0]
    last = [r for r in rows if r["params"].get("layer", seg.config.layer) != seg.backbone.num_layers]
    usable = [r for r in rows if r["nonempty"] >= 0.5]
    result = {
        "dataset": ds.describe(), "model": source_label(seg.backbone.source), "clip": scorer.clip.source,
        "base_config": seg.config.to_dict(), "space": space.values, "configs": len(rows),
        "mask_rules": list(MASK_RULES), "variants": list(VARIANTS),
        "spearman": {rule: correlations(rows, rule) for rule in MASK_RULES},
        "spearman_usable": {rule: correlations(usable, rule) for rule in MASK_RULES},
        "configs_usable": len(usable),
        "usable_rule": "nonempty >= 0.5: at least half the (image, labelled class) single-pass maps keep a patch",
        "spearman_without_last_layer": {rule: correlations(last, rule) for rule in MASK_RULES},
        "configs_without_last_layer": len(last),
        **({"diagnosis": diagnose(ev, rows)} if args.diagnose else {}),
        "rows": rows, "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
