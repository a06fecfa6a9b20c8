"""Does ``pnpovss tune`` ever hand a user something worse than the defaults? (prints JSON)

    python bench/tune_robustness.py --pairs 200:300,201:301 --jobs 2 --json bench/results/tune_robustness.json

For each (tuning seed S, held-out seed H) pair it runs exactly what a user runs, as subprocesses:

* ``pnpovss tune --dataset toyworld --seed S --images 120 --iters 34 --out RUNS/tune-S`` (the default
  reward, space and selection rule), then
* ``pnpovss eval --dataset toyworld --seed H --images 150 --preset RUNS/tune-S/best.json`` and the
  same without ``--preset`` (the defaults),

and records per pair the defaults' and the tuned preset's held-out mIoU, the gain, the trial picked
and why (``best.json``'s ``selection``). The paper's reward with argmax (``--reward binary --select
argmax``) is a column too: it is selected from the same trace (same seed and space: the same trials,
the ``binary`` column of every trial is recorded) and its preset evaluated the same way.

Resumable pair by pair and step by step: a finished tune replays its trace in seconds (re-applying
the current selection rule), an evaluation whose JSON exists is not run again. ``--jobs`` runs pairs
in parallel processes (each with one torch thread). ``--stage traces`` runs only the tunes and the
defaults' evaluations (what does not depend on the selection rule).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchio import emit  # noqa: E402  (bench/ is this script's directory)
from pnpovss.search import BEST_FILE, RUN_FILE, TRACE_FILE, Trial  # noqa: E402
from pnpovss.search.select import argmax, paper_choice, select  # noqa: E402


def parse_pairs(text: str) -> list[tuple[int, int]]:
    pairs = []
    for part in text.split(","):
        s, _, h = part.strip().partition(":")
        pairs.append((int(s), int(h)))
    return pairs


def pnpovss(*args: str, log: Path) -> None:
    """Run the CLI as a user does (``python -m pnpovss``), output appended to ``log``."""
    cmd = [sys.executable, "-m", "pnpovss", *args]
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")


def evaluate(args: argparse.Namespace, runs: Path, held_out: int, name: str, preset: Path | None, log: Path) -> float:
    out = runs / f"eval-{name}-H{held_out}.json"
    if not out.is_file():
        extra = ["--preset", str(preset)] if preset else []
        pnpovss("eval", "--dataset", args.dataset, "--seed", str(held_out), "--images", str(args.eval_images),
                "--threads", "1", *extra, "--json", str(out), log=log)
    return float(json.loads(out.read_text())["miou"])


def evaluate_trial(args: argparse.Namespace, runs: Path, tune_dir: Path, run: dict[str, Any], held_out: int,
                   trial: Trial, name: str, known: dict[int, float], log: Path) -> float:
    """Held-out mIoU of another rule's pick: the preset tune would write for that trial, evaluated
    (``known``: trials already evaluated, trial 0 and tune's own pick)."""
    if trial.trial in known:
        return known[trial.trial]
    preset = tune_dir / f"{name}-t{trial.trial}.json"
    if not preset.is_file():  # what tune writes for that trial: its base configuration + the trial's params
        from pnpovss.config import PipelineConfig
        from pnpovss.preset_files import save_preset

        config = PipelineConfig().replace(**run["base_config"]).replace(**trial.params)
        save_preset(preset, config, trial=trial.trial, selected_by=name)
    return evaluate(args, runs, held_out, f"S{run['seed']}-t{trial.trial}-{name}", preset, log)


def run_pair(args: argparse.Namespace, runs: Path, pair: tuple[int, int]) -> dict[str, Any] | None:
    seed, held_out = pair
    tune_dir = runs / f"tune-S{seed}"
    log = runs / f"log-S{seed}-H{held_out}.txt"
    t0 = time.time()
    pnpovss("tune", "--dataset", args.dataset, "--seed", str(seed), "--images", str(args.tune_images),
            "--iters", str(args.iters), "--threads", "1", "--out", str(tune_dir), log=log)
    defaults = evaluate(args, runs, held_out, "defaults", None, log)
    if args.stage == "traces":
        return None
    best = json.loads((tune_dir / BEST_FILE).read_text())
    trials = [Trial.from_json(json.loads(line)) for line in (tune_dir / TRACE_FILE).read_text().splitlines() if line]
    picked = best["trial"]
    tuned = defaults if picked == 0 else evaluate(args, runs, held_out, f"S{seed}-t{picked}", tune_dir / BEST_FILE, log)
    run = json.loads((tune_dir / RUN_FILE).read_text())
    paper = paper_choice(trials)  # the paper's reward and rule
    previous = argmax(trials, run["reward"]).trial  # argmax of the default reward: tune's rule before `robust`
    other = {name: evaluate_trial(args, runs, tune_dir, run, held_out, trial, name, {0: defaults, picked: tuned}, log)
             for name, trial in (("paper", paper), ("previous", previous))}
    t1 = time.perf_counter()  # the selection rule's own cost: tune applies it after every trial
    for k in range(1, len(trials) + 1):
        select(trials[:k], "robust", run["reward"])
    select_seconds = time.perf_counter() - t1
    return {"tune_seed": seed, "held_out_seed": held_out, "defaults_miou": round(defaults, 4),
            "tuned_miou": round(tuned, 4), "gain": round(tuned - defaults, 4), "picked_trial": picked,
            "picked_params": best["params"], "selection": best.get("selection"),
            "paper_trial": paper.trial, "paper_params": paper.params, "paper_miou": round(other["paper"], 4),
            "paper_gain": round(other["paper"] - defaults, 4), "previous_trial": previous.trial,
            "previous_miou": round(other["previous"], 4), "previous_gain": round(other["previous"] - defaults, 4),
            "trials": len(trials),
            "tune_seconds": round(sum(t.seconds for t in trials), 1), "select_seconds": round(select_seconds, 3),
            "space": run["space"],
            "seconds_this_call": round(time.time() - t0, 1)}


def why(row: dict[str, Any]) -> str:
    """The selection's reason, short: the winner's lead, or the check the best challenger failed."""
    sel = row.get("selection") or {}
    checks = sel.get("checks") or []
    if row["picked_trial"]:
        c = checks[-1]
        return f"z {c['z']:.2f}, halves {c['half_z'][0]:.2f} / {c['half_z'][1]:.2f}"
    if not checks:
        return "kept: no trial above trial 0"
    return f"kept: trial {checks[0]['trial']} failed {' + '.join(checks[0]['failed'])}"


def table(rows: list[dict[str, Any]]) -> str:
    """The docs' table: worst pair first."""
    lines = ["| tuning seed | held-out seed | defaults | tuned | gain | picked trial | why | argmax `boundary` (previous default) | paper: argmax `binary` |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["gain"], r["tune_seed"])):
        lines.append(f"| {r['tune_seed']} | {r['held_out_seed']} | {r['defaults_miou']:.2f} | {r['tuned_miou']:.2f} | "
                     f"{r['gain']:+.2f} | {r['picked_trial']} | {why(r)} | {r['previous_gain']:+.2f} | "
                     f"{r['paper_gain']:+.2f} |")
    s = summary(rows)
    lines.append(f"| mean | | | | **{s['mean_gain']:+.2f}** | | kept the defaults on {s['kept_defaults']} of "
                 f"{s['pairs']} | {s['previous_mean_gain']:+.2f} | {s['paper_mean_gain']:+.2f} |")
    lines.append(f"| worst | | | | **{s['worst_gain']:+.2f}** | | | {s['previous_worst_gain']:+.2f} | "
                 f"{s['paper_worst_gain']:+.2f} |")
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    gains = [r["gain"] for r in rows]
    paper = [r["paper_gain"] for r in rows]
    return {"pairs": len(rows), "mean_gain": round(sum(gains) / len(gains), 4), "worst_gain": round(min(gains), 4),
            "best_gain": round(max(gains), 4), "pairs_worse_than_minus_1": sum(g < -1.0 for g in gains),
            "kept_defaults": sum(r["picked_trial"] == 0 for r in rows),
            "paper_mean_gain": round(sum(paper) / len(paper), 4), "paper_worst_gain": round(min(paper), 4),
            "previous_mean_gain": round(sum(r["previous_gain"] for r in rows) / len(rows), 4),
            "previous_worst_gain": round(min(r["previous_gain"] for r in rows), 4),
            "select_share_of_tune_time": round(sum(r["select_seconds"] for r in rows)
                                               / sum(r["tune_seconds"] for r in rows), 5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", required=True, help="tuning:held-out seed pairs, e.g. 200:300,201:301")
    ap.add_argument("--dataset", default="toyworld")
    ap.add_argument("--tune-images", type=int, default=120)
    ap.add_argument("--eval-images", type=int, default=150)
    ap.add_argument("--iters", type=int, default=34)
    ap.add_argument("--jobs", type=int, default=1, help="pairs run in parallel processes")
    ap.add_argument("--runs", default=None, help="run directory (default: search/runs/robustness/DATASET)")
    ap.add_argument("--stage", choices=["all", "traces"], default="all")
    ap.add_argument("--set-name", default="", help="a name for this set of pairs, recorded (e.g. development)")
    ap.add_argument("--json", default=None, help="also write the record here")
    args = ap.parse_args()
    pairs = parse_pairs(args.pairs)
    runs = Path(args.runs or ROOT / "search" / "runs" / "robustness" / args.dataset)
    runs.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = [r for r in pool.map(lambda p: run_pair(args, runs, p), pairs) if r is not None]
    if not rows:
        return
    record = {"bench": "tune_robustness", "dataset": args.dataset, "set": args.set_name,
              "tune_images": args.tune_images, "eval_images": args.eval_images, "iters": args.iters,
              "runs": os.path.relpath(runs, ROOT), "summary": summary(rows), "pairs": rows}
    emit(record, args.json, table(rows))


if __name__ == "__main__":
    main()
