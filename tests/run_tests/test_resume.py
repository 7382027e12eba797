"""Resume never replays: a seeded study killed mid-run and run again does not repeat the
configurations it finished, and runs each interrupted one again exactly once, for every
sampler, on SQLite and PostgreSQL.

The killed run is a real driver in a subprocess (attached to the session's Ray, so no
Ray start per case), SIGKILLed while a trial runs once some are COMPLETE; the resume is
`run_study` here. Trials are compared with an uninterrupted run of the same spec: a
sampler may propose a point twice on its own (the grid never does, and the continuous
samplers practically never), and a resume must not add repeats to that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
import ray
from optuna.trial import TrialState

from service.plan import make_plan
from service.run.ledger import Ledger
from service.run.runner import run_study
from service.run.search import RERUN_OF
from service.run.study_search import StudySearch
from service.spec import validate_spec
from service.store.storage import open_storage

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]

SAMPLERS = ["tpe", "random", "grid", "cmaes", "gp"]
BUDGET, KILL_AFTER = 6, 2  # tuning trials; COMPLETE ones before the kill

DRIVER = """
import json, sys
from service.run.runner import run_study
from service.spec import validate_spec
run_study(validate_spec(json.loads(sys.argv[1])), sys.argv[2], ray_address=sys.argv[3],
          show_progress=False)
"""


def spec_dict(sampler: str, sleep: float, gate: str | None = None) -> dict:
    # The grid's 6 points are the whole budget: a point run twice would leave one out.
    x = {"low": -2.0, "high": 3.0, "step": 1.0} if sampler == "grid" else {"low": -2.0,
                                                                           "high": 3.0}
    return {
        "name": "resume", "objective": "toy_objectives:quadratic", "metric": "val_loss",
        "direction": "minimize", "nuisance": {"x": x},
        # The gate (toy_objectives._gate) lets KILL_AFTER trials finish, then holds the
        # others in their second epoch until it opens: the kill lands mid-trial, surely.
        "fixed": {"epochs": 2, "sleep": sleep,
                  **({"gate": gate, "gate_free": KILL_AFTER} if gate else {})},
        "budget": {"trials": BUDGET, "seeds": 0, "max_concurrent": 2},
        "search": {"sampler": sampler, "pruner": "none", "seed": 7},
    }


@pytest.fixture
def own_pg_url():
    """A PostgreSQL schema of this test's own (the shared `pg_url` resets schema `public`,
    which a concurrent test session may do mid-run); skipped where there is no server."""
    import uuid

    sqlalchemy = pytest.importorskip("sqlalchemy")
    from tests.conftest import PG_URL

    schema = f"resume_{uuid.uuid4().hex[:12]}"
    try:
        engine = sqlalchemy.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:  # noqa: BLE001 - any connection problem means "no server here"
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}")
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    yield url
    if url in _storages:
        _storages.pop(url).engine.dispose()
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


_storages: dict[str, optuna.storages.BaseStorage] = {}


def trials_of(url: str) -> list[optuna.trial.FrozenTrial]:
    # One storage per URL: polling with a new engine each time would pile up connections.
    if url not in _storages:
        _storages[url] = open_storage(url)
    storage = _storages[url]
    try:
        return optuna.load_study(study_name="resume", storage=storage).trials
    except KeyError:  # not created yet
        return []


def repeats(trials: list[optuna.trial.FrozenTrial]) -> int:
    """COMPLETE tuning trials whose configuration an earlier COMPLETE one already had."""
    done = Counter(t.params["x"] for t in trials if t.state == TrialState.COMPLETE
                   and t.user_attrs["role"] == "tune")
    return sum(n - 1 for n in done.values())


def kill_mid_trial(spec: dict, url: str) -> list[optuna.trial.FrozenTrial]:
    """Run `spec` in a driver process and SIGKILL it once KILL_AFTER trials are COMPLETE
    and a trial waits at the gate (mid-run until the gate opens), then open the gate."""
    import json
    from pathlib import Path

    gate = Path(spec["fixed"]["gate"])
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(spec), url, address],
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            trials = trials_of(url)
            done = sum(t.state == TrialState.COMPLETE for t in trials)
            if done >= KILL_AFTER and any(gate.glob("waiting-*")):
                break
            time.sleep(0.05)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        _, err = driver.communicate()
        (gate / "open").touch()  # the resumed trials pass
    assert driver.returncode == -signal.SIGKILL, f"the driver ended by itself: {err[-2000:]}"
    return trials_of(url)


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_killed_study_resumes_without_replaying_and_reruns_the_interrupted(
        request, tmp_path, sampler, storage):
    url = (f"sqlite:///{tmp_path / 'killed.db'}" if storage == "sqlite"
           else request.getfixturevalue("own_pg_url"))
    spec = spec_dict(sampler, sleep=0.1, gate=str(tmp_path / "gate"))
    open_storage(url)  # the tables, before the driver and this poller race to create them
    before = kill_mid_trial(spec, url)
    finished = {t.number: t.params for t in before if t.state == TrialState.COMPLETE}
    assert len(finished) >= KILL_AFTER

    run_study(validate_spec(spec), url, show_progress=False)
    after = trials_of(url)
    by_number = {t.number: t for t in after}
    # Nothing finished was lost or run again.
    assert all(by_number[n].params == p and by_number[n].state == TrialState.COMPLETE
               for n, p in finished.items())
    # Every interrupted configuration ran again, exactly once, and finished. (A trial
    # killed while its sampler was still choosing had no configuration: nothing to re-run.)
    interrupted = [t for t in after if t.user_attrs.get("fail_reason") == "interrupted"]
    assert {t.number for t in before if t.state == TrialState.RUNNING} == {
        t.number for t in interrupted}
    space = set(next(t for t in after if t.state == TrialState.COMPLETE).params)
    chosen = [t for t in interrupted if set(t.params) >= space]
    assert chosen, "the kill left no trial mid-run"
    for t in interrupted:
        reruns = [r for r in after if r.user_attrs.get(RERUN_OF) == t.number]
        assert len(reruns) == any(t.number == c.number for c in chosen)
        assert all(r.params == t.params and r.state == TrialState.COMPLETE for r in reruns)
    # The budget, exactly: every trial either finished or is an interrupted one re-run.
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == BUDGET
    assert len(after) == BUDGET + len(interrupted)  # the unchosen ones' budget: fresh
    # (One killed between its ask and its record may lack the role: the budget was its.)
    assert all(t.user_attrs.get("role", "tune") == "tune" for t in after)

    # The same spec uninterrupted (epochs without sleep: the proposals don't depend on it).
    fresh_url = f"sqlite:///{tmp_path / 'uninterrupted.db'}"
    run_study(validate_spec(spec_dict(sampler, sleep=0.0)), fresh_url, show_progress=False)
    assert repeats(after) <= repeats(trials_of(fresh_url))
    if sampler == "grid":  # every proposal a new grid point, as uninterrupted
        assert len({t.params["x"] for t in complete}) == BUDGET


def test_each_unfinished_trial_gets_one_rerun_however_often_the_run_is_resumed(sqlite_url):
    """Resumes that die before (or while) running the re-runs: each unfinished trial still
    has exactly one re-run, and a re-run that was itself interrupted gets its own."""
    spec = validate_spec({**spec_dict("random", 0.0), "budget": {
        "trials": 3, "seeds": 0, "max_concurrent": 1}})
    plan, storage = make_plan(spec), open_storage(sqlite_url)
    StudySearch(plan, storage, Ledger(spec.direction))  # creates the study
    study = optuna.load_study(study_name="resume", storage=storage)
    dist = plan.distributions(plan.arms[0])
    for _ in range(2):  # two tuning trials a dead driver left RUNNING
        study.ask(dist).set_user_attr("role", "tune")

    def resume() -> StudySearch:
        return StudySearch(plan, storage, Ledger(spec.direction))

    resume()
    resume()  # died again before running anything: no second re-run is queued
    trials = study.get_trials()
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs[RERUN_OF] for t in waiting) == [0, 1]
    # (Optuna keeps an enqueued trial's parameters aside until it is asked.)
    assert [t.system_attrs["fixed_params"] for t in waiting] == [trials[0].params,
                                                                 trials[1].params]
    assert resume().remaining == 3  # the re-runs are the interrupted trials' budget

    # The first re-run starts and its driver dies too: it gets a re-run of its own.
    rerun = study.ask(dist)
    assert rerun.user_attrs[RERUN_OF] == 0
    resume()
    trials = study.get_trials()
    assert Counter(t.user_attrs.get(RERUN_OF) for t in trials) == {
        None: 2, 0: 1, 1: 1, rerun.number: 1}
    assert trials[-1].state == TrialState.WAITING
    assert trials[-1].system_attrs["fixed_params"] == trials[0].params


def test_re_runs_never_exceed_the_tuning_budget_left(sqlite_url):
    """A resume with a lower budget queues only what the budget has room for, so a seed
    re-run's ask never takes a queued tuning trial; a larger budget later runs the rest."""
    def spec_with(trials: int):
        return validate_spec({**spec_dict("random", 0.0), "budget": {
            "trials": trials, "seeds": 0, "max_concurrent": 1}})

    storage = open_storage(sqlite_url)
    plan = make_plan(spec_with(3))
    StudySearch(plan, storage, Ledger("minimize"))
    study = optuna.load_study(study_name="resume", storage=storage)
    for _ in range(3):  # three tuning trials a dead driver left RUNNING
        study.ask(plan.distributions(plan.arms[0])).set_user_attr("role", "tune")
    StudySearch(make_plan(spec_with(3)), storage, Ledger("minimize"))
    assert sum(t.state == TrialState.WAITING for t in study.get_trials()) == 3

    StudySearch(make_plan(spec_with(1)), storage, Ledger("minimize"))  # budget lowered
    trials = study.get_trials()
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.user_attrs[RERUN_OF] for t in waiting] == [0]
    assert sum(t.user_attrs.get("fail_reason") == "cancelled" for t in trials) == 2

    StudySearch(make_plan(spec_with(3)), storage, Ledger("minimize"))  # and raised again
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert len(waiting) == 3 and waiting[0].user_attrs[RERUN_OF] == 0
    assert [t.system_attrs["fixed_params"]["x"] for t in waiting] == [
        t.params["x"] for t in study.get_trials()[:3]]
