"""Choosing each arm's configuration without tuning luck: the top tuning configurations
re-run on candidate seeds, the best mean chosen (ties by validation loss, never by
order), then the chosen one on fresh seeds that alone are the evidence. Real Ray, real
SQLite, the planted world of `toy_objectives:noisy_quality`."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from service.run.runner import run_study
from service.run.selection import Candidate, choose
from service.spec import validate_spec

pytestmark = pytest.mark.usefixtures("ray_session")

QUALITY = {q: 0.9 - (q - 0.6) ** 2 for q in (0.2, 0.5, 0.6, 0.8, 1.0)}


def planted_spec(arms: dict | None = None, **budget):
    return validate_spec({
        "name": "pick", "objective": "toy_objectives:noisy_quality", "metric": "val_accuracy",
        "direction": "maximize", "scientific": arms or {},
        "nuisance": {"q": sorted(QUALITY)}, "fixed": {"epochs": 2, "lucky_q": 0.8},
        "budget": {"trials": 5, "seeds": 3, "max_concurrent": 2, **budget},
        "search": {"sampler": "grid", "pruner": "none", "seed": 0},
    })


def by_stage(study: optuna.Study) -> dict[str | None, list[optuna.trial.FrozenTrial]]:
    out: dict[str | None, list] = {}
    for t in study.trials:
        out.setdefault(t.user_attrs.get("stage"), []).append(t)
    return out


@pytest.mark.parametrize("arm", ["loss_tilt=0.0", "loss_tilt=0.001"])
def test_a_lucky_tuning_trial_is_not_chosen_the_best_mean_is(sqlite_url, arm):
    # Two arms (their val_loss tilts differ; their accuracies don't): each chooses alone.
    run_study(planted_spec({"loss_tilt": [0.0, 0.001]}, candidates=3, candidate_seeds=2),
              sqlite_url, show_progress=False)
    study = optuna.load_study(study_name=f"pick[{arm}]", storage=sqlite_url)
    stages = by_stage(study)
    tune, select, evidence = stages[None], stages["select"], stages["evidence"]
    assert len(tune) == 5 and all(t.user_attrs["role"] == "tune" for t in tune)
    best_tune = max(tune, key=lambda t: t.value)
    assert best_tune.params["q"] == 0.8  # the planted jackpot won the tuning

    # The top 3 tuning configurations (0.8 lucky, then 0.6, 0.5), each on seeds 2000, 2001.
    selection = study.user_attrs["selection"]
    assert selection["candidates_per_arm"] == 3 and selection["seeds_per_candidate"] == 2
    assert [c["params"]["q"] for c in selection["candidates"]] == [0.8, 0.6, 0.5]
    assert len(select) == 6 and all(t.state == TrialState.COMPLETE for t in select)
    assert all(t.user_attrs["role"] == "seed" for t in select)
    runs = {(t.user_attrs["candidate"], t.params["seed"]) for t in select}
    assert runs == {(c["trial"], s) for c in selection["candidates"] for s in (2000, 2001)}
    for c in selection["candidates"]:
        mine = [t.value for t in select if t.user_attrs["candidate"] == c["trial"]]
        assert all(t.params["q"] == c["params"]["q"]
                   for t in select if t.user_attrs["candidate"] == c["trial"])
        assert c["n"] == 2 and c["mean"] == pytest.approx(sum(mine) / 2)

    # The best mean, not the best tuning value, is chosen: q = 0.6, the true optimum.
    chosen = max(selection["candidates"], key=lambda c: c["mean"])
    assert selection["chosen_trial"] == chosen["trial"] != best_tune.number
    assert chosen["params"]["q"] == 0.6
    assert selection["chosen_by"].startswith("best mean val_accuracy over 2 candidate seeds")

    # The evidence: the chosen configuration on fresh seeds only.
    assert sorted(t.params["seed"] for t in evidence) == [1000, 1001, 1002]
    assert all(t.params["q"] == 0.6 and t.user_attrs["role"] == "seed" for t in evidence)
    assert all(abs(t.user_attrs["quality"] - QUALITY[0.6]) < 1e-12 for t in evidence)


def test_candidates_one_keeps_the_single_best_tuning_trial(sqlite_url):
    run_study(planted_spec(candidates=1, candidate_seeds=0), sqlite_url, show_progress=False)
    study = optuna.load_study(study_name="pick", storage=sqlite_url)
    stages = by_stage(study)
    assert "select" not in stages and len(stages["evidence"]) == 3
    assert all(t.params["q"] == 0.8 for t in stages["evidence"])  # the lucky one, as before
    selection = study.user_attrs["selection"]
    assert selection["candidates_per_arm"] == 1 and selection["seeds_per_candidate"] == 0
    assert selection["chosen_trial"] == max(stages[None], key=lambda t: t.value).number


def test_a_study_cancelled_mid_selection_resumes_it_without_repeating_a_run(sqlite_url):
    spec = planted_spec(candidates=3, candidate_seeds=2)
    spec = spec.model_copy(update={"fixed": {"epochs": 4, "sleep": 0.15, "lucky_q": 0.8}})

    def select_runs() -> list[optuna.trial.FrozenTrial]:
        try:
            study = optuna.load_study(study_name="pick", storage=sqlite_url)
        except KeyError:
            return []
        return by_stage(study).get("select", [])

    result = run_study(spec, sqlite_url, show_progress=False, should_stop=lambda: sum(
        t.state == TrialState.COMPLETE for t in select_runs()) >= 2)
    assert result.cancelled
    done_before = {(t.user_attrs["candidate"], t.params["seed"]): t.number
                   for t in select_runs() if t.state == TrialState.COMPLETE}
    assert 2 <= len(done_before) < 6
    study = optuna.load_study(study_name="pick", storage=sqlite_url)
    assert study.user_attrs["selection"]["chosen_trial"] is None  # not chosen yet

    run_study(spec, sqlite_url, show_progress=False)
    study = optuna.load_study(study_name="pick", storage=sqlite_url)
    stages = by_stage(study)
    complete = [t for t in stages["select"] if t.state == TrialState.COMPLETE]
    keys = [(t.user_attrs["candidate"], t.params["seed"]) for t in complete]
    assert len(keys) == len(set(keys)) == 6  # each candidate run once per seed, no repeats
    numbers = {k: t.number for k, t in zip(keys, complete, strict=True)}
    assert all(numbers[k] == n for k, n in done_before.items())  # the finished ones kept
    others = [t for t in stages["select"] if t.state != TrialState.COMPLETE]
    assert all(t.user_attrs["fail_reason"] == "cancelled" for t in others)
    selection = study.user_attrs["selection"]
    chosen = next(c for c in selection["candidates"] if c["trial"] == selection["chosen_trial"])
    assert chosen["params"]["q"] == 0.6 and all(c["n"] == 2 for c in selection["candidates"])
    assert len(stages["evidence"]) == 3 and len(stages[None]) == 5


DRIVER = """
import json, sys
from service.run.runner import run_study
from service.spec import validate_spec
run_study(validate_spec(json.loads(sys.argv[1])), sys.argv[2], ray_address=sys.argv[3],
          show_progress=False)
"""


@pytest.mark.slow
def test_a_driver_killed_mid_selection_resumes_it_without_repeating_a_run(sqlite_url,
                                                                             tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import ray

    from service.store.storage import open_storage

    spec = planted_spec(candidates=3, candidate_seeds=2).model_dump(mode="json")
    # The gate (toy_objectives._gate) lets 2 candidate runs (seeds >= 2000) finish and holds
    # the next ones in their second epoch until it opens: the kill lands mid-selection.
    gate = tmp_path / "gate"
    spec["fixed"].update(epochs=2, sleep=0.05, gate=str(gate), gate_free=2,
                         gate_from_seed=2000)
    storage = open_storage(sqlite_url)

    def trials() -> list[optuna.trial.FrozenTrial]:
        try:
            return optuna.load_study(study_name="pick", storage=storage).trials
        except KeyError:
            return []

    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(spec), sqlite_url,
         ray.get_runtime_context().gcs_address],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:  # kill it once 2 candidate runs are done and another waits at the gate
        while time.monotonic() < deadline and driver.poll() is None:
            select = [t for t in trials() if t.user_attrs.get("stage") == "select"]
            if (sum(t.state == TrialState.COMPLETE for t in select) >= 2
                    and any(gate.glob("waiting-*"))):
                break
            time.sleep(0.05)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        _, err = driver.communicate()
        (gate / "open").touch()
    assert driver.returncode == -signal.SIGKILL, err[-2000:]
    before = {t.number: t.state for t in trials()}

    run_study(validate_spec(spec), sqlite_url, show_progress=False)
    study = optuna.load_study(study_name="pick", storage=storage)
    stages = by_stage(study)
    interrupted = [t for t in stages["select"] if t.state == TrialState.FAIL]
    assert interrupted and all(before[t.number] == TrialState.RUNNING for t in interrupted)
    assert all(t.user_attrs["fail_reason"] == "interrupted" for t in interrupted)
    complete = [t for t in stages["select"] if t.state == TrialState.COMPLETE]
    keys = [(t.user_attrs["candidate"], t.params["seed"]) for t in complete]
    assert len(keys) == len(set(keys)) == 6  # every candidate run once per seed
    assert {(t.user_attrs["candidate"], t.params["seed"]) for t in interrupted} <= set(keys)
    selection = study.user_attrs["selection"]
    chosen = next(c for c in selection["candidates"] if c["trial"] == selection["chosen_trial"])
    assert chosen["params"]["q"] == 0.6
    assert sorted(t.params["seed"] for t in stages["evidence"]) == [1000, 1001, 1002]
    assert len(stages[None]) == 5  # the tuning was not run again


def _candidate(trial: int, means: list[float], loss: float, tune: float) -> Candidate:
    return Candidate(trial, {"q": trial}, tune, values=dict(enumerate(means)),
                     val_losses=dict.fromkeys(range(len(means)), loss))


def test_equal_means_go_to_the_lower_validation_loss_in_either_order():
    a = _candidate(1, [0.9, 0.8], loss=0.30, tune=0.95)
    b = _candidate(2, [0.8, 0.9], loss=0.20, tune=0.90)
    for order in ([a, b], [b, a]):
        chosen, how = choose(order, "maximize", "val_accuracy")
        assert chosen is b and "tied means broken by mean val_loss" in how


def test_a_candidate_with_a_failed_rerun_ranks_below_complete_ones():
    shaky = _candidate(1, [0.99], loss=0.1, tune=0.99)
    shaky.values[1] = None  # its second seed diverged to NaN
    steady = _candidate(2, [0.9, 0.9], loss=0.1, tune=0.9)
    assert choose([shaky, steady], "maximize", "val_accuracy")[0] is steady
    low = _candidate(3, [0.2, 0.3], loss=0.1, tune=0.1)
    assert choose([steady, low], "minimize", "val_loss")[0] is low
