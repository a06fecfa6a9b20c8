"""Does the label-free reward rank configurations like the true mIoU does? (prints JSON)

    python bench/reward_correlation.py --model toy --clip toy --seed 1 --images 60 --configs 32 --threads 1

Draws ``--configs`` distinct random configurations (layer, head, threshold) from the default
search space, scores each with both reward variants (exactly as ``pnpovss tune`` does: single-pass
maps from the layer/head cache) and with the true mIoU on the same images, and reports Spearman's
rank correlation of each variant with

* ``miou``: what ``pnpovss eval --preset`` gives for that configuration (full pipeline: DropOut at
  the base setting, blur, CRF), and
* ``miou_single_pass``: the same post-processing applied to the single-pass maps the reward sees.

Each configuration's rewards are computed under every reward mask rule (``reference``, the
default, and ``half``; see :mod:`pnpovss.reward`), so both rules are ranked against the same mIoUs.
``spearman[rule]`` covers all configurations, ``spearman_without_last_layer[rule]`` leaves out the
last layer, whose GradCAM is zero for word tokens (empty masks, reward 0, low mIoU: easy to rank).
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
from pnpovss.datasets import load_dataset
from pnpovss.evaluate import caption_class_ids, evaluate
from pnpovss.fileio import atomic_write_text
from pnpovss.metrics import ConfusionMatrix
from pnpovss.postprocess import postprocess
from pnpovss.reward import MASK_RULES, ClipScorer, load_clip
from pnpovss.search import RewardEvaluator, load_space


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
    return {f"{variant}_vs_{target}": spearman([r["rewards"][rule][variant] for r in rows], [r[target] for r in rows])
            for variant in ("binary", "continuous") for target in ("miou", "miou_single_pass")}


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
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    ds = load_dataset("toyworld", seed=args.seed, images=args.images)
    seg = Segmenter.from_pretrained(args.model, preset=args.preset, background=True)
    scorer = ClipScorer(load_clip(args.clip), template=ds.clip_template or "{}")
    ev = RewardEvaluator(seg, ds, range(len(ds)), scorer)
    ev.build(progress=False)
    space = load_space(None, seg.backbone, seg.config)
    rows = []
    for n, params in enumerate(sample_configs(space, args.configs, args.config_seed)):
        rewards = {}
        for rule in MASK_RULES:  # same maps and images, only the mask rule differs
            ev.mask_rule = rule
            rewards[rule] = ev.evaluate(params)
        tuned = Segmenter(seg.backbone, seg.config.replace(**params))
        miou = evaluate(tuned, ds, range(len(ds)), progress=False).summary["miou"]
        rows.append({"params": params, "rewards": rewards, "miou": miou,
                     "miou_single_pass": single_pass_miou(ev, params)})
        print(f"[{n + 1}/{args.configs}] {json.dumps(rows[-1])}", file=sys.stderr)
    usable = [r for r in rows if r["params"]["layer"] != seg.backbone.num_layers]
    result = {
        "dataset": ds.describe(), "model": seg.backbone.source, "clip": scorer.clip.source,
        "base_config": seg.config.to_dict(), "configs": len(rows), "mask_rules": list(MASK_RULES),
        "spearman": {rule: correlations(rows, rule) for rule in MASK_RULES},
        "spearman_without_last_layer": {rule: correlations(usable, rule) for rule in MASK_RULES},
        "configs_without_last_layer": len(usable),
        "rows": rows, "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
