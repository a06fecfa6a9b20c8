"""How do the rewards and the selection rules do against the truth, trial by trial? (prints JSON)

    python bench/tune_truth.py --seeds 100,101,102,103 --json bench/results/tune_truth_dev.json

The development tool behind ``pnpovss tune``'s selection rule (``pnpovss.search.select``). For each
toy-world seed S it runs the default tune in-process, exactly as ``pnpovss tune --dataset toyworld
--seed S --images 120 --iters 34`` does (same objective, space, proposals and trace), and records
beside it, per trial, the per-image confusion matrices of the trial's own segmentation against the
true masks (``truth.json``; the labels are used only for this record, never by the search). From
these it reports, per seed:

* the Spearman correlation of each reward's total with the trial's true mIoU on the same images,
  over all trials and over the usable ones (at least half of the labelled classes segmented at all);
* what each selection rule picks (``argmax`` of every reward, ``robust``) and the picked trial's
  true mIoU gain over trial 0 on these images.

Runs live in ``--runs`` (default ``search/runs/robustness/dev``) and resume; a seed whose run was
cut short is reported over the trials it has (``trials`` says how many).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pnpovss.fileio import atomic_write_text  # noqa: E402
from pnpovss.metrics import ConfusionMatrix  # noqa: E402
from pnpovss.search import TRACE_FILE, Trial  # noqa: E402
from pnpovss.search.select import argmax, robust  # noqa: E402
from benchio import emit  # noqa: E402  (bench/ is this script's directory)

TRUTH_FILE = "truth.json"


def run_seed(seed: int, out: Path, images: int, iters: int) -> None:
    """The default tune of world seed ``seed`` in-process, recording each trial's confusion matrices."""
    import torch

    import pnpovss.search.evaluator as evaluator_module
    from pnpovss.cli.common import load_for_dataset
    from pnpovss.reward import ClipScorer, load_clip
    from pnpovss.search import RewardEvaluator, load_space, run_search

    torch.set_num_threads(1)
    ds, indices, seg = load_for_dataset("toyworld", None, seed, images, None, None, "cpu", 1, echo=False)
    path = out / TRUTH_FILE
    truth: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    segmented: list[np.ndarray] = []
    postprocess = evaluator_module.postprocess

    def recording(maps, image, cfg):  # the objective's own segmentation, kept for the record
        result = postprocess(maps, image, cfg)
        segmented.append(result[0])
        return result

    class TruthEvaluator(RewardEvaluator):
        def image_scores(self, params):
            segmented.clear()
            scores = super().image_scores(params)
            n = ds.num_classes
            conf = np.zeros((len(self.indices), n, n), np.int64)
            k = 0
            for row, i in enumerate(self.indices):
                entry, label = self._images.get(i), ds[i].label
                pred = np.zeros(label.shape, np.int64)
                if entry is not None and entry["labels"]:
                    pred = np.asarray([0, *entry["caption"]])[segmented[k]]
                    k += 1
                t, p = label.ravel().astype(np.int64), pred.ravel()
                keep = t != 255
                conf[row] = np.bincount(t[keep] * n + p[keep], minlength=n * n).reshape(n, n)
            truth[json.dumps(params, sort_keys=True)] = conf.tolist()
            atomic_write_text(path, json.dumps(truth))
            return scores

    evaluator_module.postprocess = recording
    try:
        clip = load_clip("toy", None, device="cpu")
        space = load_space(None, seg.backbone, seg.config)
        ev = TruthEvaluator(seg, ds, indices, ClipScorer(clip, template=ds.clip_template or "{}"), region=("boundary",))
        run_info = {"dataset": ds.describe(), "images": len(indices), "all_classes": False, "model": "toy"}
        run_search(ev, space, iters=iters, seed=seed, out_dir=out, reward="boundary", progress=True, run_info=run_info)
    finally:
        evaluator_module.postprocess = postprocess


def miou(conf: np.ndarray) -> float:
    cm = ConfusionMatrix(conf.shape[-1])
    cm.matrix = conf.sum(axis=0)
    return cm.miou()


def usable(conf: np.ndarray) -> bool:
    """At least half of the labelled classes (over all images) are segmented at all."""
    present = conf.sum(axis=2) > 0  # (images, classes): the class is in the truth
    found = conf.sum(axis=1) > 0  # predicted somewhere
    fg = present[:, 1:]
    return bool(fg.sum() and (fg & found[:, 1:]).sum() >= 0.5 * fg.sum())


def report(seed: int, out: Path) -> dict[str, Any]:
    from scipy.stats import spearmanr

    lines = [json.loads(line) for line in (out / TRACE_FILE).read_text().splitlines() if line]
    truth = json.loads((out / TRUTH_FILE).read_text())
    trials = [Trial.from_json(r) for r in lines]
    trials = [t for t in trials if json.dumps(t.params, sort_keys=True) in truth]
    conf = {t.trial: np.asarray(truth[json.dumps(t.params, sort_keys=True)]) for t in trials}
    true = {t.trial: miou(conf[t.trial]) for t in trials}
    distinct = list({json.dumps(t.params, sort_keys=True): t for t in reversed(trials)}.values())
    rewards = list(trials[0].rewards)
    corr: dict[str, Any] = {}
    for name in rewards:
        xs = [t.rewards[name] for t in distinct]
        ys = [true[t.trial] for t in distinct]
        ok = [k for k, t in enumerate(distinct) if usable(conf[t.trial])]
        corr[name] = {"spearman": round(float(spearmanr(xs, ys)[0]), 4),
                      "spearman_usable": round(float(spearmanr([xs[k] for k in ok], [ys[k] for k in ok])[0]), 4)
                      if len(ok) > 2 else None, "usable": len(ok)}
    picks = {f"argmax_{name}": argmax(trials, name).trial.trial for name in rewards}
    picks["robust"] = robust(trials, "boundary").trial.trial
    base = true[0]
    return {"seed": seed, "trials": len(trials), "distinct": len(distinct), "trial0_miou": round(base, 4),
            "best_true_gain": round(max(true.values()) - base, 4), "correlation": corr,
            "picks": {k: {"trial": v, "gain": round(true[v] - base, 4)} for k, v in picks.items()}}


def table(record: dict[str, Any]) -> str:
    """The docs' development table: per seed, each rule's in-sample gain and each reward's Spearman."""
    rows = record["seeds"]
    rules = list(rows[0]["picks"])
    names = list(rows[0]["correlation"])
    head = ["seed", "trials", "trial 0 mIoU", *[f"`{r}`" for r in rules], *[f"rho `{n}` (usable)" for n in names]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [str(r["seed"]), str(r["trials"]), f"{r['trial0_miou']:.2f}",
                 *[f"{r['picks'][k]['gain']:+.2f}" for k in rules],
                 *[f"{r['correlation'][n]['spearman']:.2f} ({r['correlation'][n]['spearman_usable']:.2f})" for n in names]]
        lines.append("| " + " | ".join(cells) + " |")
    s = record["summary"]
    cells = ["mean", "", "", *[f"{s['mean_gain'][k]:+.2f}" for k in rules],
             *[f"{s['mean_spearman'][n]:.2f}" for n in names]]
    lines.append("| " + " | ".join(cells) + " |")
    cells = ["worst", "", "", *[f"{s['worst_gain'][k]:+.2f}" for k in rules], *[""] * len(names)]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", required=True, help="toy-world seeds, e.g. 100,101,102,103")
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--iters", type=int, default=34)
    ap.add_argument("--runs", default=str(ROOT / "search" / "runs" / "robustness" / "dev"))
    ap.add_argument("--report-only", action="store_true", help="report the runs as they are (no tuning)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        out = Path(args.runs) / f"tune-S{seed}"
        out.mkdir(parents=True, exist_ok=True)
        if not args.report_only:
            run_seed(seed, out, args.images, args.iters)
        rows.append(report(seed, out))
    names = list(rows[0]["correlation"])
    summary = {"mean_gain": {k: round(float(np.mean([r["picks"][k]["gain"] for r in rows])), 4)
                             for k in rows[0]["picks"]},
               "worst_gain": {k: round(float(np.min([r["picks"][k]["gain"] for r in rows])), 4)
                              for k in rows[0]["picks"]},
               "mean_spearman": {n: round(float(np.mean([r["correlation"][n]["spearman"] for r in rows])), 4)
                                 for n in names}}
    record = {"bench": "tune_truth", "images": args.images, "iters": args.iters,
              "note": "gains are true mIoU on the tuning images themselves (in-sample), for rule design",
              "summary": summary, "seeds": rows}
    emit(record, args.json, table(record))


if __name__ == "__main__":
    main()
