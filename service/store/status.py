"""What the storage says about a study: per-arm trial counts, best trials, seed re-runs.

Read-only; used by `liandan status`, the end-of-run summary and the API (whose polls use the
cheap SQL read-out at the end of this module).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from service.records import UNFINISHED, better, finite, sign
from service.store.optuna_adapter import study_id_of
from service.store.study_data import best_tune_of


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
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        status.counts[t.state.name] += 1
        if t.user_attrs.get("diverged"):
            status.counts["diverged"] += 1
        # Seed re-runs of the chosen configuration (candidate re-runs, `stage: select`,
        # only chose it; see service.run.selection).
        if t.state == TrialState.COMPLETE and t.user_attrs.get("role") == "seed" \
                and t.user_attrs.get("stage", "evidence") == "evidence" and finite(t.value):
            status.seed_values.append(t.value)
    status.best = best_tune_of(trials, direction)
    return status


def study_statuses(storage: Any, name: str | None = None) -> list[StudyStatus]:
    """Every liandan study in `storage` (or the one called `name`), arms grouped."""
    groups: dict[str, list[Any]] = {}
    specs: dict[str, dict] = {}
    # One storage for the listing and every arm (a URL would open an engine per arm).
    storage = optuna.storages.get_storage(storage)
    # get_all_studies reads study rows only; get_all_study_summaries reads every trial.
    for summary in storage.get_all_studies():
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
            for s in sorted(summaries, key=study_id_of)
        ]
        result.append(StudyStatus(spec_name, spec.get("objective", "?"),
                                  spec.get("metric", "value"), direction, arms,
                                  list(spec.get("nuisance", {}))))
    return result


# ── cheap read-out for the API: a few SQL statements on Optuna's tables, no trial objects ──
# `study_statuses` loads every trial of every arm; a status poll needs only counts and the
# best value, which the database computes far faster than Python can build FrozenTrials.
# Arm studies carry the user attribute spec_name = json.dumps(name) (service/run/search.py).

# As stored (JSON): trials whose budget is spent again.
UNFINISHED_REASONS = tuple(json.dumps(reason) for reason in UNFINISHED)

_TALLY = sa.text("""
SELECT a.value_json AS spec, t.state AS state, r.value_json AS reason, ro.value_json AS role,
       COUNT(*) AS n, MAX(v.value) AS hi, MIN(v.value) AS lo
FROM study_user_attributes a
JOIN trials t ON t.study_id = a.study_id
LEFT JOIN trial_user_attributes r ON r.trial_id = t.trial_id AND r.key = 'fail_reason'
LEFT JOIN trial_user_attributes ro ON ro.trial_id = t.trial_id AND ro.key = 'role'
LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0
     AND v.value_type = 'FINITE'
WHERE a.key = 'spec_name' AND a.value_json IN :specs
GROUP BY a.value_json, t.state, r.value_json, ro.value_json
""").bindparams(sa.bindparam("specs", expanding=True))

_FIRST_STUDY = sa.text("""
SELECT a.value_json AS spec, MIN(a.study_id) AS study_id FROM study_user_attributes a
WHERE a.key = 'spec_name' AND a.value_json IN :specs GROUP BY a.value_json
""").bindparams(sa.bindparam("specs", expanding=True))

_BEST = """
SELECT s.study_name AS study, t.trial_id AS trial_id, t.number AS number, v.value AS value
FROM study_user_attributes a
JOIN studies s ON s.study_id = a.study_id
JOIN trials t ON t.study_id = a.study_id
JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0 AND v.value_type = 'FINITE'
LEFT JOIN trial_user_attributes ro ON ro.trial_id = t.trial_id AND ro.key = 'role'
WHERE a.key = 'spec_name' AND a.value_json = :spec AND t.state = 'COMPLETE'
  AND (ro.value_json IS NULL OR ro.value_json <> '"seed"')
ORDER BY v.value {order}, t.trial_id LIMIT 1
"""


@dataclass
class TrialTally:
    """Trial counts of one spec across its arms, and its best tuning value."""

    counts: Counter = field(default_factory=Counter)  # COMPLETE PRUNED FAIL RUNNING WAITING
    retried: int = 0  # FAIL as interrupted/cancelled/worker lost: their budget runs again
    finished: int = 0  # trials that spent budget: COMPLETE, PRUNED, FAIL for a reason of its own
    best_value: float | None = None  # best COMPLETE tuning trial (seed re-runs left out)
    study_id: int | None = None  # the first arm's Optuna study (a dashboard link)


def tally_trials(conn: Any, names: list[str], directions: dict[str, str]) -> dict[str, TrialTally]:
    """name -> TrialTally for every name (empty where nothing ran yet), in two statements."""
    result = {name: TrialTally() for name in names}
    if not names:
        return result
    specs = {json.dumps(name): name for name in names}
    for row in conn.execute(_TALLY, {"specs": list(specs)}):
        name = specs[row.spec]
        tally = result[name]
        tally.counts[row.state] += row.n
        if row.state == "FAIL" and row.reason in UNFINISHED_REASONS:
            tally.retried += row.n
        elif row.state in ("COMPLETE", "PRUNED", "FAIL"):
            tally.finished += row.n
        if row.state == "COMPLETE" and row.role != '"seed"' and row.hi is not None:
            direction = directions.get(name, "maximize")
            value = row.hi if sign(direction) > 0 else row.lo
            if tally.best_value is None or better(value, tally.best_value, direction):
                tally.best_value = value
    for row in conn.execute(_FIRST_STUDY, {"specs": list(specs)}):
        result[specs[row.spec]].study_id = row.study_id
    return result


def best_trial(conn: Any, name: str, direction: str) -> dict[str, Any] | None:
    """The best COMPLETE tuning trial of spec `name`: study, number, value, params, arm."""
    order = "DESC" if sign(direction) > 0 else "ASC"
    row = conn.execute(sa.text(_BEST.format(order=order)), {"spec": json.dumps(name)}).first()
    if row is None:
        return None
    params = {}
    for p in conn.execute(sa.text(
            "SELECT param_name, param_value, distribution_json FROM trial_params "
            "WHERE trial_id = :t ORDER BY param_id"), {"t": row.trial_id}):
        dist = optuna.distributions.json_to_distribution(p.distribution_json)
        params[p.param_name] = dist.to_external_repr(p.param_value)
    arm = conn.execute(sa.text(
        "SELECT value_json FROM trial_user_attributes WHERE trial_id = :t AND key = 'arm'"),
        {"t": row.trial_id}).scalar()
    return {"study": row.study, "number": row.number, "value": row.value, "params": params,
            "arm": json.loads(arm) if arm else None}
