"""Reading the batch-size studies: what R1-R4 (throughput.py, batch.py) and R9 (scaling.py)
share. Arms are keyed by their batch size, and a study read as `BatchArms` gives each arm's
evidence runs and the epoch every run was meant to reach; `trend` and `divergence_part` are
the parts of a claim about a trend across batch sizes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from service import records
from service.rulebook import stats
from service.rulebook.compare import evidence_seeds, outcome
from service.rulebook.decision import Hypothesis, Part, rate_part, trend_part
from service.store.study_data import ArmData, StudyData

__all__ = ["BatchArms", "arms_by_batch", "attr", "batch_arms", "batch_of", "divergence_part",
           "plot_file", "trend", "usable"]


def batch_of(study: StudyData, arm: ArmData) -> int | None:
    """The arm's batch size: its scientific value, else the spec's fixed one, else a trial's."""
    for source in (arm.values, study.spec.get("fixed", {})):
        if isinstance(source.get("batch_size"), int):
            return int(source["batch_size"])
    for t in arm.trials:
        if "batch_size" in t.params:
            return int(t.params["batch_size"])
    return None


def arms_by_batch(study: StudyData) -> list[tuple[int, ArmData]]:
    """(batch size, arm) for every arm that has one, smallest batch first."""
    found = [(batch_of(study, arm), arm) for arm in study.arms]
    return sorted(((b, a) for b, a in found if b is not None), key=lambda pair: pair[0])


def attr(trials: list[FrozenTrial], name: str) -> np.ndarray:
    """The finite values of user attribute `name` over `trials`."""
    return np.array([v for t in trials if (v := records.number(t.user_attrs.get(name)))
                     is not None])


def usable(runs: list[FrozenTrial], end: int | None) -> list[FrozenTrial]:
    """Runs that did not diverge and (if `end` is given) reached epoch `end`."""
    return [t for t in runs if not records.diverged(t)
            and (end is None or t.user_attrs.get("epoch") == end)]


@dataclass
class BatchArms:
    """A batch-size study as the trend checks read it."""

    study: StudyData
    arms: list[tuple[int, ArmData]]  # smallest batch first
    end: int | None  # the last epoch of the evidence runs

    def seeds(self, arm: ArmData) -> list[FrozenTrial]:
        return evidence_seeds(arm)

    @property
    def x(self) -> list[float]:
        return [math.log2(b) for b, _ in self.arms]

    @property
    def labels(self) -> list[str]:
        return [f"batch {b}" for b, _ in self.arms]


def batch_arms(study: StudyData) -> BatchArms:
    arms = arms_by_batch(study)
    epochs = [int(e) for _, a in arms for t in evidence_seeds(a)
              if isinstance(e := t.user_attrs.get("epoch"), int)]
    return BatchArms(study, arms, max(epochs, default=None))


def trend(data: BatchArms, claim: str, metric: str, values: list[list[float]], *,
           claimed_sign: int, margin: float, null: float = 0.0) -> Part:
    """A trend part over the arms with values (on log2 batch, arm means as the unit); a part
    with no test when fewer than 3 arms have values."""
    keep = [(x, lab, v) for x, lab, v in zip(data.x, data.labels, values, strict=True) if v]
    samples = {lab: list(v) for _, lab, v in keep}
    trend = stats.arm_trend([(x, v) for x, _, v in keep])
    if trend is None:
        return Part(claim, metric, f"needs 3 batch sizes with values, {len(keep)} here",
                    math.nan, None, [len(v) for v in samples.values()],
                    [Hypothesis("support", "slope", None)], claimed_sign, margin,
                    samples=samples)
    return trend_part(claim, metric, trend, [lab for _, lab, _ in keep], samples,
                      claimed_sign=claimed_sign, margin=margin, null=null)


def _outcomes(arm: ArmData) -> list[FrozenTrial]:
    """The arm's tuning trials that are outcomes (`compare.outcome`), pruned ones included."""
    return [t for t in arm.tune((TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED))
            if outcome(t)]


def divergence_part(data: BatchArms) -> Part:
    """Divergence over the shared LR grid falls with batch size: a permutation test of the
    trend, stratified by LR (each LR compared with itself across batch sizes)."""
    strata: dict[float, list[tuple[float, bool]]] = {}
    samples: dict[str, list[float]] = {}
    for (b, arm), label in zip(data.arms, data.labels, strict=True):
        runs = _outcomes(arm)
        samples[label] = [float(records.diverged(t)) for t in runs]
        for t in runs:
            if "lr" in t.params:
                strata.setdefault(float(t.params["lr"]), []).append(
                    (math.log2(b), records.diverged(t)))
    p_less, p_more = stats.stratified_trend(list(strata.values()))
    (lo, lo_v), (hi, hi_v) = [(lab, samples[lab]) for lab in (data.labels[0], data.labels[-1])]
    diff = stats.proportion_diff(int(sum(hi_v)), len(hi_v), int(sum(lo_v)), len(lo_v))
    return rate_part("divergence rate falls with batch size", "divergence_rate", p_less, p_more,
                     diff.effect, diff.ci, [len(v) for v in samples.values()], claimed_sign=-1,
                     test="stratified permutation trend",
                     method=f"permutation test of sum(diverged x log2 batch) within each grid LR "
                            f"(20000 draws, seed 0); effect: rate at {hi} minus at {lo}",
                     samples=samples,
                     xs={lab: float(b) for (b, _), lab in zip(data.arms, data.labels,
                                                               strict=True)})


def plot_file(rule: str, study: StudyData) -> str:
    """`r2_batch_arms-digits_cnn.png`; no second prefix when the study is named for the rule."""
    prefix = rule.lower() + "_"
    return f"{'' if study.name.startswith(prefix) else prefix}{study.name}.png"
