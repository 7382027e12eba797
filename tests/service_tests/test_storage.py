"""The storage's batched writes behave exactly like Optuna's one-at-a-time ones."""

from __future__ import annotations

import optuna
import pytest

from service.storage import open_storage, set_user_attrs


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's.db'}"
    return request.getfixturevalue("pg_url")


def test_batched_user_attrs_insert_then_overwrite(storage_url: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name="attrs")
    trial = study.ask()
    set_user_attrs(trial, {"arm": "adam", "val_accuracy": 0.5, "curve": [1, 2], "none": None})
    # A second batch overwrites the keys it names and leaves the others alone.
    set_user_attrs(trial, {"val_accuracy": 0.75, "node_id": "n1"})
    set_user_attrs(trial, {})
    attrs = open_storage(storage_url).get_trial(trial._trial_id).user_attrs
    assert attrs == {"arm": "adam", "val_accuracy": 0.75, "curve": [1, 2], "none": None,
                     "node_id": "n1"}


def test_batched_user_attrs_refuse_a_finished_trial(storage_url: str) -> None:
    study = optuna.create_study(storage=open_storage(storage_url), study_name="done")
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(RuntimeError, match="finished"):
        set_user_attrs(trial, {"late": 1})
    assert "late" not in study.trials[0].user_attrs


def test_processes_creating_a_new_database_at_once_all_open_it(storage_url: str) -> None:
    # A run, its dashboard and a status poll may all open a fresh database together.
    import subprocess
    import sys

    code = ("import sys; from service.storage import open_storage; "
            "open_storage(sys.argv[1]); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code, storage_url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in outcomes] == ["ok"] * 4, [err for _, err in outcomes]
