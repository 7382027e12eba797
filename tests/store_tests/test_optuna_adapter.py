"""The Optuna adapter (`service.store.optuna_adapter`) and the engine setup
(`service.store.engine`), one test per function, each checked against what Optuna's own
API (`optuna.load_study`, the storage's public methods) reads back: these are what to
re-run at an Optuna upgrade."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa
from optuna.storages import InMemoryStorage, RDBStorage

from service.store import engine as store_engine
from service.store.optuna_adapter import (
    name_in_storage,
    rdb_backend,
    set_system_attr,
    storage_of,
    study_id_of,
    system_attrs,
    trial_id_of,
)
from service.store.storage import RETRIED, ResilientRDBStorage, open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, sqlite_url):
    return sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def two_studies(url: str) -> optuna.Study:
    """A first study, so that ids and numbers differ, and the study `b` under test."""
    optuna.create_study(storage=url, study_name="a").optimize(lambda t: 1.0, n_trials=2)
    return optuna.create_study(storage=url, study_name="b")


def test_storage_of(sqlite_url):
    two_studies(sqlite_url)
    storage = storage_of(optuna.load_study(study_name="b", storage=sqlite_url))
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert storage.get_study_name_from_id(storage.get_study_id_from_name("b")) == "b"


def test_study_id_of(sqlite_url):
    two_studies(sqlite_url)
    loaded = optuna.load_study(study_name="b", storage=sqlite_url)
    expected = storage_of(loaded).get_study_id_from_name("b")
    assert study_id_of(loaded) == expected
    # and of the FrozenStudy rows `get_all_studies` returns
    frozen = {s.study_name: s for s in open_storage(sqlite_url).get_all_studies()}
    assert study_id_of(frozen["b"]) == expected and study_id_of(frozen["a"]) != expected


def test_trial_id_of(sqlite_url):
    study = two_studies(sqlite_url)
    running = study.ask()
    running.set_user_attr("x", 1)
    assert trial_id_of(running) != running.number  # study `a` holds trial ids 1 and 2
    loaded = optuna.load_study(study_name="b", storage=sqlite_url)
    frozen = loaded.trials[0]
    assert trial_id_of(frozen) == trial_id_of(running)
    stored = storage_of(loaded).get_trial(trial_id_of(frozen))
    assert (stored.number, stored.user_attrs) == (running.number, {"x": 1})


def test_system_attrs_and_set_system_attr(sqlite_url):
    study = two_studies(sqlite_url)
    set_system_attr(study, "liandan:artifact:plot.png", "abc")
    set_system_attr(study, "nested", {"k": [1, None]})
    loaded = optuna.load_study(study_name="b", storage=sqlite_url)
    assert system_attrs(loaded) == {"liandan:artifact:plot.png": "abc",
                                    "nested": {"k": [1, None]}}
    # The study rows `get_all_studies` reads carry the same (Study has no public read).
    frozen = {s.study_name: s for s in storage_of(loaded).get_all_studies()}
    assert frozen["b"].system_attrs == system_attrs(loaded)
    assert system_attrs(optuna.load_study(study_name="a", storage=sqlite_url)) == {}


def test_rdb_backend(sqlite_url):
    opened = open_storage(sqlite_url)
    assert rdb_backend(opened) is opened  # not wrapped
    cached = optuna.storages.get_storage(opened)  # Optuna's _CachedStorage in front of it
    assert cached is not opened and rdb_backend(cached) is opened
    two_studies(sqlite_url)
    loaded = optuna.load_study(study_name="b", storage=sqlite_url)
    assert isinstance(rdb_backend(storage_of(loaded)), RDBStorage)
    assert rdb_backend(InMemoryStorage()) is None
    assert rdb_backend(storage_of(optuna.create_study())) is None


def test_name_in_storage(storage_url):
    open_storage(storage_url).remove_session()  # the Optuna tables
    assert not name_in_storage(storage_url, "plain")
    optuna.create_study(storage=storage_url, study_name="plain")
    arm = optuna.create_study(storage=storage_url, study_name="opt[optimizer=adam]")
    arm.set_user_attr("spec_name", "opt")
    engine = sa.create_engine(storage_url)
    try:
        with engine.connect() as conn:  # within a transaction of the caller's
            assert name_in_storage(conn, "plain") and name_in_storage(conn, "opt")
            assert not name_in_storage(conn, "pla") and not name_in_storage(conn, '"opt"')
        assert name_in_storage(engine, "opt[optimizer=adam]")
    finally:
        engine.dispose()
    assert name_in_storage(storage_url, "opt") and not name_in_storage(storage_url, "other")


def test_make_engine(storage_url):
    """Pre-ping and a pool for many short statements; on SQLite, WAL and a busy wait."""
    engine = store_engine.make_engine(storage_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            if engine.dialect.name == "sqlite":
                assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
                assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1  # NORMAL
                assert conn.execute(sa.text("PRAGMA busy_timeout")).scalar() == 60_000
        assert engine.pool._pre_ping and engine.pool.size() == 8
    finally:
        engine.dispose()


def test_engine_kwargs_and_the_storage_engine(sqlite_url):
    assert store_engine.engine_kwargs("postgresql+psycopg://u@h/db") == {"pool_pre_ping": True}
    assert store_engine.engine_kwargs(sqlite_url) == {
        "pool_pre_ping": True, "connect_args": {"timeout": store_engine.SQLITE_TIMEOUT_S}}
    storage = open_storage(sqlite_url)  # Optuna's own engine gets the same setup
    with storage.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    store_engine.use_wal()  # once per process, however often asked
    assert sa.event.contains(sa.engine.Engine, "connect", store_engine._wal_pragmas)


def test_retried_methods_are_wrapped():
    """The 23 RDBStorage methods retried through a database restart: each exists in this
    Optuna (a rename at an upgrade fails here) and is wrapped."""
    assert len(RETRIED) == len(set(RETRIED)) == 23
    for name in RETRIED:
        method = getattr(ResilientRDBStorage, name)
        assert method.__wrapped__ is getattr(RDBStorage, name, None) or name == "set_trial_record"
        assert method.__name__ == name
    assert not hasattr(ResilientRDBStorage.delete_study, "__wrapped__")
