"""Selection rules: which recorded trial becomes ``best.json``, and why.

A rule sees only the recorded trials (their per-image rewards, ``Trial.images``), so it can be
applied, or changed, by replaying a trace without running anything (``pnpovss tune --select``).

``argmax`` is the paper's rule: the trial of highest total reward (with ``--min-z``, among trials
whose paired z-score against trial 0 reaches it).

``robust`` (the default) keeps the defaults (trial 0) unless a challenger's lead is real. Argmax
over tens of noisy trials picks whichever trial the reward overrates most; on the toy world that was
sometimes a configuration 27 mIoU *worse* than the defaults (low thresholds with DropOut, whose
segments spread over the whole image). A challenger is eligible only if, against trial 0, image by
image (see :func:`check`):

* ``lead``: its reward gain has a paired z-score of at least ``min_z`` (2) over all images;
* ``halves``: the gain holds on each half of the images (even / odd positions) with z of at least
  ``half_z`` (1), so one lucky subset cannot carry it;
* ``agree``: it is not judged clearly worse by the other rewards recorded: for each of them, the
  share of images on which it loses to trial 0 is at most ``max_loss_share`` (0.6) beyond the share
  on which it wins, i.e. (losses - wins) / images <= that bound;
* ``coverage``: its segments cover, on average over the images, at most ``max_coverage_ratio``
  (1.5) times the area trial 0's cover: segments spreading over the background around their objects
  are the case the ``boundary`` reward misjudges (on the toy world's recorded runs every losing
  ``boundary`` pick covered more than twice trial 0's area, every winning one less than 1.5 times:
  docs/results/tuning.md, computed from the traces).

The eligible trial of highest reward wins. Every check's numbers are recorded for the winner and for
the trials the rule passed over (``Decision.checks``), so ``best.json`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import PnpOvssError
from .stats import Z_CAP, paired_z
from .trace import Trial

COVERAGE = "coverage"


@dataclass(frozen=True)
class RobustRule:
    """The thresholds of the ``robust`` rule (module doc)."""

    min_z: float = 2.0
    half_z: float = 1.0
    max_loss_share: float = 0.6
    max_coverage_ratio: float = 1.5


ROBUST = RobustRule()


@dataclass
class Decision:
    """The chosen trial and the reason, as ``best.json`` and the summary line report them."""

    trial: Trial
    rule: str
    reward: str
    reason: str
    """One line: why this trial (or why the defaults were kept)."""
    checks: list[dict[str, Any]] = field(default_factory=list)
    """Per challenger considered (best reward first, up to the winner): its numbers and what failed."""

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "reward": self.reward, "trial": self.trial.trial, "reason": self.reason,
                "z": self.trial.z, "checks": self.checks}


def _column(trial: Trial, name: str) -> np.ndarray:
    return np.asarray(trial.images[name], dtype=np.float64)


def _z(gain: np.ndarray) -> float:
    return paired_z(gain[:, None], np.zeros((len(gain), 1)), ("x",))["x"]


def check(trial: Trial, base: Trial, reward: str, rule: RobustRule = ROBUST) -> dict[str, Any]:
    """The ``robust`` rule's numbers for ``trial`` against ``base`` and the list of checks it fails."""
    gain = _column(trial, reward) - _column(base, reward)
    n = len(gain)
    halves = [round(_z(gain[k::2]), 3) if n > 2 else 0.0 for k in (0, 1)]
    out: dict[str, Any] = {"trial": trial.trial, "reward": trial.rewards[reward], "z": round(_z(gain), 3),
                           "half_z": halves, "net_loss_share": {}, "failed": []}
    if out["z"] < rule.min_z:
        out["failed"].append("lead")
    if min(halves) < rule.half_z:
        out["failed"].append("halves")
    for other in trial.rewards:
        if other == reward:
            continue
        diff = _column(trial, other) - _column(base, other)
        share = float((np.sum(diff < 0) - np.sum(diff > 0)) / n)
        out["net_loss_share"][other] = round(share, 3)
        if share > rule.max_loss_share and "agree" not in out["failed"]:
            out["failed"].append("agree")
    if COVERAGE in trial.images and COVERAGE in base.images:
        base_cov = float(np.mean(_column(base, COVERAGE)))
        ratio = float(np.mean(_column(trial, COVERAGE))) / base_cov if base_cov > 0 else 1.0  # nothing to compare to
        out["coverage_ratio"] = round(ratio, 4)
        if ratio > rule.max_coverage_ratio:
            out["failed"].append("coverage")
    return out


def robust(trials: Sequence[Trial], reward: str, rule: RobustRule = ROBUST) -> Decision:
    """The ``robust`` rule (module doc)."""
    base = trials[0]
    # a repeated proposal (``Trial.repeat``) carries an earlier trial's scores: judged once
    challengers = sorted((t for t in trials[1:] if not t.repeat and t.rewards[reward] > base.rewards[reward]),
                         key=lambda t: (-t.rewards[reward], t.trial))
    checks = []
    for t in challengers:
        c = check(t, base, reward, rule)
        checks.append(c)
        if not c["failed"]:
            why = (f"trial {t.trial} leads trial 0 on {reward} (z {c['z']:.2f}, halves {c['half_z'][0]:.2f}/"
                   f"{c['half_z'][1]:.2f}), no other reward against it, coverage within bounds")
            return Decision(t, "robust", reward, why, checks)
    if not challengers:
        why = f"kept the defaults: no trial scores above trial 0 on {reward}"
    else:
        top = checks[0]
        why = (f"kept the defaults: none of the {len(challengers)} trials above trial 0 on {reward} passed "
               f"(the top one, trial {top['trial']}, failed {', '.join(top['failed'])})")
    return Decision(base, "robust", reward, why, checks)


def argmax(trials: Sequence[Trial], reward: str, min_z: float = 0.0) -> Decision:
    """The paper's rule: the trial of highest total ``reward`` (the first one on a tie); with
    ``min_z > 0`` only trials whose paired z-score against trial 0 reaches ``min_z`` compete."""
    best = trials[0]
    for trial in trials[1:]:
        if trial.rewards[reward] > best.rewards[reward] and trial.z[reward] >= min_z:
            best = trial
    guard = f" among trials with z >= {min_z:g}" if min_z > 0 else ""
    why = (f"trial {best.trial} has the highest {reward}{guard} (z vs trial 0 {best.z[reward]:.2f})" if best.trial
           else f"no trial scores above trial 0 on {reward}{guard}: the defaults are kept")
    return Decision(best, "argmax", reward, why)


SELECTIONS: Mapping[str, Callable[..., Decision]] = {"robust": robust, "argmax": argmax}
"""Rule name -> rule (``--select``); ``robust`` is the default."""
DEFAULT_SELECTION = "robust"


def select(trials: Sequence[Trial], rule: str, reward: str, min_z: float | None = None) -> Decision:
    """Apply the named rule to the recorded trials (trial 0 first). ``min_z``: the significance a
    challenger needs (None: the rule's own, 0 for argmax and :attr:`RobustRule.min_z` for robust)."""
    if rule not in SELECTIONS:
        raise PnpOvssError(f"selection rule must be one of {', '.join(SELECTIONS)}, got {rule!r}")
    if rule == "argmax":
        return argmax(trials, reward, 0.0 if min_z is None else min_z)
    return robust(trials, reward, ROBUST if min_z is None else RobustRule(min_z=min_z))


def paper_choice(trials: Sequence[Trial]) -> Trial:
    """What ``--reward binary --select argmax`` picks from these trials (the paper's reward and rule)."""
    return argmax(trials, "binary").trial


__all__ = ["DEFAULT_SELECTION", "Decision", "ROBUST", "RobustRule", "SELECTIONS", "Z_CAP", "argmax", "check",
           "paper_choice", "robust", "select"]
