"""Comparing arms of a rulebook study: what the R5-R8 and R10-R14 checks share.

Every check of the optimizer, schedule and regularization families reads a study the same
way. Each arm contributes its *replicates*: the evidence re-runs of its chosen configuration
(seed re-runs whose `stage` is "evidence", or that carry no stage in storages older than
the selection protocol; an arm with nothing to tune is one fixed configuration, so its tuning
trial is a replicate too). Each replicate gives one number (final accuracy, steps to a
target, accuracy gained late, the train/val gap), and two arms are compared on those numbers
by `pair_part`, a part of the claim whose hypotheses `decision.finalize` decides.

Trials that did not get to finish (`records.unfinished`) are dropped; a diverged run is an
outcome (`records.diverged`), kept even where its metric is NaN so that rates count it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from service import records
from service.report.edges import search_space_warnings
from service.rulebook._base import Finding, RuleCheck, not_tested
from service.rulebook.decision import Part, two_sample_part
from service.rulebook.describe import caveats, protocol
from service.rulebook.figures import decision_plot, study_plots
from service.store.study_data import ArmData, StudyData

__all__ = ["ACCURACY_MARGIN", "ArmRuns", "PairCheck", "RunValue", "arm_runs", "evidence_seeds",
           "final", "find_arm", "gap", "guard_edges", "late_gain", "load_pair", "outcome",
           "pair_finding", "pair_part", "planned_epochs", "selection_of", "shared_target",
           "speed_to_target", "steps_per_epoch", "steps_to", "value_at"]

ACCURACY_MARGIN = 0.005  # 0.5 pp of accuracy: a smaller difference is practically none
TARGET_FRACTION = 0.95  # "steps to target": to 95% of the weaker arm's mean final accuracy
RunValue = Callable[[FrozenTrial], float | None]


# ------------------------------------------------------------------ per-run values
def _curve(trial: FrozenTrial) -> list[tuple[int, float]]:
    return sorted((int(e), float(v)) for e, v in trial.intermediate_values.items()
                  if records.finite(v))


def final(metric: str) -> RunValue:
    """The run's last value of `metric` (a diverged run keeps what it ended with)."""
    def value(trial: FrozenTrial) -> float | None:
        got = records.number(trial.user_attrs.get(metric))
        return got if got is not None else records.number(trial.value)
    return value


def planned_epochs(trial: FrozenTrial) -> int:
    """Epochs the run was meant to train: its `epochs` parameter, else its last epoch."""
    epochs = records.number(trial.params.get("epochs"))
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
    train = records.number(trial.user_attrs.get("train_accuracy"))
    val = records.number(trial.user_attrs.get("val_accuracy"))
    return None if train is None or val is None else train - val


def steps_per_epoch(runs: Sequence[ArmRuns]) -> float:
    """Optimizer steps per epoch, read from runs that did not diverge (a diverged run stops
    mid-epoch); 1.0 when no run reports `steps`, so that "steps" are then epochs."""
    rates = []
    for trial in (t for r in runs for t in r.runs if not records.diverged(t)):
        steps, epoch = (records.number(trial.user_attrs.get(k)) for k in ("steps", "epoch"))
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
def outcome(trial: FrozenTrial) -> bool:
    """A trial that is an outcome of its configuration: not unfinished (its budget is spent
    again, `records.unfinished`) and not a crash of the objective (an error or a missing
    metric is a bug, not training); a diverged trial is an outcome."""
    return not records.unfinished(trial) and \
        trial.user_attrs.get("fail_reason") not in (records.ERROR, records.NO_METRIC)


def evidence_seeds(arm: ArmData, states=(TrialState.COMPLETE,)) -> list[FrozenTrial]:
    """The arm's evidence runs: seed re-runs of the chosen configuration, not the candidate
    re-runs that chose it (`stage: "select"`); no stage is an older storage's evidence."""
    return [t for t in arm.seeds(states) if t.user_attrs.get("stage") in (None, "evidence")]


@dataclass
class ArmRuns:
    """One arm's replicates and tuning trials, as the checks read them."""

    arm: ArmData
    runs: list[FrozenTrial]  # replicates of the arm's chosen configuration
    tune: list[FrozenTrial]  # every tuning trial that finished, in order
    best: FrozenTrial | None  # the best complete tuning trial
    tuned: bool = True  # False: a fixed configuration, whose tuning runs are replicates

    @property
    def label(self) -> str:
        return self.arm.label

    def values(self, fn: RunValue) -> list[float]:
        return [v for v in map(fn, self.runs) if v is not None]

    def row(self, fn: RunValue, **extra: Any) -> dict[str, Any]:
        """An evidence row: n, mean, sd of `fn` over the replicates, the chosen lr."""
        vals = self.values(fn)
        row: dict[str, Any] = {"arm": self.label, "n seeds": len(vals),
                               "mean": float(np.mean(vals)) if vals else None,
                               "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}
        if self.tuned:
            chosen = self.runs[0].params if self.runs else (self.best.params if self.best
                                                             else {})  # as edges.chosen_params
            row.update({"chosen lr": chosen.get("lr"), "tuning trials": len(self.tune),
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
    tune = sorted((t for t in arm.trials if t.user_attrs.get("role") != "seed"
                   and not records.unfinished(t)), key=lambda t: t.number)
    states = (TrialState.COMPLETE, TrialState.FAIL)
    runs = [t for t in evidence_seeds(arm, states)
            if t.state == TrialState.COMPLETE or records.diverged(t)]
    if not study.spec.get("nuisance"):
        # A fixed configuration: its tuning runs are replicates too.
        runs = [t for t in tune if t.state == TrialState.COMPLETE or (
            t.state == TrialState.FAIL and records.diverged(t))] + runs
    return ArmRuns(arm, runs, tune, study.best_tune(arm), bool(study.spec.get("nuisance")))


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
            more_needed="re-run each arm's chosen configuration with at least 3 seeds "
                        "(budget.seeds)",
            protocol=protocol(study, ""), table=[r.row(fn) for r in pair],
            caveats=caveats(study, pair), studies=[study.name])
    return study, pair[0], pair[1]


def shared_target(runs: Sequence[ArmRuns], fn: RunValue) -> float:
    """A target every arm can reach: TARGET_FRACTION of the weakest arm's mean final value."""
    return TARGET_FRACTION * min(float(np.mean(r.values(fn))) for r in runs)


def speed_to_target(a: ArmRuns, b: ArmRuns, acc: RunValue) -> RunValue:
    """Steps to the shared target (95% of the weaker arm's mean final value)."""
    return steps_to(shared_target([a, b], acc), steps_per_epoch([a, b]))


def pair_part(claim: str, metric: str, a: ArmRuns, b: ArmRuns, fn: RunValue, *,
              claimed_sign: int, margin: float | None = ACCURACY_MARGIN,
              noninferior: bool = False) -> Part:
    """A part comparing arm a with arm b on `fn` of their replicates (a minus b)."""
    return two_sample_part(claim, metric, {a.label: a.values(fn)}, {b.label: b.values(fn)},
                           claimed_sign=claimed_sign, margin=margin, noninferior=noninferior)


# ------------------------------------------------------------------ protocol guards
def guard_edges(finding: Finding, studies: Sequence[StudyData],
                compared: Sequence[ArmData]) -> Finding:
    """List the search-space warnings of the studies read, and leave the finding undecided
    when an arm it compares was tuned to the edge of a range (RULES.md)."""
    for study in studies:
        finding.search_space_warnings += search_space_warnings(study)
    keys = {(s.name, a.label or s.name) for s in studies for a in compared
            if any(a is x for x in s.arms)}
    hit = [w for w in finding.search_space_warnings if (w["study"], w["arm"]) in keys]
    if hit:
        finding.undecided_because = (
            "not decided: " + "; ".join(f"{w['arm']} chose {w['param']}={w['best']:g} at the "
                                        f"{w['edge']} edge of {w['range']}" for w in hit)
            + " (an arm tuned to the edge of its range was not tuned to its optimum: widen "
              "the range)")
    return finding


def selection_of(runs: Sequence[ArmRuns]) -> dict[str, Any] | None:
    """How each arm's configuration was chosen, when the runner recorded it (the arm study's
    `selection` attribute, exposed on `ArmData` by the store), by arm label."""
    found = {r.label: sel for r in runs if (sel := getattr(r.arm, "selection", None))}
    if not found:
        return None
    first = next(iter(found.values()))
    return {k: first.get(k) for k in ("candidates_per_arm", "seeds_per_candidate", "chosen_by")
            if k in first} | {"arms": found}


def pair_finding(check: RuleCheck, study: StudyData, compared: Sequence[ArmRuns],
                 parts: list[Part], *, evidence: str, how: str, table: list[dict[str, Any]],
                 extra_caveats: Sequence[str] = (), shown: Sequence[ArmRuns] = ()) -> Finding:
    """The finding of a comparison of `compared` arms (and `shown` ones beside them)."""
    finding = Finding(
        rule=check.rule, claim=check.claim, parts=parts, evidence=evidence,
        method="; ".join(f"{p.claim}: {p.test}" for p in parts),
        protocol=protocol(study, how), table=table,
        caveats=caveats(study, [*compared, *shown]) + list(extra_caveats),
        studies=[study.name], selection=selection_of(compared))
    return guard_edges(finding, [study], [r.arm for r in compared])


class PairCheck(RuleCheck):
    """A check comparing two arms of one study: load the pair, then the family's parts."""

    study: str
    arms: tuple[dict[str, Any], dict[str, Any]]
    title: str
    run_value: RunValue | None = None  # what each arm needs two replicates of

    def load(self, studies: dict[str, StudyData | None]) -> Any:
        return load_pair(self, studies, self.study, *self.arms, self.run_value)

    def plot(self, loaded: Any, finding: Finding, plot_dir: Any) -> list[str]:
        study, a, b = loaded
        return decision_plot(finding, plot_dir) + study_plots(
            plot_dir, self.rule, study, [a.arm, b.arm], self.title)
