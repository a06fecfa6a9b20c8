"""The search loop: random search proposals, each trial scored by the objective, recorded and
selected; resumable and multi-process.

Resume. Every finished trial is appended to ``OUT/trace.jsonl`` (:mod:`pnpovss.search.trace`).
Proposals come from gradient-free-optimizers' ask/tell ``RandomSearchOptimizer`` seeded with
``--seed``; trial 0 is the base configuration (the defaults), given to the optimizer as its
``initial_evaluations``. Random search proposals depend only on its seeded generator, never on
scores, so a restarted run re-creates the optimizer, replays the recorded trials through ask/tell
(checking that each proposal equals the recorded one, which also catches a changed seed or space)
and continues with the first unrecorded trial: the final trace equals an uninterrupted run's. A
truncated last line (a kill mid-write) is dropped. ``OUT/run.json`` records what defines the run;
restarting in the same ``OUT`` with different settings is refused.

Selection. After every trial the selection rule (:mod:`pnpovss.search.select`: ``robust``, the
default, or the paper's ``argmax``) is applied to the trials so far and ``best.json`` follows its
choice; every trial records its per-image rewards, so the rule reads only the trace and a replay
with another rule re-selects without recomputing anything.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from ..preset_files import save_preset
from ..errors import PnpOvssError
from ..reward import REWARD_VERSION
from .evaluator import RewardEvaluator
from .select import DEFAULT_SELECTION, SELECTIONS, Decision, select
from .space import SearchSpace, canon
from .stats import paired_z, per_image_array, totals
from .trace import BEST_FILE, TRACE_FILE, TRACE_FORMAT, TraceLog, Trial, check_run, exclusive, record_selection


def run_search(evaluator: RewardEvaluator, space: SearchSpace, *, iters: int, seed: int, out_dir: str | os.PathLike[str],
               reward: str = "binary", min_z: float | None = None, run_info: Mapping[str, Any] | None = None,
               progress: bool = True, selection: str = DEFAULT_SELECTION) -> Decision:
    """Random search for ``iters`` trials (trial 0 = the base configuration), resuming whatever
    ``out_dir`` already holds. Returns the selection rule's :class:`~pnpovss.search.select.Decision`
    (the best trial and why); ``best.json`` is its preset.

    ``selection`` names the rule (:data:`~pnpovss.search.select.SELECTIONS`: ``robust``, the
    default, or the paper's ``argmax``); ``min_z`` is the significance a challenger needs (None: the
    rule's own, 0 for argmax, 2 for robust). Both only select among recorded trials, so they may
    change between restarts (a replay re-selects without running anything)."""
    from gradient_free_optimizers.ask_tell import RandomSearchOptimizer
    from tqdm import tqdm

    if reward not in evaluator.rewards:
        raise PnpOvssError(f"reward must be one of {', '.join(evaluator.rewards)}, got {reward!r}")
    if iters < 1:
        raise PnpOvssError(f"--iters must be >= 1, got {iters}")
    if selection not in SELECTIONS:
        raise PnpOvssError(f"selection rule must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    dist = evaluator.dist
    out = Path(out_dir)
    main = dist.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    info = canon({**(run_info or {}), "seed": seed, "reward": reward, "reward_version": REWARD_VERSION,
                  "trace_format": TRACE_FORMAT,
                  "space": space.values, "base_config": evaluator.base.to_dict(), **evaluator.run_info()})
    with exclusive(out, main):
        check_run(out, info, write=main)
        log = TraceLog(out / TRACE_FILE)
        trace = log.load(repair=main)
        dist.barrier()
        state = _SearchState(evaluator, log, trace, reward, min_z, out, info, main, selection)
        evaluator.progress = progress
        first = state.trial(0, space.params_of(evaluator.base))  # builds the map cache if it must run
        assert state.best is not None
        bar = tqdm(total=iters, initial=max(1, min(len(trace), iters)), unit="trial", desc="tune",
                   disable=not (progress and main), file=sys.stderr)
        opt = RandomSearchOptimizer(space.gfo(), initial_evaluations=[(space.encode(first.params), first.reward)],
                                    random_state=seed)
        bar.set_postfix(best=state.best.trial.reward)
        for t in range(1, iters):
            params = space.decode(opt.ask(1)[0])
            rec = state.trial(t, params)
            opt.tell([rec.reward])
            if t >= len(trace):
                bar.update(1)
                bar.set_postfix(best=state.best.trial.reward)
        bar.close()
        state.write_best(final=True, iters=iters)
    return state.best


class _SearchState:
    """Trial bookkeeping shared by fresh and replayed trials."""

    def __init__(self, evaluator: RewardEvaluator, log: TraceLog, trace: list[dict], reward: str, min_z: float | None,
                 out: Path, info: dict, main: bool, selection: str) -> None:
        self.evaluator, self.log, self.trace, self.reward, self.min_z = evaluator, log, trace, reward, min_z
        self.out, self.info, self.main, self.selection = out, info, main, selection
        self.best: Decision | None = None
        self.memo: dict[str, Trial] = {}
        self.trials: list[Trial] = []

    def trial(self, t: int, params: dict) -> Trial:
        params = canon(params)
        key = json.dumps(params, sort_keys=True)
        if t < len(self.trace):
            rec = self.trace[t]
            if rec.get("trial") != t or rec.get("params") != params:
                raise PnpOvssError(
                    f"{self.log.path} trial {t} has params {rec.get('params')} but this run proposes {params}; "
                    "it was written by a different search; use another --out"
                )
            trial = Trial.from_json(rec, where=f"{self.log.path} trial {t}")
        else:
            t0 = time.perf_counter()
            repeat = key in self.memo
            if repeat:
                earlier = self.memo[key]
                rewards, z, per_image = earlier.rewards, earlier.z, earlier.images
            else:
                images = self.evaluator.per_image(params)
                names, columns = self.evaluator.rewards, self.evaluator.columns
                base = images if t == 0 else per_image_array(self.trials[0], columns)
                n = len(names)
                rewards, z = totals(images[:, :n], names), paired_z(images[:, :n], base[:, :n], names)
                per_image = {name: images[:, k].tolist() for k, name in enumerate(columns)}
            trial = Trial(trial=t, params=params, reward=rewards[self.reward], rewards=rewards, z=z, images=per_image,
                          repeat=repeat, seconds=round(time.perf_counter() - t0, 4))
            if self.main:
                self.log.append(trial.to_json())
        self.trials.append(trial)
        self.memo.setdefault(key, trial)
        best = select(self.trials, self.selection, self.reward, self.min_z)
        if self.best is None or best.trial is not self.best.trial:
            self.best = best
            self.write_best()
        self.best = best
        return trial

    def write_best(self, final: bool = False, iters: int | None = None) -> None:
        if not self.main:
            return
        assert self.best is not None
        best, decision = self.best.trial, self.best.to_json()
        config = self.evaluator.base.replace(**best.params)
        meta = {"params": best.params, "reward": best.reward, "rewards": best.rewards, "z": best.z,
                "trial": best.trial, "reward_variant": self.reward, "min_z": self.min_z, "selection": decision,
                "run": self.info, "finished": final, "iters": iters}
        save_preset(self.out / BEST_FILE, config, **meta)
        if final:  # the outcome beside what defined the run (check_run ignores this key)
            record_selection(self.out, decision)
