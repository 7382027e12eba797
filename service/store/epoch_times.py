"""What an epoch of an objective has cost so far, read from the storage's finished trials.

A dry run (`liandan run --dry-run`, `liandan rulebook --dry-run`) prices a plan in epochs;
this turns epochs into seconds once a study of the same objective has run on the same kind
of device. Per trial: its wall time (Optuna's start to end, what a trial holds its CPUs or GPU
for, Ray's share included) over the epochs it ran (its intermediate values, the last one
included); the median over trials, so one trial that waited on a busy machine does not set
the price. `compute_s` (the seconds inside the objective) is read beside it, to say how much
of an epoch is training.

Read-only, and it opens no database that does not exist: a dry run writes nothing, so an
SQLite file that is not there means nothing was measured.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from optuna.trial import TrialState

from service.store.optuna_adapter import study_id_of
from service.store.trial_rows import read_trials

__all__ = ["EpochTime", "epoch_times", "storage_exists"]

SHARED_FROM = "shared_from"  # a trial copied from another study (rulebook sharing): not run


@dataclass
class EpochTime:
    """Seconds per epoch of one objective on one kind of device."""

    objective: str
    device: str  # "cpu" or the GPU's name, as trials record it
    seconds: float  # median wall seconds per epoch of a trial
    compute_s: float | None  # median seconds per epoch inside the objective
    trials: int  # how many trials it rests on
    studies: list[str] = field(default_factory=list)


def storage_exists(url: str) -> bool:
    """Whether the storage at `url` may hold anything: an SQLite file must exist (opening one
    would create it); any other database is taken to exist."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return True
    return bool(parsed.database) and parsed.database != ":memory:" \
        and Path(parsed.database).is_file()


def epoch_times(url: str, objective: str) -> dict[str, EpochTime]:
    """device -> what an epoch of `objective` cost on it, from every COMPLETE or PRUNED trial
    of every study of that objective in the storage at `url` ({} when none ran)."""
    if not storage_exists(url):
        return {}
    from service.store.storage import open_storage

    storage = open_storage(url)
    walls: dict[str, list[float]] = {}
    computes: dict[str, list[float]] = {}
    studies: dict[str, list[str]] = {}
    # get_all_studies reads study rows only; trials are read for the matching studies alone.
    for study in storage.get_all_studies():
        if (study.user_attrs.get("spec") or {}).get("objective") != objective:
            continue
        for trial in read_trials(storage, study_id_of(study)):
            if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) \
                    or SHARED_FROM in trial.user_attrs:
                continue
            epochs = len(trial.intermediate_values)
            start, end = trial.datetime_start, trial.datetime_complete
            if epochs == 0 or start is None or end is None:
                continue
            device = str(trial.user_attrs.get("device") or "cpu")
            walls.setdefault(device, []).append((end - start).total_seconds() / epochs)
            compute = trial.user_attrs.get("compute_s")
            if isinstance(compute, int | float) and compute >= 0:
                computes.setdefault(device, []).append(compute / epochs)
            names = studies.setdefault(device, [])
            spec_name = study.user_attrs.get("spec_name", study.study_name)
            if spec_name not in names:
                names.append(spec_name)
    return {device: EpochTime(
        objective, device, statistics.median(values),
        statistics.median(computes[device]) if computes.get(device) else None,
        len(values), studies[device]) for device, values in walls.items()}
