"""Read a study's trials from an RDB storage in five queries, without the ORM.

Optuna's `RDBStorage.get_all_trials` builds an ORM object for every parameter, value,
attribute and intermediate value (~50 per trial here) and parses each parameter's
distribution JSON again: 10,000 trials took 25-35 s on the 2-core CI machine, so a report
of a large study spent nearly all its time reading. This module selects the same rows of
the same tables with SQLAlchemy Core and builds the `FrozenTrial`s exactly as
`RDBStorage._build_frozen_trial_from_trial_model` does, parsing each distinct
distribution once.

It reads Optuna's table layout (`optuna.storages._rdb.models`), which is versioned by
Optuna's migrations and pinned with the optuna version in pyproject.toml;
`tests/store_tests/test_trial_rows.py` compares it with `Study.get_trials` on every
kind of trial. Any storage that is not an RDB storage goes through Optuna's own API.
"""

from __future__ import annotations

import datetime
import json
from collections import defaultdict
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial
from sqlalchemy import select

from service.store.optuna_adapter import rdb_backend

__all__ = ["read_trials"]


def _local(utc: datetime.datetime | None) -> datetime.datetime | None:
    # RDBStorage stores naive UTC and hands out naive local time (models.TrialModel).
    if utc is None:
        return None
    return utc.replace(tzinfo=datetime.UTC).astimezone().replace(tzinfo=None)


def read_trials(storage: optuna.storages.BaseStorage, study_id: int) -> list[FrozenTrial]:
    """Every trial of study `study_id`, sorted by number, as `get_all_trials(deepcopy=False)`
    returns them (treat them as read-only)."""
    backend = rdb_backend(storage)
    if backend is None:
        return storage.get_all_trials(study_id, deepcopy=False)
    T = models.TrialModel.__table__
    P = models.TrialParamModel.__table__
    V = models.TrialValueModel.__table__
    I = models.TrialIntermediateValueModel.__table__  # noqa: E741 - the table's initial
    U = models.TrialUserAttributeModel.__table__
    S = models.TrialSystemAttributeModel.__table__
    ids = select(T.c.trial_id).where(T.c.study_id == study_id).scalar_subquery()

    params: dict[int, list[tuple[str, float, str]]] = defaultdict(list)
    values: dict[int, dict[int, float]] = defaultdict(dict)
    inter: dict[int, dict[int, float]] = defaultdict(dict)
    user: dict[int, dict[str, Any]] = defaultdict(dict)
    system: dict[int, dict[str, Any]] = defaultdict(dict)
    with backend.engine.connect() as conn:
        rows = conn.execute(select(T.c.trial_id, T.c.number, T.c.state, T.c.datetime_start,
                                   T.c.datetime_complete).where(T.c.study_id == study_id)
                            .order_by(T.c.trial_id)).all()
        for tid, name, value, dist in conn.execute(
                select(P.c.trial_id, P.c.param_name, P.c.param_value, P.c.distribution_json)
                .where(P.c.trial_id.in_(ids)).order_by(P.c.param_id)):
            params[tid].append((name, value, dist))
        for tid, objective, value, kind in conn.execute(
                select(V.c.trial_id, V.c.objective, V.c.value, V.c.value_type)
                .where(V.c.trial_id.in_(ids))):
            values[tid][objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
        for tid, step, value, kind in conn.execute(
                select(I.c.trial_id, I.c.step, I.c.intermediate_value,
                       I.c.intermediate_value_type).where(I.c.trial_id.in_(ids))
                .order_by(I.c.trial_intermediate_value_id)):
            inter[tid][step] = models.TrialIntermediateValueModel.\
                stored_repr_to_intermediate_value(value, kind)
        for table, into in ((U, user), (S, system)):
            for tid, key, value_json in conn.execute(
                    select(table.c.trial_id, table.c.key, table.c.value_json)
                    .where(table.c.trial_id.in_(ids)).order_by(*table.primary_key.columns)):
                into[tid][key] = json.loads(value_json)

    parsed: dict[str, BaseDistribution] = {}  # thousands of trials share a few distributions
    trials = []
    for tid, number, state, start, complete in rows:
        dists = {name: parsed.get(d) or parsed.setdefault(d, json_to_distribution(d))
                 for name, _, d in params[tid]}
        objective_values = values.get(tid)
        trials.append(FrozenTrial(
            number=number, state=state, value=None,
            values=[objective_values[i] for i in range(len(objective_values))]
            if objective_values else None,
            datetime_start=_local(start), datetime_complete=_local(complete),
            params={name: dists[name].to_external_repr(v) for name, v, _ in params[tid]},
            distributions=dists, user_attrs=user.get(tid, {}),
            system_attrs=system.get(tid, {}), intermediate_values=inter.get(tid, {}),
            trial_id=tid))
    trials.sort(key=lambda t: t.number)
    return trials
