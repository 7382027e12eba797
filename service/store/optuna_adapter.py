"""Every reach into Optuna's private API, and every SQL statement on Optuna's tables made
for another stage, as a named function: the one place to re-check at each Optuna upgrade
(besides `storage.py`'s batched trial record and `trial_rows.py`'s reader, which read the
table models themselves).

Optuna keeps a study's storage and id, and a trial's id, in private attributes; the public
alternatives either do not exist (a study's system attributes: Optuna 4 removed
`Study.system_attrs`) or cost a query each (`get_study_id_from_name`). Outside
`service/store/`, no module reads them (`tests/layout_tests/test_optuna_private.py`).
"""

from __future__ import annotations

import json
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial
from sqlalchemy.engine import Connection, Engine

__all__ = ["name_in_storage", "rdb_backend", "set_system_attr", "storage_of",
           "study_id_of", "system_attrs", "trial_id_of"]


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage `study` reads and writes (Optuna wraps an RDB storage in a cache)."""
    return study._storage


def study_id_of(study: Any) -> int:
    """The storage's id of a `Study` or of a `FrozenStudy` from `get_all_studies` (the
    dashboard's URLs and artifact routes use it)."""
    return study._study_id


def trial_id_of(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a running `Trial` or a `FrozenTrial`: the storage's trial methods
    take it, where the public API knows a trial by its number within the study."""
    return trial._trial_id


def system_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's system attributes, where optuna-dashboard keeps a study's note and
    artifacts (Optuna 4 removed `Study.system_attrs`)."""
    return storage_of(study).get_study_system_attrs(study_id_of(study))


def set_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Set one system attribute of the study (JSON-serialisable `value`)."""
    storage_of(study).set_study_system_attr(study_id_of(study), key, value)


def rdb_backend(storage: BaseStorage) -> RDBStorage | None:
    """The RDB storage behind `storage` (also under Optuna's `_CachedStorage`, which
    `optuna.storages.get_storage` and `Study` put in front of one), or None for another kind."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


# A study of spec `name` is the study `name` itself or one arm study `name[...]`, whose user
# attribute `spec_name` holds json.dumps(name) (service/run/search.py).
_NAME_IN_STORAGE = sa.text(
    "SELECT 1 FROM studies s WHERE s.study_name = :name UNION ALL "
    "SELECT 1 FROM study_user_attributes a WHERE a.key = 'spec_name' "
    "AND a.value_json = :json LIMIT 1")


def name_in_storage(conn_or_url: Connection | Engine | str, name: str) -> bool:
    """Whether the Optuna storage holds a study called `name`, or an arm study of spec
    `name`. Pass a Connection to ask within a transaction of one's own (the queue checks and
    inserts in one); the Optuna tables must exist (`open_storage` creates them)."""
    if isinstance(conn_or_url, Connection):
        row = conn_or_url.execute(_NAME_IN_STORAGE, {"name": name, "json": json.dumps(name)})
        return row.first() is not None
    engine = sa.create_engine(conn_or_url) if isinstance(conn_or_url, str) else conn_or_url
    try:
        with engine.connect() as conn:
            return name_in_storage(conn, name)
    finally:
        if isinstance(conn_or_url, str):
            engine.dispose()
