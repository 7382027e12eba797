"""Comparing two arms of a rulebook study: what the R5-R8 and R10-R14 checks share.

Every check of the optimizer, schedule and regularization families reads a study the same
way. Each arm contributes its *replicates*: the seed re-runs of its tuned best (an arm with
nothing to tune is one fixed configuration, so its tuning trial is a replicate too). Each
replicate gives one number (final accuracy, steps to a target, accuracy gained late, the
train/val gap), and two arms are compared on those numbers by Welch's t-test, with a TOST
equivalence test at a stated margin where the rule claims a difference.

A claim with several parts ("faster AND ends at least as good") is an intersection-union
test: it is supported only if every part is, so its p-value is the largest part's. It is
contradicted if any part points the other way; that p-value is Bonferroni-corrected over the
parts, since the part that contradicts is picked after looking. `decide` turns the parts into
the effect, interval and p-value of one `Finding`; `finalize` then applies Holm across the
report and decides the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from service.rulebook import stats
from service.rulebook._base import ALPHA, Finding, RuleCheck, not_tested
from service.store.study_data import ArmData, StudyData

__all__ = ["ACCURACY_MARGIN", "ArmRuns", "Decision", "Part", "RunValue", "arm_runs", "caveats",
           "decide", "final", "find_arm", "finding", "gap", "late_gain", "load_pair", "mean",
           "pct", "plots", "pp", "protocol", "proportion_part", "shared_target",
           "steps_per_epoch", "steps_to", "value_at", "welch_part"]

ACCURACY_MARGIN = 0.005  # 0.5 pp of accuracy: a smaller difference is practically none
TARGET_FRACTION = 0.95  # "steps to target": to 95% of the weaker arm's mean final accuracy
RunValue = Callable[[FrozenTrial], float | None]
# What a reader needs to know about an objective's data to weigh a small effect.
OBJECTIVE_NOTES = {
    "digits_cnn": "digits has 1437 training and 360 validation images: one validation image "
                  "is 0.28 pp, and accuracies near 99% leave little room for any effect",
}


# ------------------------------------------------------------------ per-run values
def _finite(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _curve(trial: FrozenTrial) -> list[tuple[int, float]]:
    return sorted((int(e), float(v)) for e, v in trial.intermediate_values.items()
                  if _finite(v) is not None)


def final(metric: str) -> RunValue:
    """The run's last value of `metric` (a diverged run keeps what it ended with)."""
    def value(trial: FrozenTrial) -> float | None:
        got = _finite(trial.user_attrs.get(metric))
        return got if got is not None else _finite(trial.value)
    return value


def planned_epochs(trial: FrozenTrial) -> int:
    """Epochs the run was meant to train: its `epochs` parameter, else its last epoch."""
    epochs = _finite(trial.params.get("epochs"))
    curve = _curve(trial)
    return int(epochs) if epochs else (curve[-1][0] if curve else 0)


def value_at(epoch: int) -> RunValue:
    """The metric after `epoch` (intermediate values); a run that stopped earlier, having
    diverged, keeps its last value: that is where it is stuck."""
    def value(trial: FrozenTrial) -> float | None:
        seen = [v for e, v in _curve(trial) if e <= epoch]
        return seen[-1] if seen else None
    return value


def late_gain(trial: FrozenTrial) -> float | None:
    """Metric gained over the second half of training: value at the end minus at half-way."""
    epochs = planned_epochs(trial)
    end, mid = value_at(epochs)(trial), value_at(max(1, epochs // 2))(trial)
    return None if end is None or mid is None else end - mid


def gap(trial: FrozenTrial) -> float | None:
    """Generalization gap: final train accuracy minus final val accuracy."""
    train = _finite(trial.user_attrs.get("train_accuracy"))
    val = _finite(trial.user_attrs.get("val_accuracy"))
    return None if train is None or val is None else train - val


def steps_per_epoch(runs: Sequence[ArmRuns]) -> float:
    """Optimizer steps per epoch, read from runs that did not diverge (a diverged run stops
    mid-epoch); 1.0 when no run reports `steps`, so that "steps" are then epochs."""
    rates = []
    for trial in (t for r in runs for t in r.runs if not t.user_attrs.get("diverged")):
        steps, epoch = (_finite(trial.user_attrs.get(k)) for k in ("steps", "epoch"))
        if steps and epoch:
            rates.append(steps / epoch)
    return float(np.median(rates)) if rates else 1.0


def steps_to(target: float, per_epoch: float) -> RunValue:
    """Optimizer steps until the metric first reaches `target`, interpolated linearly within
    the epoch that crosses it (a fixed batch size: `per_epoch` steps each). A run that never
    reaches it is censored at one epoch past its planned end, a conservative bound that still
    ranks it behind every run that got there."""
    def value(trial: FrozenTrial) -> float | None:
        curve = _curve(trial)
        if not curve:
            return None
        prev_e, prev_v = 0, None
        for e, v in curve:
            if v >= target:
                if prev_v is None or v == prev_v:
                    return e * per_epoch
                return (prev_e + (target - prev_v) / (v - prev_v) * (e - prev_e)) * per_epoch
            prev_e, prev_v = e, v
        return (planned_epochs(trial) + 1) * per_epoch
    return value


# ------------------------------------------------------------------ arms
@dataclass
class ArmRuns:
    """One arm's replicates and tuning trials, as the checks read them."""

    arm: ArmData
    runs: list[FrozenTrial]  # replicates of the arm's tuned best
    tune: list[FrozenTrial]  # every tuning trial, in order (pruned and failed ones spend budget)
    best: FrozenTrial | None  # the best complete tuning trial
    tuned: bool = True  # False: a fixed configuration, whose tuning runs are replicates

    @property
    def label(self) -> str:
        return self.arm.label

    def values(self, fn: RunValue) -> list[float]:
        return [v for v in map(fn, self.runs) if v is not None]

    def row(self, fn: RunValue, **extra: Any) -> dict[str, Any]:
        """An evidence row: n, mean, sd of `fn` over the replicates, the tuned best."""
        vals = self.values(fn)
        row: dict[str, Any] = {"arm": self.label, "n seeds": len(vals),
                               "mean": float(np.mean(vals)) if vals else None,
                               "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}
        if self.tuned:
            row.update({"best lr": None if self.best is None else self.best.params.get("lr"),
                        "tuning trials": len(self.tune),
                        "best tuning value": None if self.best is None else self.best.value})
        return {**row, **extra}


def find_arm(study: StudyData | None, **values: Any) -> ArmData | None:
    """The arm of `study` whose configuration (its scientific values over the spec's fixed
    ones) includes `values`, floats to 0.1%: an augmentation study with weight decay fixed at
    0 has the arm `augment=True, weight_decay=0` as much as a factorial one does."""
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str):
            return a == b
        return isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-3)
    fixed = study.spec.get("fixed", {}) if study is not None else {}
    for arm in study.arms if study is not None else []:
        config = {**fixed, **arm.values}
        if all(k in config and same(v, config[k]) for k, v in values.items()):
            return arm
    return None


def arm_runs(study: StudyData, arm: ArmData) -> ArmRuns:
    # A trial its dead driver left running was failed as `interrupted` and its budget re-run.
    tune = sorted((t for t in arm.trials if t.user_attrs.get("role") != "seed"
                   and t.user_attrs.get("fail_reason") != "interrupted"), key=lambda t: t.number)
    done = [t for t in tune if t.state == TrialState.COMPLETE and t.value is not None]
    sign = 1 if study.direction == "maximize" else -1
    best = max(done, key=lambda t: sign * t.value) if done else None
    # A diverged run is an outcome, not missing data: kept even where its metric is NaN (a
    # FAIL in Optuna), so divergence rates count it; value functions then skip its NaN.
    runs = [t for t in arm.seeds((TrialState.COMPLETE, TrialState.FAIL))
            if t.state == TrialState.COMPLETE or t.user_attrs.get("diverged")]
    if not study.spec.get("nuisance"):
        # A fixed configuration: its tuning runs are replicates too.
        runs = [t for t in tune if t.state == TrialState.COMPLETE or (
            t.state == TrialState.FAIL and t.user_attrs.get("diverged"))] + runs
    return ArmRuns(arm, runs, tune, best, bool(study.spec.get("nuisance")))


def label_of(values: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in values.items())


def load_pair(check: RuleCheck, studies: dict[str, StudyData | None], stem: str,
              a: dict[str, Any], b: dict[str, Any],
              fn: RunValue | None = None) -> tuple[StudyData, ArmRuns, ArmRuns] | Finding:
    """The study `stem` and its arms `a` and `b`, or the finding that says why not: not_tested
    when the study did not run or lacks an arm, inconclusive when an arm has fewer than two
    replicates with a value of `fn` (default: the final metric)."""
    study = studies.get(stem)
    if study is None:
        return not_tested(check.rule, check.claim, f"the study {stem} did not run")
    pair = []
    for values in (a, b):
        arm = find_arm(study, **values)
        if arm is None:
            have = ", ".join(x.label or "(none)" for x in study.arms)
            return not_tested(check.rule, check.claim, f"study {study.name} has no arm "
                              f"{label_of(values)} (arms: {have})")
        pair.append(arm_runs(study, arm))
    fn = fn or final(study.metric)
    thin = [f"{r.label} ({len(r.values(fn))})" for r in pair if len(r.values(fn)) < 2]
    if thin:
        return Finding(
            rule=check.rule, claim=check.claim, verdict="inconclusive", metric=study.metric,
            evidence=f"too few replicates to compare in {study.name}: {', '.join(thin)}; a test "
                     "needs at least 2 seed re-runs per arm",
            more_needed="re-run each arm's best with at least 3 seeds (budget.seeds)",
            protocol=protocol(study, ""), table=[r.row(fn) for r in pair],
            caveats=caveats(study, pair), studies=[study.name])
    return study, pair[0], pair[1]


def shared_target(runs: Sequence[ArmRuns], fn: RunValue) -> float:
    """A target every arm can reach: TARGET_FRACTION of the weakest arm's mean final value."""
    return TARGET_FRACTION * min(float(np.mean(r.values(fn))) for r in runs)


# ------------------------------------------------------------------ parts of a claim
@dataclass
class Part:
    """One part of a claim: `claimed_sign * effect > 0`, where effect compares arm a to b.

    A `difference` part claims a real difference (a TOST at `margin` can contradict it); a
    non-inferiority part ("ends at least as good") claims `claimed_sign * effect > -margin`.
    """

    name: str  # "final val accuracy", for the evidence sentence
    metric: str
    test: stats.TestResult
    claimed_sign: int
    difference: bool = True
    margin: float = ACCURACY_MARGIN
    tost: stats.TestResult | None = None
    p_support: float | None = None  # evidence for the claimed direction
    p_against: float | None = None  # evidence against it
    sds: tuple[float, float] | None = None  # for seeds_needed
    a: list[float] = field(default_factory=list)  # the replicate values compared
    b: list[float] = field(default_factory=list)

    @property
    def effect(self) -> float:
        return self.test.effect

    @property
    def against(self) -> bool:
        """The point estimate contradicts the part (beyond the margin, if non-inferiority)."""
        toward = self.claimed_sign * self.effect
        return math.isfinite(toward) and (toward < 0 if self.difference else toward < -self.margin)


def welch_part(name: str, metric: str, a: Sequence[float], b: Sequence[float],
               claimed_sign: int, margin: float = ACCURACY_MARGIN,
               difference: bool = True) -> Part:
    """A part tested on replicate values: Welch's t-test of mean(a) - mean(b), TOST at
    `margin` for a difference, a one-sided margin-shifted Welch test for non-inferiority."""
    test = stats.welch(a, b)
    sds = (float(np.std(a, ddof=1)), float(np.std(b, ddof=1))) if min(len(a), len(b)) > 1 \
        else None
    if difference:
        tost = stats.tost(a, b, margin) if min(len(a), len(b)) > 1 else None
        return Part(name, metric, test, claimed_sign, True, margin, tost,
                    test.p_value, test.p_value, sds, list(a), list(b))
    # Non-inferiority: claimed_sign*(a - b) > -margin, i.e. a shifted by the margin still wins.
    shifted = [x + claimed_sign * margin for x in a]
    toward, away = ("greater", "less") if claimed_sign > 0 else ("less", "greater")
    return Part(name, metric, test, claimed_sign, False, margin, None,
                stats.welch(shifted, b, toward).p_value, stats.welch(shifted, b, away).p_value,
                sds, list(a), list(b))


def proportion_part(name: str, metric: str, k: tuple[int, int], n: tuple[int, int],
                    claimed_sign: int) -> Part:
    """A part on two rates (e.g. divergence): k[0]/n[0] - k[1]/n[1], Fisher's exact test."""
    test = stats.proportion_diff(k[0], n[0], k[1], n[1])
    return Part(name, metric, test, claimed_sign, True, 0.0, None, test.p_value, test.p_value)


@dataclass
class Decision:
    """What one finding reports: the deciding part's effect and interval, the claim's p."""

    part: Part  # the part reported (the primary, or the one against the claim)
    limiting: Part  # the part that limits the p-value (what more seeds would most help)
    p_value: float | None
    method: str
    equivalent: bool


def decide(parts: list[Part]) -> Decision:
    """Combine a claim's parts (the first is the primary) into one test; see the module doc."""
    names = "; ".join(f"{p.name}: {p.test.method}" for p in parts)
    equivalent = any(p.tost is not None and p.tost.equivalent for p in parts if p.difference)
    if any(p.p_support is None for p in parts):
        missing = next(p for p in parts if p.p_support is None)
        return Decision(missing, missing, None, f"no test possible ({names})", equivalent)
    against = [p for p in parts if p.against]
    if against:
        worst = min(against, key=lambda p: p.p_against if p.p_against is not None else 1.0)
        p = None if worst.p_against is None else min(1.0, len(parts) * worst.p_against)
        how = (f"against the claim on {worst.name}: its p times {len(parts)} parts (Bonferroni)"
               if len(parts) > 1 else worst.test.method)
        return Decision(worst, worst, p, f"{how} [{names}]", equivalent)
    limiting = max(parts, key=lambda p: p.p_support if p.p_support is not None else 1.0)
    how = (f"intersection-union test of {len(parts)} parts, p of the weakest "
           f"({limiting.name})" if len(parts) > 1 else "")
    return Decision(parts[0], limiting, limiting.p_support,
                    f"{how} [{names}]" if how else names, equivalent)


def _more_needed(decision: Decision) -> str:
    part = decision.limiting
    if part.sds is None or not math.isfinite(part.effect):
        return ("too few replicates for a test: re-run each arm's best with at least "
                "3 more seeds")
    distance = abs(part.effect) if part.difference else abs(part.effect + part.claimed_sign
                                                            * part.margin)
    n = stats.seeds_needed(distance, *part.sds)
    if n is None:
        return (f"no difference observed in {part.name}; only more seeds can narrow the "
                f"interval toward the ±{part.margin:g} equivalence margin")
    return (f"about {n} seeds per arm would detect a difference of this size in {part.name} "
            f"({distance:.4g}) with 80% power at alpha {ALPHA} (before Holm's correction)")


def finding(check: RuleCheck, decision: Decision, *, evidence: str, protocol: str,
            table: list[dict[str, Any]], plots: list[str], caveats: list[str],
            studies: list[str]) -> Finding:
    part = decision.part
    return Finding(
        rule=check.rule, claim=check.claim, metric=part.metric, effect=part.effect,
        ci=part.test.ci, p_value=decision.p_value, n=list(part.test.n), method=decision.method,
        evidence=evidence, claimed_sign=part.claimed_sign, equivalent=decision.equivalent,
        protocol=protocol, table=table, plots=plots, caveats=caveats,
        more_needed=_more_needed(decision), studies=studies)


# ------------------------------------------------------------------ words
def mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def pct(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"


def pp(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:+.2f} pp"


def _domain(value: Any) -> str:
    if isinstance(value, dict):
        scale = "log-uniform" if value.get("log") else "uniform"
        return f"{scale} [{value.get('low'):g}, {value.get('high'):g}]"
    return "{" + ", ".join(map(str, value)) + "}"


def protocol(study: StudyData, compared: str) -> str:
    """The fair protocol as run, read back from the study's own spec."""
    spec = study.spec
    budget, search = spec.get("budget", {}), spec.get("search", {})
    arms = "; ".join(f"{k} in {_domain(v)}" for k, v in spec.get("scientific", {}).items())
    nuisance = spec.get("nuisance", {})
    fixed = ", ".join(f"{k}={v}" for k, v in spec.get("fixed", {}).items())
    if nuisance:
        tuned = ", ".join(f"{k} {_domain(v)}" for k, v in nuisance.items())
        how = (f"tuned per arm with {budget.get('trials')} trials each ({search.get('sampler')} "
               f"sampler, pruner {search.get('pruner')}): {tuned}; each arm's best re-run with "
               f"{budget.get('seeds')} new seeds")
    else:
        how = (f"nothing tuned: each arm is one fixed configuration run with "
               f"{1 + int(budget.get('seeds', 0))} seeds")
    return (f"Study {study.name} ({spec.get('objective')}): arms {arms}; {how}; fixed {fixed}. "
            f"{compared}")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _at_edge(domain: Any, value: float) -> bool:
    """Whether `value` is an end of a searched list of 3+ numbers, or in the outer 5% of a
    range (on a log scale for a log range): the Playbook's sign of too narrow a search."""
    if isinstance(domain, list):
        nums = [v for v in domain if _number(v)]
        return len(nums) > 2 and value in (min(nums), max(nums))
    low, high = domain.get("low"), domain.get("high")
    if domain.get("log") and low > 0 and value > 0:
        low, high, value = math.log(low), math.log(high), math.log(value)
    return min(value - low, high - value) <= 0.05 * (high - low)


def caveats(study: StudyData, runs: Sequence[ArmRuns]) -> list[str]:
    """Device, data and budget: what limits how far the finding reaches."""
    spec = study.spec
    devices = sorted({str(t.user_attrs.get("device", "?")) for r in runs for t in r.runs})
    out = [f"device: {', '.join(devices) or 'unknown'}"]
    note = OBJECTIVE_NOTES.get(spec.get("objective", ""))
    if note:
        out.append(note)
    epochs = spec.get("fixed", {}).get("epochs")
    budget = spec.get("budget", {})
    per_arm = (f"{budget.get('trials')} tuning trials and {budget.get('seeds')} seed re-runs"
               if spec.get("nuisance") else f"{1 + int(budget.get('seeds', 0))} runs of one "
               "fixed configuration")
    out.append(f"budget: {epochs or 'default'} epochs per run, {per_arm} per arm; a longer "
               "schedule or a larger data set may change the answer")
    if spec.get("nuisance"):
        out.append("seed re-runs measure each arm's chosen configuration; the luck of the "
                   "tuning itself (one seed per tuning trial) is not in the interval, so arms "
                   "that tuned to different settings by chance can differ for that reason")
    edges = [f"{r.label} {k}={v:g}" for r in runs if r.best is not None
             for k, domain in spec.get("nuisance", {}).items()
             if _number(v := r.best.params.get(k)) and _at_edge(domain, v)]
    if edges:
        out.append(f"best tuned value on the edge of the searched space ({'; '.join(edges)}): "
                   "a wider search might find better, so that arm may be under-tuned")
    planned = int(budget.get("seeds", 0)) + (0 if spec.get("nuisance") else 1)
    short = [r.label for r in runs if len(r.runs) < planned]
    if short:
        out.append(f"seed re-runs missing (failed or not run) in {', '.join(short)}")
    return out


# ------------------------------------------------------------------ figures
def plots(plot_dir: Any, rule: str, study: StudyData, runs: Sequence[ArmRuns], title: str,
          isolation: bool = True) -> list[str]:
    """Learning curves of the compared arms and (for tuned arms) the isolation plot of best
    value vs trials spent; paths relative to the report, as `Finding.plots` holds them."""
    if plot_dir is None:
        return []
    from service.report.plots import isolation_plot, learning_curves

    folder = Path(plot_dir)
    kw = {"metric": study.metric, "direction": study.direction}
    written = [learning_curves({r.label: r.arm.trials for r in runs},
                               folder / f"{rule}-curves.png", title=title, **kw)]
    if isolation:
        written.append(isolation_plot([r.arm for r in runs], folder / f"{rule}-isolation.png",
                                      title=f"{rule}: best {study.metric} vs tuning trials spent",
                                      **kw))
    return [f"{folder.name}/{p.name}" for p in written]
