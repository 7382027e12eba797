"""The storage's batched writes behave exactly like Optuna's one-at-a-time ones."""

from __future__ import annotations

import math

import optuna
import pytest

from service.store.storage import open_storage, write_trial


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's.db'}"
    return request.getfixturevalue("pg_url")


def test_a_trial_record_inserts_then_overwrites(storage_url: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name="attrs")
    trial = study.ask()
    write_trial(trial, {"arm": "adam", "val_accuracy": 0.5, "curve": [1, 2], "none": None},
                curve={1: 0.25, 2: float("nan")})
    # A second batch overwrites the keys it names and leaves the others alone.
    write_trial(trial, {"val_accuracy": 0.75, "node_id": "n1"},
                curve={3: float("inf"), 2: float("-inf")})
    write_trial(trial, {})
    write_trial(trial, {}, curve={4: float("nan")})
    stored = open_storage(storage_url).get_trial(trial._trial_id)
    assert stored.user_attrs == {"arm": "adam", "val_accuracy": 0.75, "curve": [1, 2],
                                 "none": None, "node_id": "n1"}
    values = stored.intermediate_values
    assert values[1] == 0.25 and values[2] == -math.inf and values[3] == math.inf
    assert math.isnan(values[4]) and len(values) == 4


def test_a_finished_trials_record_is_refused_whole(storage_url: str) -> None:
    study = optuna.create_study(storage=open_storage(storage_url), study_name="done")
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(RuntimeError, match="finished"):
        write_trial(trial, {"late": 1}, curve={1: 0.5})
    assert "late" not in study.trials[0].user_attrs and not study.trials[0].intermediate_values


def test_processes_creating_a_new_database_at_once_all_open_it(storage_url: str) -> None:
    # A run, its dashboard and a status poll may all open a fresh database together.
    import subprocess
    import sys

    code = ("import sys; from service.store.storage import open_storage; "
            "open_storage(sys.argv[1]); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code, storage_url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in outcomes] == ["ok"] * 4, [err for _, err in outcomes]
