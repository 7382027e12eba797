"""The runner on real Ray and real SQLite: trial records, pruning, divergence, failures,
samplers, resuming. Pure-Python objectives keep these fast; `test_cli` runs digits_cnn."""

from __future__ import annotations

import os

import optuna
import pytest
from optuna.trial import TrialState

from service.run.runner import StudyConflict, run_study
from service.spec import validate_spec

pytestmark = pytest.mark.usefixtures("ray_session")


def spec_of(**overrides):
    base = {
        "name": "toy",
        "objective": "toy_objectives:quadratic",
        "metric": "val_loss",
        "direction": "minimize",
        "nuisance": {"x": {"low": -2.0, "high": 3.0}},
        "fixed": {"epochs": 4},
        "budget": {"trials": 6, "seeds": 0, "max_concurrent": 2},
        "search": {"sampler": "random", "pruner": "none", "seed": 0},
    }
    base.update(overrides)
    return validate_spec(base)


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).trials


def test_user_objective_records_the_trial_contract(sqlite_url):
    result = run_study(spec_of(), sqlite_url, show_progress=False)
    trials = trials_of(sqlite_url, "toy")
    assert result.started == 6 and len(trials) == 6
    for t in trials:
        assert t.state == TrialState.COMPLETE
        assert set(t.params) == {"x", "epochs", "seed"}
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]  # the last epoch included
        assert t.value == pytest.approx(t.intermediate_values[4])
        assert t.user_attrs["role"] == "tune"
        assert t.user_attrs["device"] == "cpu"
        assert len(t.user_attrs["node_id"]) > 20
        assert t.user_attrs["val_loss"] == pytest.approx(t.value)
        assert t.user_attrs["epoch"] == 4
        # A pure-Python objective never pays for importing torch in its worker.
        assert t.user_attrs["torch_loaded"] is False


def test_arms_get_equal_budgets_and_seed_reruns_of_their_best(sqlite_url):
    spec = spec_of(
        objective="toy_objectives:accuracy_curve", metric="val_accuracy", direction="maximize",
        scientific={"epochs": [3, 5]}, nuisance={"lr": {"low": 1e-3, "high": 0.5, "log": True}},
        fixed={}, budget={"trials": 5, "seeds": 3, "max_concurrent": 2, "candidates": 1,
                          "candidate_seeds": 0},  # the best tuning trial alone (test_selection)
    )
    run_study(spec, sqlite_url, show_progress=False)
    for arm in ("epochs=3", "epochs=5"):
        study = optuna.load_study(study_name=f"toy[{arm}]", storage=sqlite_url)
        assert study.user_attrs["arm"] == arm and study.user_attrs["spec_name"] == "toy"
        tune = [t for t in study.trials if t.user_attrs["role"] == "tune"]
        seeds = [t for t in study.trials if t.user_attrs["role"] == "seed"]
        assert len(tune) == 5 and len(seeds) == 3
        assert all(t.user_attrs["arm"] == arm for t in study.trials)
        best = max((t for t in tune if t.state == TrialState.COMPLETE), key=lambda t: t.value)
        for t in seeds:
            assert t.state == TrialState.COMPLETE
            assert t.params["lr"] == best.params["lr"]  # the arm's best, re-run
        assert sorted(t.params["seed"] for t in seeds) == [1000, 1001, 1002]
        assert sorted(t.user_attrs["seed_seen"] for t in seeds) == [1000, 1001, 1002]
        assert {t.params["seed"] for t in tune} == {0}


def test_asha_stopped_trials_are_pruned_not_complete(sqlite_url):
    spec = spec_of(
        objective="toy_objectives:accuracy_curve", metric="val_accuracy", direction="maximize",
        nuisance={"lr": {"low": 1e-4, "high": 0.9, "log": True}}, fixed={"epochs": 9},
        budget={"trials": 12, "seeds": 0, "max_concurrent": 2},
        search={"sampler": "random", "pruner": "asha", "seed": 3},
    )
    run_study(spec, sqlite_url, show_progress=False)
    trials = trials_of(sqlite_url, "toy")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned, "ASHA at reduction factor 3 over 12 trials must stop some"
    for t in pruned:
        assert max(t.intermediate_values) < 9
        assert t.value == t.intermediate_values[max(t.intermediate_values)]
        assert t.user_attrs["role"] == "tune" and "node_id" in t.user_attrs
    for t in complete:
        assert sorted(t.intermediate_values) == list(range(1, 10))


def test_diverged_trial_is_recorded_and_the_study_goes_on(sqlite_url):
    spec = spec_of(
        objective="toy_objectives:accuracy_curve", metric="val_accuracy", direction="maximize",
        nuisance={"lr": [0.03, 5.0, 0.1]}, fixed={"epochs": 4},
        budget={"trials": 3, "seeds": 0, "max_concurrent": 1},
        search={"sampler": "grid", "pruner": "none"},
    )
    result = run_study(spec, sqlite_url, show_progress=False)
    trials = {t.params["lr"]: t for t in trials_of(sqlite_url, "toy")}
    assert set(trials) == {0.03, 5.0, 0.1}
    bad = trials[5.0]
    assert bad.state == TrialState.COMPLETE and bad.user_attrs["diverged"] is True
    assert bad.value == pytest.approx(0.1) and max(bad.intermediate_values) == 2
    assert all(trials[lr].user_attrs["diverged"] is False for lr in (0.03, 0.1))
    assert result.ledger.outcomes["diverged"] == 1 and result.ledger.outcomes["complete"] == 2


def test_a_failing_objective_is_a_failed_trial_not_a_failed_study(sqlite_url):
    spec = spec_of(objective="toy_objectives:broken", nuisance={"x": [0.2, 0.9, 0.4]},
                   fixed={}, budget={"trials": 3, "seeds": 0, "max_concurrent": 2},
                   search={"sampler": "grid", "pruner": "none"})
    run_study(spec, sqlite_url, show_progress=False)
    trials = {t.params["x"]: t for t in trials_of(sqlite_url, "toy")}
    assert {x: t.state for x, t in trials.items()} == {
        0.2: TrialState.COMPLETE, 0.9: TrialState.FAIL, 0.4: TrialState.COMPLETE}
    failed = trials[0.9]
    assert failed.user_attrs["fail_reason"] == "error"
    assert failed.user_attrs["error"] == "RuntimeError: boom"
    assert "toy_objectives.py" in failed.user_attrs["traceback"]


def test_a_trial_whose_worker_dies_is_retried_and_completes(sqlite_url, tmp_path):
    marker = tmp_path / "died-once"
    spec = spec_of(objective="toy_objectives:dies_once", nuisance={"x": [0.0]},
                   fixed={"marker": str(marker), "epochs": 3},
                   budget={"trials": 1, "seeds": 0, "max_concurrent": 1},
                   search={"sampler": "grid", "pruner": "none"})
    run_study(spec, sqlite_url, show_progress=False)
    assert marker.read_text() == "died"  # the first attempt really was killed
    (trial,) = trials_of(sqlite_url, "toy")
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2, 3]


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "cmaes", "gp"])
def test_every_sampler_runs_its_budget(sqlite_url, sampler):
    x = {"low": -2.0, "high": 3.0, "step": 0.5} if sampler == "grid" else {"low": -2.0,
                                                                           "high": 3.0}
    spec = spec_of(nuisance={"x": x}, budget={"trials": 8, "seeds": 0, "max_concurrent": 2},
                   search={"sampler": sampler, "pruner": "none", "seed": 1})
    run_study(spec, sqlite_url, show_progress=False)
    trials = trials_of(sqlite_url, "toy")
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    if sampler == "grid":
        assert len({t.params["x"] for t in trials}) == 8  # no grid point twice


@pytest.mark.parametrize("pruner", ["asha", "median", "hyperband", "none"])
def test_every_pruner_keeps_the_record_contract(sqlite_url, pruner):
    spec = spec_of(objective="toy_objectives:accuracy_curve", metric="val_accuracy",
                   direction="maximize", nuisance={"lr": {"low": 1e-4, "high": 0.9, "log": True}},
                   fixed={"epochs": 6}, budget={"trials": 8, "seeds": 0, "max_concurrent": 2},
                   search={"sampler": "random", "pruner": pruner, "seed": 5})
    run_study(spec, sqlite_url, show_progress=False)
    trials = trials_of(sqlite_url, "toy")
    assert len(trials) == 8
    for t in trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        last = max(t.intermediate_values)
        assert t.value == pytest.approx(t.intermediate_values[last])
        assert (last == 6) == (t.state == TrialState.COMPLETE)
    if pruner == "none":
        assert all(t.state == TrialState.COMPLETE for t in trials)


def test_running_again_resumes_without_rerunning_finished_trials(sqlite_url):
    spec = spec_of()
    run_study(spec, sqlite_url, show_progress=False)
    # A driver that died mid-study leaves a RUNNING trial behind.
    study = optuna.load_study(study_name="toy", storage=sqlite_url)
    stale = study.ask({"x": optuna.distributions.FloatDistribution(-2, 3)})
    stale.set_user_attr("role", "tune")
    bigger = spec.model_copy(update={"budget": spec.budget.model_copy(update={"trials": 8})})
    result = run_study(bigger, sqlite_url, show_progress=False)
    assert result.started == 2
    trials = trials_of(sqlite_url, "toy")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in failed] == ["interrupted"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 8
    assert run_study(bigger, sqlite_url, show_progress=False).started == 0


def test_a_different_spec_under_the_same_name_is_refused(sqlite_url):
    run_study(spec_of(), sqlite_url, show_progress=False)
    other = spec_of(nuisance={"x": {"low": 0.0, "high": 1.0}})
    with pytest.raises(StudyConflict, match="nuisance"):
        run_study(other, sqlite_url, show_progress=False)


@pytest.mark.postgres
def test_postgresql_storage_records_the_same_contract(pg_url):
    spec = spec_of(budget={"trials": 4, "seeds": 1, "max_concurrent": 2, "candidates": 2,
                           "candidate_seeds": 1})
    run_study(spec, pg_url, show_progress=False)
    trials = trials_of(pg_url, "toy")
    assert len(trials) == 7  # 4 tuning, 2 candidates x 1 seed, 1 evidence
    assert [t.user_attrs.get("stage") for t in trials].count("select") == 2
    assert [t.user_attrs.get("stage") for t in trials].count("evidence") == 1
    selection = optuna.load_study(study_name="toy", storage=pg_url).user_attrs["selection"]
    assert selection["chosen_trial"] in [c["trial"] for c in selection["candidates"]]
    for t in trials:
        assert t.state == TrialState.COMPLETE
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]


def test_cancel_stops_running_trials_and_a_resume_finishes_the_budget(sqlite_url):
    import time

    spec = spec_of(fixed={"epochs": 30, "sleep": 0.1},
                   budget={"trials": 6, "seeds": 0, "max_concurrent": 2})
    start = time.monotonic()
    result = run_study(spec, sqlite_url, show_progress=False,
                       should_stop=lambda: time.monotonic() - start > 4)
    assert result.cancelled
    assert time.monotonic() - start < 20  # stopped within an epoch or two, not at 6x3 s
    trials = trials_of(sqlite_url, "toy")
    assert all(t.state != TrialState.RUNNING for t in trials)
    cancelled = [t for t in trials if t.user_attrs.get("fail_reason") == "cancelled"]
    assert cancelled and all(t.state == TrialState.FAIL for t in cancelled)
    assert all(max(t.intermediate_values, default=0) < 30 for t in cancelled)
    # Resuming spends the cancelled trials' budget again; finished ones are kept.
    run_study(spec, sqlite_url, show_progress=False)
    trials = trials_of(sqlite_url, "toy")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6


@pytest.mark.postgres
@pytest.mark.slow
def test_a_postgresql_restart_mid_study_loses_nothing(pg_url):
    import shutil
    import subprocess
    import threading
    import time
    from pathlib import Path

    etc = Path("/etc/postgresql")
    versions = sorted(etc.glob("*")) if etc.exists() else []
    if not shutil.which("pg_ctlcluster") or not versions or os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs pg_ctlcluster and root")
    spec = spec_of(fixed={"epochs": 4, "sleep": 0.25},
                   budget={"trials": 8, "seeds": 0, "max_concurrent": 2})
    restarted: list[float] = []

    def restart_when_busy() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                done = [t for t in trials_of(pg_url, "toy") if t.state == TrialState.COMPLETE]
            except Exception:  # noqa: BLE001 - the study may not exist yet
                done = []
            if len(done) >= 2:
                break
            time.sleep(0.2)
        t0 = time.time()
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name,
                        "main", "restart"], check=True, capture_output=True)
        restarted.append(time.time() - t0)

    thread = threading.Thread(target=restart_when_busy)
    thread.start()
    run_study(spec, pg_url, show_progress=False)
    thread.join()
    assert restarted, "PostgreSQL was never restarted"
    trials = trials_of(pg_url, "toy")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 8
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4]
               for t in trials if t.state == TrialState.COMPLETE)


def test_a_running_trials_curve_is_stored_while_it_runs_in_batches(sqlite_url, monkeypatch):
    # Epochs of 0.1 s are written at most every WRITE_EVERY_S, so the dashboard sees a
    # running trial's curve grow during the run, a few epochs per database write.
    import threading
    import time

    from service.run import ledger
    from service.store import storage

    writes: list[int] = []
    real = storage.ResilientRDBStorage.set_trial_record

    def counting(self, trial_id, attrs, curve=None):
        if curve:
            writes.append(len(curve))
        return real(self, trial_id, attrs, curve)

    monkeypatch.setattr(storage.ResilientRDBStorage, "set_trial_record", counting)
    monkeypatch.setattr(ledger, "WRITE_EVERY_S", 0.5)
    spec = spec_of(fixed={"epochs": 20, "sleep": 0.1},
                   budget={"trials": 1, "seeds": 0, "max_concurrent": 1})
    seen: list[int] = []  # lengths of a RUNNING trial's stored curve, as a reader sees them
    done = threading.Event()

    def watch() -> None:
        reader = None
        while not done.is_set():
            try:
                reader = reader or storage.open_storage(sqlite_url)  # as the dashboard would
                study = optuna.load_study(study_name="toy", storage=reader)
                seen.extend(len(t.intermediate_values) for t in study.trials
                            if t.state == TrialState.RUNNING)
            except KeyError:  # the study does not exist yet
                pass
            time.sleep(0.1)

    reader = threading.Thread(target=watch)
    reader.start()
    try:
        run_study(spec, sqlite_url, show_progress=False)
    finally:
        done.set()
        reader.join()
    (trial,) = trials_of(sqlite_url, "toy")
    assert sorted(trial.intermediate_values) == list(range(1, 21))
    assert any(0 < n < 20 for n in seen), seen  # visible while running
    assert sum(writes) == 20 and 2 <= len(writes) <= 10, writes  # batched, not per epoch


def test_trials_no_scheduler_can_stop_send_their_epochs_together(sqlite_url, monkeypatch):
    # Every tune.report holds the trial until the driver has taken it. A trial that no
    # pruner can stop (here: pruner none) sends its short epochs in a few reports, and
    # every epoch still reaches the storage as an intermediate value under its own number.
    from service.run import search

    monkeypatch.setattr(search, "REPORT_EVERY_S", 0.25)
    spec = spec_of(fixed={"epochs": 20, "sleep": 0.05},
                   budget={"trials": 2, "seeds": 0, "max_concurrent": 2})
    result = run_study(spec, sqlite_url, show_progress=False)
    for t in trials_of(sqlite_url, "toy"):
        assert t.state == TrialState.COMPLETE
        assert sorted(t.intermediate_values) == list(range(1, 21))
        x = t.params["x"]
        assert t.intermediate_values[7] == pytest.approx((x - 1) ** 2 + 1 / 7)
        assert t.user_attrs["epoch"] == 20 and "__liandan_step" not in t.user_attrs
    # 1 s of epochs each, a report at most every 0.25 s: ~4-5 reports a trial, not 20.
    assert 2 <= result.ledger.reports["tune"] <= 2 * 8, result.ledger.reports


def test_a_pruner_gets_every_epoch_and_seed_reruns_report_together(sqlite_url, monkeypatch):
    from service.run import search

    monkeypatch.setattr(search, "REPORT_EVERY_S", 0.25)
    spec = spec_of(objective="toy_objectives:accuracy_curve", metric="val_accuracy",
                   direction="maximize", nuisance={"lr": {"low": 1e-3, "high": 0.5}},
                   fixed={"epochs": 12, "sleep": 0.05},
                   budget={"trials": 1, "seeds": 1, "max_concurrent": 1},
                   search={"sampler": "random", "pruner": "asha", "seed": 0})
    result = run_study(spec, sqlite_url, show_progress=False)
    trials = trials_of(sqlite_url, "toy")
    assert [t.user_attrs["role"] for t in trials] == ["tune", "seed"]
    assert all(sorted(t.intermediate_values) == list(range(1, 13)) for t in trials)
    # The tuning trial could be pruned after any epoch, so it reported each one (the
    # driver takes the last one at completion); the seed re-run can't be: a few reports.
    assert result.ledger.reports["tune"] >= 11, result.ledger.reports
    assert result.ledger.reports["seed"] <= 6, result.ledger.reports
