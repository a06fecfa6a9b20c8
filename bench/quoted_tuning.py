"""Named numbers of the tuning pages (``{{tune.*}}``, ``{{select.*}}``), computed from the tuning
records in bench/results/, the traces under search/runs/ that those records were made from, and the
reward's and selection rule's constants in the code; ``bench/quoted.py``'s ``values()`` adds them."""

from __future__ import annotations

import functools
import json
import statistics
from pathlib import Path

from records import ROOT, _span, one, record

RUNS = ROOT / "search" / "runs"


BOUNDARY_RULES = ("argmax_boundary", "robust", "previous")
"""The picks made with the ``boundary`` reward: its argmax (``argmax_boundary`` on the development
seeds, ``previous`` in the seed-pair records: tune's rule before ``robust``) and the current rule."""


LOSS = -1.0
"""A pick worse than the defaults by more than this many points is a loss (``pairs_worse_than_minus_1``)."""


@functools.cache
def _trace(path: Path) -> dict[int, dict]:
    """A tune trace's trials by number."""
    return {t["trial"]: t for t in map(json.loads, path.read_text().splitlines())}


def _coverage(trial: dict) -> float:
    """The share of the image a trial's segments cover, on average over the images."""
    return statistics.mean(trial["images"]["coverage"])


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _params(p: dict) -> str:
    head = "" if p["head"] is None else f", head {p['head']}"
    return (f"{p['saliency']}, layer {p['layer']}{head}, threshold {p['threshold']:g}, "
            f"DropOut T = {p['drop_iters']}, k = {p['drop_k']}")


def _boundary_picks() -> list[tuple[float, float]]:
    """(gain, coverage over trial 0's) of every ``boundary`` pick the development seeds and the seed
    pairs record."""
    picks = []
    for seed in record("tune_truth_dev.json")["seeds"]:
        trials = _trace(RUNS / "robustness" / "dev" / f"tune-S{seed['seed']}" / "trace.jsonl")
        picks += [(p["gain"], _coverage(trials[p["trial"]]) / _coverage(trials[0]))
                  for rule, p in seed["picks"].items() if rule in BOUNDARY_RULES]
    for name in ("tune_robustness_dev.json", "tune_robustness.json"):
        for pair in record(name)["pairs"]:
            trials = _trace(RUNS / "robustness" / "toyworld" / f"tune-S{pair['tune_seed']}" / "trace.jsonl")
            for trial, gain in ((pair["picked_trial"], pair["gain"]), (pair.get("previous_trial"), pair.get("previous_gain"))):
                if trial is not None:
                    picks.append((gain, _coverage(trials[trial]) / _coverage(trials[0])))
    return picks


def _rule(v: dict[str, str]) -> None:
    """The reward's and the selection rule's constants (read from the code) and what they were set on."""
    from pnpovss.reward import MASK_SIGMA
    from pnpovss.reward_region import BAND_FRACTION
    from pnpovss.search.select import ROBUST

    v["tune.band"] = f"{BAND_FRACTION:.0%}"
    v["tune.mask-sigma"] = f"{MASK_SIGMA:g}"
    v["select.min-z"], v["select.half-z"] = f"{ROBUST.min_z:g}", f"{ROBUST.half_z:g}"
    v["select.max-loss-share"] = f"{ROBUST.max_loss_share:g}"
    v["select.max-coverage"] = f"{ROBUST.max_coverage_ratio:g}"
    picks = _boundary_picks()
    v["tune.losing.coverage"] = _span([c for g, c in picks if g < LOSS])
    v["tune.winning.coverage"] = f"{max(c for g, c in picks if g > 0):.2f}"
    held, dev = record("tune_robustness.json"), record("tune_robustness_dev.json")
    shares = [share for pair in dev["pairs"] + held["pairs"] if pair["gain"] > 0
              for check in pair["selection"]["checks"] if check["trial"] == pair["picked_trial"]
              for share in check["net_loss_share"].values()]
    v["tune.winning.loss-share"] = f"{max(shares):.2f}"
    v["tune.select-share"] = f"{max(r['summary']['select_share_of_tune_time'] for r in (held, dev)):.3%}"
    for name, rule in (("argmax", "previous"), ("paper", "paper")):
        worst = min(held["pairs"], key=lambda p: p[f"{rule}_gain"])
        v[f"tune.{name}.worst"] = (f"{worst['defaults_miou']:.1f} -> {worst[f'{rule}_miou']:.1f} mIoU "
                                   f"(pair {worst['tune_seed']}->{worst['held_out_seed']})")


def _development(v: dict[str, str]) -> None:
    """The development seeds 100-103 (in-sample truth) and the first version's loss on pair 205->305."""
    truth = record("tune_truth_dev.json")
    seed = min(truth["seeds"], key=lambda s: s["picks"]["argmax_boundary"]["gain"])
    v["tune.dev.worst"] = f"{seed['picks']['argmax_boundary']['gain']:.1f} points on development seed {seed['seed']}"
    v["tune.dev.worst.seed"] = str(seed["seed"])
    trials = _trace(RUNS / "robustness" / "dev" / f"tune-S{seed['seed']}" / "trace.jsonl")
    pick = trials[seed["picks"]["argmax_boundary"]["trial"]]
    v["tune.dev.worst.params"] = _params(pick["params"])
    v["tune.dev.worst.coverage"] = f"{_coverage(pick):.2f} of the image against trial 0's {_coverage(trials[0]):.2f}"
    v["tune.dev.worst.z"] = f"{pick['z']['boundary']:.2f}"
    best = {s["seed"]: max(s["correlation"], key=lambda r: s["correlation"][r]["spearman"]) for s in truth["seeds"]}
    by_reward: dict[str, list[str]] = {}
    for s, reward in best.items():
        by_reward.setdefault(reward, []).append(str(s))
    v["tune.dev.best-ranking"] = ", ".join(f"`{r}` on seed{'s' if len(s) > 1 else ''} {_and(s)}" for r, s in by_reward.items())
    v["tune.dev.trials"] = _and([f"{s['trials']} on seed {s['seed']}" for s in truth["seeds"]])

    # the first version took boundary's argmax there on a clean lead; the current rule turns it down on coverage only
    pair, check = next((p, c) for p in record("tune_robustness_dev.json")["pairs"] for c in p["selection"]["checks"]
                       if c["failed"] == ["coverage"] and c["trial"] == p["previous_trial"])
    trials = _trace(RUNS / "robustness" / "toyworld" / f"tune-S{pair['tune_seed']}" / "trace.jsonl")
    first = trials[pair["previous_trial"]]
    v["tune.first.pair"] = f"{pair['tune_seed']}->{pair['held_out_seed']}"
    v["tune.first.params"] = _params(first["params"])
    v["tune.first.lead"] = f"z {check['z']:.2f}, halves {check['half_z'][0]:.2f} / {check['half_z'][1]:.2f}"
    v["tune.first.coverage"] = f"{check['coverage_ratio']:.1f}"
    v["tune.first.more"] = f"{_coverage(first) - _coverage(trials[0]):.2f}"
    v["tune.first.loss"] = f"{-pair['previous_gain']:.2f}"


def _presence_run(v: dict[str, str]) -> None:
    """The recorded presence tuning run (search/runs/toyworld_presence/)."""
    run = RUNS / "toyworld_presence"
    best = json.loads((run / "tags" / "best.json").read_text())
    default, tuned = (json.loads((run / f"eval_{n}_seed2.json").read_text()) for n in ("default", "tags"))
    v["presence-tune.default"] = f"{best['run']['base_config']['presence_threshold']:g}"
    v["presence-tune.tuned"] = f"{best['params']['presence_threshold']:g}"
    v["presence-tune.z"] = f"{best['z']['tags']:.2f}"
    v["presence-tune.f1"] = f"{one(default['tags']['f1'])} vs {one(tuned['tags']['f1'])}"
    v["presence-tune.miou"] = f"{one(tuned['miou'])} mIoU against {one(default['miou'])}"


def tuning_values(v: dict[str, str]) -> None:
    """Every ``{{tune.*}}``, ``{{select.*}}`` and ``{{presence-tune.*}}`` value."""
    for part in (_rule, _development, _presence_run):
        part(v)
