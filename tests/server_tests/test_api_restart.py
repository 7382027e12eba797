"""A crash of the whole service mid-study: `kill -9` of `liandan serve`'s process group, then a
fresh `liandan serve` on the same storage. The study must finish with every trial that had
finished kept as it was, none run twice, and the exact tuning and seed budgets spent."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from tests.server_tests.conftest import Service, toy_spec, wait_for

pytestmark = pytest.mark.slow
TRIALS, SEEDS = 6, 2


def trials_of(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=storage).trials
    except KeyError:
        return []


def queue_row(storage: str, name: str) -> tuple:
    engine = sa.create_engine(storage)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT state, worker_id FROM liandan_queue WHERE name = :n"),
                           {"n": name}).one()
    engine.dispose()
    return tuple(row)


def crash_and_resume(cwd: Path, storage: str) -> None:
    name = "crash"
    first = Service(cwd, storage, workers=1, dashboard=False)
    second = Service(cwd, storage, workers=1, dashboard=False)
    try:
        first.start()
        r = first.submit(toy_spec(name, trials=TRIALS, seeds=SEEDS, epochs=3, sleep=0.6))
        assert r.status_code == 201, r.text

        def mid_study() -> list | None:
            trials = trials_of(storage, name)
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING]
            return done if len(done) >= 2 and running else None

        done_before = wait_for(mid_study, 150, "2 finished trials and 1 running")
        first.kill9()
        assert queue_row(storage, name)[0] == "running"  # nobody marked it: a real crash
        kept = {t.number: (t.params, t.value) for t in done_before}

        second.start()
        study = second.wait_state(name, ("done", "failed", "cancelled"), timeout=180)
        assert study["state"] == "done", study["error"]
        trials = trials_of(storage, name)
        by_number = {t.number: t for t in trials}
        for number, (params, value) in kept.items():  # nothing finished was lost or redone
            assert by_number[number].state == TrialState.COMPLETE
            assert (by_number[number].params, by_number[number].value) == (params, value)
        tune = [t for t in trials if t.user_attrs.get("role") == "tune"
                and t.state == TrialState.COMPLETE]
        seeds = [t for t in trials if t.user_attrs.get("role") == "seed"
                 and t.state == TrialState.COMPLETE]
        assert len(tune) == TRIALS
        # The selection protocol's candidate re-runs (the top 3 configurations on 2 seeds
        # each, stage "select"), then the chosen one on the evidence seeds.
        select = [t for t in seeds if t.user_attrs.get("stage") == "select"]
        evidence = [t for t in seeds if t.user_attrs.get("stage") != "select"]
        assert len(select) == 3 * 2
        assert sorted(t.params["seed"] for t in evidence) == [1000, 1001]
        failed = [t for t in trials if t.state == TrialState.FAIL]
        assert failed, "the trials running at the kill are recorded"
        assert all(t.user_attrs.get("fail_reason") == "interrupted" for t in failed)
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        finished = TRIALS + len(select) + SEEDS
        assert len(trials) == finished + len(failed)
        assert study["progress"] == {"finished": finished, "total": finished, "fraction": 1.0}
        assert study["counts"]["retried"] == len(failed)
        assert (cwd / "reports" / f"{name}.md").is_file()
    finally:
        first.stop()
        second.stop()


def test_kill9_mid_study_then_restart_resumes_it_sqlite(tmp_path: Path):
    crash_and_resume(tmp_path, f"sqlite:///{tmp_path / 'studies.db'}")


@pytest.mark.postgres
def test_kill9_mid_study_then_restart_resumes_it_postgres(tmp_path: Path, pg_private_url: str):
    crash_and_resume(tmp_path, pg_private_url)
