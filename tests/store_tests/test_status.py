"""The status read-outs agree with the best-trial rule (`service.store.study_data`): the CLI's
(trial objects), the API's (SQL) and the reports' pick the same best trial.

Before the rule was written once, `arm_status` (and the runner, which re-runs the best with
new seeds) took an infinite value for the best while the SQL read-out and the report skipped
it; `inf` is no result to re-run or report, so the SQL read-out and the report were right.
"""

from __future__ import annotations

import json
import math

import optuna
import pytest
import sqlalchemy as sa
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from service.store.status import best_trial, study_statuses, tally_trials
from service.store.storage import open_storage
from service.store.study_data import load_study_data

optuna.logging.set_verbosity(optuna.logging.WARNING)
LR = {"lr": FloatDistribution(1e-4, 1.0, log=True)}
C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, sqlite_url):
    return sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def arm_study(url: str, direction: str, rows) -> None:
    open_storage(url).remove_session()
    study = optuna.create_study(storage=url, study_name="s[optimizer=adam]",
                                direction=direction)
    study.set_user_attr("spec", {"direction": direction, "objective": "toy"})
    study.set_user_attr("spec_name", "s")
    study.set_user_attr("arm", "optimizer=adam")
    for i, (state, value, role, extra) in enumerate(rows):
        study.add_trial(create_trial(state=state, value=value, params={"lr": 0.01 * (i + 1)},
                                     distributions=LR,
                                     user_attrs={"role": role, "arm": "optimizer=adam", **extra}))


ROWS = {
    "maximize": [(C, 0.5, "tune", {}), (C, math.inf, "tune", {}), (C, 0.8, "tune", {}),
                 (C, 0.8, "tune", {}), (C, 0.99, "seed", {}), (C, math.inf, "seed", {}),
                 (C, 0.7, "seed", {"diverged": True}), (P, 0.95, "tune", {}),
                 (F, None, "tune", {"fail_reason": "interrupted"})],
    "minimize": [(C, 0.5, "tune", {}), (C, -math.inf, "tune", {}), (C, 0.2, "tune", {}),
                 (C, 0.2, "tune", {}), (C, 0.01, "seed", {}), (P, 0.05, "tune", {})],
}


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_every_read_out_picks_the_same_best(storage_url, direction):
    arm_study(storage_url, direction, ROWS[direction])
    [status] = study_statuses(storage_url, "s")
    [arm] = status.arms
    assert (arm.best.number, arm.best.value) == (2, 0.8 if direction == "maximize" else 0.2)
    data = load_study_data(storage_url, "s")
    assert data.best_tune(data.arms[0]).number == arm.best.number  # the reports' rule
    engine = sa.create_engine(storage_url)
    try:
        with engine.connect() as conn:  # the API's SQL
            best = best_trial(conn, "s", direction)
            tally = tally_trials(conn, ["s"], {"s": direction})["s"]
    finally:
        engine.dispose()
    assert (best["number"], best["value"], best["arm"]) == (2, arm.best.value, "optimizer=adam")
    assert best["params"] == {"lr": pytest.approx(0.03)}
    assert tally.best_value == arm.best.value


def test_counts_and_seed_values(sqlite_url):
    arm_study(sqlite_url, "maximize", ROWS["maximize"])
    [arm] = study_statuses(sqlite_url, "s")[0].arms
    assert arm.counts == {"COMPLETE": 7, "PRUNED": 1, "FAIL": 1, "diverged": 1}
    # A seed re-run's inf is left out of the mean, as the report's seed table leaves it out.
    assert arm.seed_values == [0.99, 0.7] and arm.seed_mean == pytest.approx(0.845)
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        tally = tally_trials(conn, ["s", "none"], {"s": "maximize", "none": "minimize"})
    engine.dispose()
    assert tally["s"].retried == 1 and tally["s"].finished == 8
    assert tally["none"].best_value is None and not tally["none"].counts
    assert json.loads(json.dumps(tally["s"].counts)) == {"COMPLETE": 7, "PRUNED": 1, "FAIL": 1}
