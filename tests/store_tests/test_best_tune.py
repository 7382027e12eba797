"""An arm's best trial, the rule written once in `service.store.study_data`: its COMPLETE
tuning trials with a finite value, the earliest of equal values; read back from a real
storage through `load_study_data`."""

from __future__ import annotations

import datetime
import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from service.store.study_data import ArmData, devices, load_study_data

optuna.logging.set_verbosity(optuna.logging.WARNING)
LR = {"lr": FloatDistribution(1e-4, 1.0, log=True)}


def add(study: optuna.Study, state: TrialState, value: float | None, lr: float, **attrs):
    study.add_trial(create_trial(state=state, value=value, params={"lr": lr},
                                 distributions=LR, user_attrs=attrs))


def arm_of(url: str, direction: str, rows) -> ArmData:
    study = optuna.create_study(storage=url, study_name="s", direction=direction)
    study.set_user_attr("spec", {"direction": direction})
    for state, value, lr, attrs in rows:
        add(study, state, value, lr, **attrs)
    data = load_study_data(url, "s")
    assert data is not None and data.direction == direction
    return data.arms[0]


TUNE, SEED = {"role": "tune"}, {"role": "seed"}
C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL


def test_maximize_skips_seeds_pruned_failed_and_inf(sqlite_url):
    arm = arm_of(sqlite_url, "maximize", [
        (C, 0.5, 0.01, TUNE),
        (C, 0.99, 0.02, SEED),  # a replicate of the best, not a candidate
        (P, 0.95, 0.03, TUNE),  # a pruned run's value is of an earlier epoch
        (F, None, 0.04, {**TUNE, "fail_reason": "diverged"}),  # its metric was NaN
        (C, math.inf, 0.05, TUNE),  # would beat every real value
        (C, 0.7, 0.06, {}),  # no role: a tuning trial (as before roles were written)
        (C, 0.6, 0.07, TUNE),
    ])
    best = arm.best_tune("maximize")
    assert (best.number, best.value) == (5, 0.7)
    assert [t.number for t in arm.ranked_tune("maximize")] == [5, 6, 0]


def test_minimize(sqlite_url):
    arm = arm_of(sqlite_url, "minimize", [
        (C, 0.5, 0.01, TUNE), (C, -math.inf, 0.02, TUNE), (C, 0.2, 0.03, TUNE),
        (C, 0.1, 0.04, SEED), (C, 0.9, 0.05, TUNE)])
    assert arm.best_tune("minimize").number == 2
    assert [t.number for t in arm.ranked_tune("minimize")] == [2, 0, 4]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_ties_go_to_the_earliest_trial(sqlite_url, direction):
    """The runner re-runs the best with new seeds and the report names it: which one of
    equal values must not depend on the order trials happen to be listed in."""
    arm = arm_of(sqlite_url, direction, [
        (C, 0.3, 0.01, TUNE), (C, 0.8, 0.02, TUNE), (C, 0.8, 0.03, TUNE), (C, 0.8, 0.04, TUNE),
        (C, 0.1, 0.05, TUNE)])
    expected = 1 if direction == "maximize" else 4
    assert arm.best_tune(direction).number == expected
    shuffled = ArmData(arm.label, arm.values, arm.study_name, arm.trials[::-1])
    assert shuffled.best_tune(direction).number == expected
    assert [t.number for t in shuffled.ranked_tune(direction)] == \
        [t.number for t in arm.ranked_tune(direction)]


def test_no_candidate(sqlite_url):
    arm = arm_of(sqlite_url, "maximize", [(P, 0.9, 0.01, TUNE), (C, 0.9, 0.02, SEED),
                                          (F, None, 0.03, TUNE)])
    assert arm.best_tune("maximize") is None and arm.ranked_tune("maximize") == []


def test_a_nan_value_is_never_the_best():
    """Optuna fails a trial told NaN, but a FrozenTrial built by hand can carry one; NaN
    compares false both ways, so without the rule the best would depend on order."""
    now = datetime.datetime.now()

    def frozen(number: int, value: float) -> FrozenTrial:
        return FrozenTrial(number=number, state=C, value=value, datetime_start=now,
                           datetime_complete=now, params={}, distributions={},
                           user_attrs={}, system_attrs={}, intermediate_values={},
                           trial_id=number)

    for order in ([0, 1, 2], [1, 0, 2], [2, 1, 0]):
        trials = [[frozen(0, math.nan), frozen(1, 0.4), frozen(2, 0.2)][i] for i in order]
        arm = ArmData("", {}, "s", trials)
        assert arm.best_tune("maximize").number == 1
        assert arm.best_tune("minimize").number == 2


def test_study_best_tune_uses_its_direction(sqlite_url):
    study = optuna.create_study(storage=sqlite_url, study_name="s")
    study.set_user_attr("spec", {"direction": "minimize"})
    add(study, C, 0.5, 0.01, device="cpu")
    add(study, C, 0.2, 0.02, device="NVIDIA H200")
    add(study, C, 0.3, 0.03)
    data = load_study_data(sqlite_url, "s")
    assert data.best_tune(data.arms[0]).number == 1
    assert data.devices() == ["NVIDIA H200", "cpu"]
    assert devices(data.arms[0].trials[2:]) == []


def test_an_arms_selection_is_read_with_its_trials(sqlite_url):
    """The runner records how an arm's configuration was chosen on the arm's study; the
    rulebook's `selection` finding field reads it from `ArmData`."""
    arm = arm_of(sqlite_url, "maximize", [(C, 0.5, 0.01, TUNE)])
    assert arm.selection is None
    study = optuna.load_study(study_name="s", storage=sqlite_url)
    chosen = {"candidates_per_arm": 3, "seeds_per_candidate": 2, "chosen_trial": 0}
    study.set_user_attr("selection", chosen)
    assert load_study_data(sqlite_url, "s").arms[0].selection == chosen


def test_the_chosen_configuration_is_the_selections_else_the_best(sqlite_url):
    """The evidence seeds re-ran the configuration the selection chose, which need not be
    the single best tuning trial (that one may be a lucky draw)."""
    arm = arm_of(sqlite_url, "maximize", [(C, 0.9, 0.01, TUNE), (C, 0.8, 0.02, TUNE)])
    assert arm.chosen("maximize").number == 0
    study = optuna.load_study(study_name="s", storage=sqlite_url)
    study.set_user_attr("selection", {"chosen_trial": 1})
    assert load_study_data(sqlite_url, "s").arms[0].chosen("maximize").number == 1
