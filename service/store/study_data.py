"""The study-data model that reports and rule checks read: a spec's arms and their trials.

One spec with scientific parameters is one Optuna study per arm (`spec_name` in their user
attributes); `load_study_data` gathers them back, in the order the spec lists them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from service.records import finite, sign
from service.store.optuna_adapter import study_id_of
from service.store.trial_rows import read_trials

__all__ = ["ArmData", "StudyData", "best_tune_of", "complete_tune", "devices",
           "load_study_data", "ranked_tune"]


# ── the best trial of an arm, written once: the runner re-runs it with new seeds, status
# shows it, reports and rule checks read it. Its tuning trials only (a seed re-run is a
# replicate, not a candidate), COMPLETE (a pruned run's value is of an earlier epoch) and
# finite (an inf would win every comparison); of equal values the earlier trial wins, as
# the SQL read-out (service.store.status) orders them.

def complete_tune(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The COMPLETE tuning trials with a finite value, by trial number."""
    return sorted((t for t in trials if t.user_attrs.get("role") != "seed"
                   and t.state == TrialState.COMPLETE and finite(t.value)),
                  key=lambda t: t.number)


def ranked_tune(trials: Iterable[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """`complete_tune` best first; equal values by trial number."""
    s = sign(direction)
    return sorted(complete_tune(trials), key=lambda t: (-s * t.value, t.number))


def best_tune_of(trials: Iterable[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The best of `complete_tune` in `direction` (the earliest of equal values), or None."""
    s = sign(direction)
    return max(complete_tune(trials), key=lambda t: s * t.value, default=None)


def devices(trials: Iterable[FrozenTrial]) -> list[str]:
    """The devices the trials ran on (user attribute `device`: 'cpu' or a GPU's name), sorted
    and unique; empty when no trial recorded one."""
    return sorted({str(d) for t in trials if (d := t.user_attrs.get("device"))})


@dataclass
class ArmData:
    """One arm of a study as read from storage."""

    label: str  # "batch_size=32"; "" without scientific parameters
    values: dict[str, Any]  # the scientific values of the arm
    study_name: str
    trials: list[FrozenTrial]
    # How the arm's configuration for its seed re-runs was chosen (the arm study's user
    # attribute `selection`, written by the runner), or None where nothing was selected.
    selection: dict[str, Any] | None = None

    def tune(self, states=(TrialState.COMPLETE,)) -> list[FrozenTrial]:
        return [t for t in self.trials if t.user_attrs.get("role") != "seed" and t.state in states]

    def seeds(self, states=(TrialState.COMPLETE,)) -> list[FrozenTrial]:
        """The evidence: seed re-runs of the arm's chosen configuration. Candidate re-runs
        (`stage: select`, service.run.selection) only chose it; a seed re-run without a
        `stage` (an older storage) is evidence."""
        return [t for t in self.trials if t.user_attrs.get("role") == "seed"
                and t.user_attrs.get("stage", "evidence") == "evidence" and t.state in states]

    def best_tune(self, direction: str) -> FrozenTrial | None:
        """The arm's best COMPLETE tuning trial with a finite value (`best_tune_of`)."""
        return best_tune_of(self.trials, direction)

    def chosen(self, direction: str) -> FrozenTrial | None:
        """The tuning trial whose configuration the evidence seeds re-ran: the one the
        selection chose (best mean over candidate seeds), else the best tuning trial."""
        number = (self.selection or {}).get("chosen_trial")
        picked = [t for t in self.trials if t.number == number] if number is not None else []
        return picked[0] if picked else self.best_tune(direction)

    def ranked_tune(self, direction: str) -> list[FrozenTrial]:
        """The arm's COMPLETE tuning trials with a finite value, best first (`ranked_tune`)."""
        return ranked_tune(self.trials, direction)


@dataclass
class StudyData:
    """All arms of one spec, in the order the spec lists them."""

    name: str
    spec: dict[str, Any]
    arms: list[ArmData]

    @property
    def metric(self) -> str:
        return self.spec.get("metric", "val_accuracy")

    @property
    def direction(self) -> str:
        return self.spec.get("direction", "maximize")

    def best_tune(self, arm: ArmData) -> FrozenTrial | None:
        """`arm.best_tune` in this study's direction."""
        return arm.best_tune(self.direction)

    def devices(self) -> list[str]:
        """The devices any trial of any arm ran on, sorted and unique."""
        return devices(t for arm in self.arms for t in arm.trials)


def load_study_data(storage: Any, name: str) -> StudyData | None:
    """The arms of spec `name` in `storage` (a URL or a storage), or None when no such study ran.

    Each study's trials are read once, in a few queries (`service.store.trial_rows`): study
    summaries would read every trial of every study in the storage, and the ORM path of
    `get_trials` costs seconds per thousand trials.
    """
    storage = optuna.storages.get_storage(storage)
    arms, spec = [], None
    for study in storage.get_all_studies():
        if study.user_attrs.get("spec_name", study.study_name) != name:
            continue
        spec = study.user_attrs.get("spec", {})
        study_id = study_id_of(study)
        arms.append((study_id, ArmData(
            study.user_attrs.get("arm") or "", study.user_attrs.get("arm_values") or {},
            study.study_name, read_trials(storage, study_id),
            study.user_attrs.get("selection"))))
    if spec is None:
        return None
    return StudyData(name, spec, [arm for _, arm in sorted(arms, key=lambda a: a[0])])
