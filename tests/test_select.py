"""The selection rules of ``pnpovss tune`` on synthetic per-image reward tables: each case the
``robust`` rule is built to reject is rejected, a clear and consistent lead is chosen, and with no
eligible trial the defaults are kept and ``best.json`` / ``run.json`` say so."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from pnpovss import PipelineConfig
from pnpovss.distributed import DistContext
from pnpovss.errors import PnpOvssError
from pnpovss.search import SearchSpace, TraceLog, run_search
from pnpovss.search.select import ROBUST, Decision, argmax, check, robust, select
from pnpovss.search.stats import paired_z, totals
from pnpovss.search.trace import Trial

N = 120
REWARDS = ("binary", "continuous", "boundary")


def make_trial(t: int, columns: dict[str, np.ndarray], base: dict[str, np.ndarray] | None = None) -> Trial:
    arr = np.stack([columns[r] for r in REWARDS], axis=1)
    base_arr = arr if base is None else np.stack([base[r] for r in REWARDS], axis=1)
    return Trial(trial=t, params={"threshold": 0.05 * (t + 1)}, reward=float(arr[:, 2].sum()),
                 rewards=totals(arr, REWARDS), z=paired_z(arr, base_arr, REWARDS),
                 images={**{r: columns[r].tolist() for r in REWARDS}, "coverage": columns["coverage"].tolist()})


@pytest.fixture
def base_columns():
    rng = np.random.default_rng(0)
    return {"binary": rng.integers(0, 3, N).astype(float), "continuous": rng.normal(0.5, 0.2, N),
            "boundary": rng.normal(15, 5, N), "coverage": rng.uniform(0.1, 0.2, N)}


def shifted(base, **gains):
    """Columns of a challenger: the base's plus per-column per-image gains."""
    return {k: base[k] + gains.get(k, np.zeros(N)) for k in base}


def test_a_clear_consistent_lead_is_chosen(base_columns):
    rng = np.random.default_rng(1)
    base = make_trial(0, base_columns)
    good = make_trial(1, shifted(base_columns, boundary=rng.normal(4, 3, N), continuous=rng.normal(0.02, 0.1, N)),
                      base_columns)
    decision = robust([base, good], "boundary")
    assert decision.trial is good and "trial 1 leads" in decision.reason
    assert decision.checks[0]["failed"] == [] and min(decision.checks[0]["half_z"]) >= ROBUST.half_z


def test_an_insignificant_lead_is_rejected(base_columns):
    rng = np.random.default_rng(2)
    noisy = make_trial(1, shifted(base_columns, boundary=rng.normal(0.3, 6, N)), base_columns)
    base = make_trial(0, base_columns)
    assert noisy.rewards["boundary"] > base.rewards["boundary"]
    decision = robust([base, noisy], "boundary")
    assert decision.trial is base and "lead" in decision.checks[0]["failed"]
    assert argmax([base, noisy], "boundary").trial is noisy  # the paper's rule takes it


def test_a_lead_carried_by_one_half_of_the_images_is_rejected(base_columns):
    gain = np.zeros(N)
    gain[0::2] = np.random.default_rng(3).normal(6, 2, N // 2)  # only the even positions gain
    lopsided = make_trial(1, shifted(base_columns, boundary=gain), base_columns)
    c = check(lopsided, make_trial(0, base_columns), "boundary")
    assert c["z"] >= ROBUST.min_z and c["half_z"][1] < ROBUST.half_z and c["failed"] == ["halves"]


def test_a_lead_the_other_rewards_contradict_is_rejected(base_columns):
    rng = np.random.default_rng(4)
    contested = make_trial(1, shifted(base_columns, boundary=rng.normal(4, 3, N), binary=-np.ones(N),
                                      continuous=-rng.uniform(0.05, 0.2, N)), base_columns)
    decision = robust([make_trial(0, base_columns), contested], "boundary")
    assert decision.trial.trial == 0 and decision.checks[0]["failed"] == ["agree"]
    assert decision.checks[0]["net_loss_share"]["binary"] == 1.0


def test_segments_spreading_over_the_image_are_rejected(base_columns):
    rng = np.random.default_rng(5)
    spread = make_trial(1, shifted(base_columns, boundary=rng.normal(4, 3, N), coverage=np.full(N, 0.6)), base_columns)
    decision = robust([make_trial(0, base_columns), spread], "boundary")
    assert decision.trial.trial == 0 and decision.checks[0]["failed"] == ["coverage"]


@pytest.mark.parametrize("factor, rejected", [(1.4, False), (1.6, True), (4.0, True)])
def test_coverage_is_judged_relative_to_trial_0(base_columns, factor, rejected):
    rng = np.random.default_rng(8)
    wider = make_trial(1, shifted(base_columns, boundary=rng.normal(4, 3, N), coverage=base_columns["coverage"]
                                  * (factor - 1)), base_columns)
    c = check(wider, make_trial(0, base_columns), "boundary")
    assert c["coverage_ratio"] == pytest.approx(factor) and ("coverage" in c["failed"]) == rejected


def test_the_best_eligible_trial_wins_over_a_better_rewarded_ineligible_one(base_columns):
    rng = np.random.default_rng(6)
    base = make_trial(0, base_columns)
    spread = make_trial(1, shifted(base_columns, boundary=rng.normal(8, 3, N), coverage=np.full(N, 0.7)), base_columns)
    good = make_trial(2, shifted(base_columns, boundary=rng.normal(4, 3, N)), base_columns)
    decision = robust([base, spread, good], "boundary")
    assert decision.trial is good and [c["trial"] for c in decision.checks] == [1, 2]


def test_select_by_name_and_unknown_rule(base_columns):
    trials = [make_trial(0, base_columns)]
    assert isinstance(select(trials, "argmax", "boundary"), Decision)
    with pytest.raises(PnpOvssError, match="selection rule must be one of robust, argmax"):
        select(trials, "vote", "boundary")


def fake_evaluator(tables: list[np.ndarray]):
    """An objective whose trial k returns ``tables[k]`` (rows: images; columns: rewards, coverage)."""
    calls = {"n": 0}

    def per_image(params):
        calls["n"] += 1
        return tables[min(int(round(params["threshold"] / 0.05)) - 1, len(tables) - 1)]

    return SimpleNamespace(rewards=REWARDS, columns=(*REWARDS, "coverage"), dist=DistContext(), run_info=dict,
                           base=PipelineConfig().replace(threshold=0.05), per_image=per_image, calls=calls)


def test_no_eligible_trial_keeps_the_defaults_and_says_so(base_columns, tmp_path):
    rng = np.random.default_rng(7)
    base = np.stack([base_columns[c] for c in (*REWARDS, "coverage")], axis=1)
    noise = rng.normal(0, 8, N)
    noisy = base + np.stack([np.zeros(N), np.zeros(N), noise - noise.mean() + 0.5, np.zeros(N)], axis=1)
    space = SearchSpace({"threshold": [0.05, 0.1]})
    ev = fake_evaluator([base, noisy])
    decision = run_search(ev, space, iters=4, seed=0, out_dir=tmp_path, reward="boundary", progress=False)
    best = json.loads((tmp_path / "best.json").read_text())
    run = json.loads((tmp_path / "run.json").read_text())
    assert decision.trial.trial == 0 and best["trial"] == 0 and best["selection"]["rule"] == "robust"
    assert best["selection"]["reason"].startswith("kept the defaults") and run["selection"] == best["selection"]
    # the paper's rule, replayed from the trace (nothing evaluated again), takes the noisy lead
    calls = ev.calls["n"]
    paper = run_search(ev, space, iters=4, seed=0, out_dir=tmp_path, reward="boundary", progress=False,
                       selection="argmax")
    assert paper.trial.trial != 0 and ev.calls["n"] == calls
    assert json.loads((tmp_path / "best.json").read_text())["selection"]["rule"] == "argmax"
    assert len(TraceLog(tmp_path / "trace.jsonl").load()) == 4


def test_tuning_tables_are_the_recorded_tuning_benches():
    """The docs' tuning tables (docs/generated/, on docs/results/tuning.md) are what the benches
    print from their recorded JSON."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    shown = "".join((root / "docs" / "generated" / f"{n}.md").read_text() for n in ("tune-truth-dev", "tune-robustness"))
    sys.path.insert(0, str(root / "bench"))
    try:
        for script, record, arg in (("tune_truth", "tune_truth_dev.json", None),
                                    ("tune_robustness", "tune_robustness.json", "pairs")):
            spec = importlib.util.spec_from_file_location(script, root / "bench" / f"{script}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            data = json.loads((root / "bench" / "results" / record).read_text())
            assert module.table(data[arg] if arg else data) in shown, script
    finally:
        sys.path.remove(str(root / "bench"))
