"""The Core reader returns exactly what Optuna's own `get_trials` returns, trial for trial."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from service.store.storage import open_storage
from service.store.study_data import load_study_data
from service.store.trial_rows import read_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "lr": FloatDistribution(1e-4, 1.0, log=True),
    "wd": FloatDistribution(0.0, 0.1, step=0.01),
    "batch_size": IntDistribution(16, 256, log=True),
    "optimizer": CategoricalDistribution(["adam", "momentum"]),
    "batchnorm": CategoricalDistribution([True, False]),
    "mixed": CategoricalDistribution([None, 1, 2.5, "x"]),
    "seed": IntDistribution(3, 3),
}


def fill(study: optuna.Study, n_objectives: int = 1) -> None:
    """Every state and every awkward value Optuna stores."""
    for i in range(6):
        t = study.ask(SPACE)
        t.set_user_attr("role", "tune" if i % 2 else "seed")
        t.set_user_attr("nested", {"a": [1, 2, {"b": None}], "f": 0.1 * i})
        t.storage.set_trial_system_attr(t._trial_id, "sys", [i, "x"])
        for step, value in enumerate([0.1 * i, math.nan, math.inf, -math.inf, 0.5]):
            if n_objectives == 1:
                t.report(value, step)
        if i == 0:
            study.tell(t, state=TrialState.PRUNED)
        elif i == 1:
            study.tell(t, state=TrialState.FAIL)
        elif i == 2:
            pass  # left RUNNING
        elif i == 3:
            study.tell(t, [math.inf] * n_objectives if n_objectives > 1 else math.inf)
        else:
            study.tell(t, [0.5 * i + k for k in range(n_objectives)] if n_objectives > 1
                       else 0.5 * i)
    study.enqueue_trial({"lr": 0.01})  # WAITING


@pytest.mark.parametrize("directions", [["maximize"], ["minimize", "maximize"]])
def test_read_trials_equals_get_trials(sqlite_url, directions):
    study = optuna.create_study(storage=sqlite_url, study_name="s", directions=directions)
    fill(study, len(directions))
    other = optuna.create_study(storage=sqlite_url, study_name="other")
    fill(other)  # trials of another study must not leak in
    reference = optuna.load_study(study_name="s", storage=sqlite_url).get_trials()
    for storage in (open_storage(sqlite_url), optuna.storages.get_storage(sqlite_url)):
        got = read_trials(storage, study._study_id)
        assert [t.state for t in got] == [t.state for t in reference]
        assert {t.state for t in got} == {TrialState.PRUNED, TrialState.FAIL,
                                          TrialState.RUNNING, TrialState.COMPLETE,
                                          TrialState.WAITING}
        for mine, theirs in zip(got, reference, strict=True):
            # NaN != NaN, so compare intermediate values by their repr.
            assert repr(mine.intermediate_values) == repr(theirs.intermediate_values)
            mine_rest = {k: v for k, v in vars(mine).items() if k != "intermediate_values"}
            theirs_rest = {k: v for k, v in vars(theirs).items()
                           if k != "intermediate_values"}
            assert mine_rest == theirs_rest


def test_other_storages_use_optunas_api():
    study = optuna.create_study()
    fill(study)
    assert read_trials(study._storage, study._study_id) == study.get_trials(deepcopy=False)


def test_load_study_data_groups_arms_in_creation_order(sqlite_url):
    for label in ("b=2", "b=1"):
        study = optuna.create_study(storage=sqlite_url, study_name=f"x[{label}]")
        study.set_user_attr("spec", {"name": "x"})
        study.set_user_attr("spec_name", "x")
        study.set_user_attr("arm", label)
        study.set_user_attr("arm_values", {"b": int(label[-1])})
        study.add_trial(optuna.trial.create_trial(value=1.0))
    data = load_study_data(sqlite_url, "x")
    assert [a.label for a in data.arms] == ["b=2", "b=1"]
    assert [len(a.trials) for a in data.arms] == [1, 1]
    assert load_study_data(sqlite_url, "missing") is None
