"""The study-data model that reports and rule checks read: a spec's arms and their trials.

One spec with scientific parameters is one Optuna study per arm (`spec_name` in their user
attributes); `load_study_data` gathers them back, in the order the spec lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from service.store.trial_rows import read_trials

__all__ = ["ArmData", "StudyData", "load_study_data"]


@dataclass
class ArmData:
    """One arm of a study as read from storage."""

    label: str  # "batch_size=32"; "" without scientific parameters
    values: dict[str, Any]  # the scientific values of the arm
    study_name: str
    trials: list[FrozenTrial]

    def tune(self, states=(TrialState.COMPLETE,)) -> list[FrozenTrial]:
        return [t for t in self.trials if t.user_attrs.get("role") != "seed" and t.state in states]

    def seeds(self, states=(TrialState.COMPLETE,)) -> list[FrozenTrial]:
        return [t for t in self.trials if t.user_attrs.get("role") == "seed" and t.state in states]


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
        arms.append((study._study_id, ArmData(
            study.user_attrs.get("arm") or "", study.user_attrs.get("arm_values") or {},
            study.study_name, read_trials(storage, study._study_id))))
    if spec is None:
        return None
    return StudyData(name, spec, [arm for _, arm in sorted(arms, key=lambda a: a[0])])
