"""What the storage says about a study: per-arm trial counts, best trials, seed re-runs.

Read-only; used by `liandan status`, the end-of-run summary and (later) the API.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


@dataclass
class ArmStatus:
    study_name: str
    arm: str  # label, "" without scientific parameters
    counts: Counter = field(default_factory=Counter)  # COMPLETE, PRUNED, FAIL, RUNNING, diverged
    best: FrozenTrial | None = None  # best tuning trial
    seed_values: list[float] = field(default_factory=list)

    @property
    def seed_mean(self) -> float | None:
        return statistics.fmean(self.seed_values) if self.seed_values else None

    @property
    def seed_sd(self) -> float | None:
        return statistics.stdev(self.seed_values) if len(self.seed_values) > 1 else None


@dataclass
class StudyStatus:
    name: str
    objective: str
    metric: str
    direction: str
    arms: list[ArmStatus]
    searched: list[str] = field(default_factory=list)  # the nuisance parameters

    @property
    def counts(self) -> Counter:
        total: Counter = Counter()
        for arm in self.arms:
            total.update(arm.counts)
        return total


def arm_status(study: optuna.Study, direction: str) -> ArmStatus:
    status = ArmStatus(study.study_name, study.user_attrs.get("arm") or "")
    sign = 1 if direction == "maximize" else -1
    for t in study.get_trials(deepcopy=False):
        status.counts[t.state.name] += 1
        if t.user_attrs.get("diverged"):
            status.counts["diverged"] += 1
        if t.state != TrialState.COMPLETE or t.value is None:
            continue
        if t.user_attrs.get("role") == "seed":
            status.seed_values.append(t.value)
        elif status.best is None or sign * t.value > sign * status.best.value:
            status.best = t
    return status


def study_statuses(storage: Any, name: str | None = None) -> list[StudyStatus]:
    """Every liandan study in `storage` (or the one called `name`), arms grouped."""
    groups: dict[str, list[optuna.study.StudySummary]] = {}
    specs: dict[str, dict] = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        spec = summary.user_attrs.get("spec")
        spec_name = summary.user_attrs.get("spec_name", summary.study_name)
        if name is not None and spec_name != name:
            continue
        groups.setdefault(spec_name, []).append(summary)
        specs[spec_name] = spec or {}
    result = []
    for spec_name, summaries in groups.items():
        spec = specs[spec_name]
        direction = spec.get("direction", "maximize")
        arms = [
            arm_status(optuna.load_study(study_name=s.study_name, storage=storage), direction)
            for s in sorted(summaries, key=lambda s: s._study_id)
        ]
        result.append(StudyStatus(spec_name, spec.get("objective", "?"),
                                  spec.get("metric", "value"), direction, arms,
                                  list(spec.get("nuisance", {}))))
    return result
