"""Reading the batch-size studies: what R1-R4 (throughput.py, batch.py) and R9 (scaling.py)
share. Arms are keyed by their batch size, and a study read as `BatchArms` gives each arm's
evidence runs and the epoch every run was meant to reach."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from optuna.trial import FrozenTrial

from service import records
from service.rulebook.compare import evidence_seeds
from service.store.study_data import ArmData, StudyData

__all__ = ["BatchArms", "arms_by_batch", "attr", "batch_arms", "batch_of", "plot_file",
           "usable"]


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


def plot_file(rule: str, study: StudyData) -> str:
    """`r2_batch_arms-digits_cnn.png`; no second prefix when the study is named for the rule."""
    prefix = rule.lower() + "_"
    return f"{'' if study.name.startswith(prefix) else prefix}{study.name}.png"
