"""Where studies live: one Optuna RDB storage, SQLite by default, PostgreSQL at scale.

Only the driver (the process that runs the search) writes trial records; Ray workers
never open the database. That keeps SQLite free of writer contention at the
concurrency the embedded default allows.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path

import optuna

from service.store.engine import engine_kwargs
from service.store.optuna_adapter import rdb_backend, trial_id_of

DEFAULT_DB_FILE = "liandan.db"
log = logging.getLogger(__name__)


def default_storage_url() -> str:
    """`LIANDAN_STORAGE` if set, else an SQLite file in the working directory."""
    url = os.environ.get("LIANDAN_STORAGE")
    if url:
        return url
    return f"sqlite:///{Path.cwd() / DEFAULT_DB_FILE}"


def open_storage(url: str | None = None) -> optuna.storages.RDBStorage:
    """Open (and create the tables of) an Optuna RDB storage with sane engine settings."""
    url = url or default_storage_url()
    kwargs = engine_kwargs(url)
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(1, 5):
        try:
            return ResilientRDBStorage(url, engine_kwargs=kwargs)
        except (IntegrityError, OperationalError, ProgrammingError):
            # Two processes creating the tables of a new database at once (a run and a
            # dashboard, two service workers): one wins, the other's CREATE collides.
            # The tables then exist, so opening again succeeds.
            time.sleep(0.2 * attempt)
    return ResilientRDBStorage(url, engine_kwargs=kwargs)  # a 5th failure is raised


# The RDBStorage methods retried through a database restart (`_retrying`): the study and
# trial reads and writes of a run and its read-outs, and the batched trial record below.
# Any other method (deleting a study, say) fails at once when the database is down.
RETRIED = (
    # studies
    "create_new_study", "get_all_studies", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
    "get_study_system_attrs", "set_study_user_attr", "set_study_system_attr",
    # trials: reading
    "get_trial", "get_all_trials", "get_best_trial", "get_trial_param",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_trial_id_from_study_id_trial_number",
    # trials: writing
    "create_new_trial", "set_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "set_trial_record",
)


def _retrying(method):
    """`method`, called again with backoff while the database is unreachable, for up to the
    storage's `RETRY_S` seconds; any other error is raised at once."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        from sqlalchemy.exc import DBAPIError

        deadline, delay = time.monotonic() + self.RETRY_S, 0.2
        while True:
            try:
                return method(self, *args, **kwargs)
            except (optuna.exceptions.StorageInternalError, DBAPIError) as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                disconnect = isinstance(cause, DBAPIError) and (
                    cause.connection_invalidated or _looks_like_disconnect(cause))
                if not disconnect or time.monotonic() > deadline:
                    raise
                log.warning("storage unreachable (%s); retrying in %.1f s",
                            type(cause.orig).__name__ if cause.orig else cause, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    return call


def _looks_like_disconnect(exc) -> bool:
    text = str(exc.orig or exc).lower()
    return any(s in text for s in ("connection", "server closed", "terminating", "shutdown",
                                   "could not connect", "connection refused"))


def _retried(names: tuple[str, ...]):
    """Class decorator: wrap each method in `names` (inherited or the class's own) in
    `_retrying`."""
    def wrap(cls):
        for name in names:
            setattr(cls, name, _retrying(getattr(cls, name)))
        return cls

    return wrap


@_retried(RETRIED)
class ResilientRDBStorage(optuna.storages.RDBStorage):
    """An RDB storage that rides out a database restart instead of failing the study.

    `pool_pre_ping` replaces connections that died; while the server is down, a call is
    retried with backoff for up to `RETRY_S` seconds. A retried write whose first attempt
    did commit is harmless: attributes and intermediate values are overwritten with the
    same value, and a trial state told twice is recognised (Optuna refuses the second).
    """

    RETRY_S = 60.0

    def set_trial_record(self, trial_id: int, attrs: dict,
                         curve: dict[int, float] | None = None) -> None:
        """User attributes and intermediate values ({step: value}) of one running trial
        in one transaction; on SQLite and PostgreSQL each of the two is one upsert.
        (Optuna re-reads the trial and queries for the existing row before writing each
        attribute and each value: a record's ~15 attributes and 12 epochs were ~80
        statements, on the driver's path between one trial and the next.)"""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        curve = curve or {}
        with _create_scoped_session(self.scoped_session, True) as session:
            if self.engine.name not in ("sqlite", "postgresql"):
                attr_model = models.TrialUserAttributeModel
                for step, value in curve.items():
                    self._set_trial_intermediate_value_without_commit(session, trial_id, step,
                                                                      value)
                for key, value in attrs.items():
                    self._set_trial_attr_without_commit(session, attr_model, trial_id, key,
                                                        value)
                return
            if not attrs and not curve:
                return
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            if self.engine.name == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            if curve:
                model = models.TrialIntermediateValueModel
                rows = []
                for step, value in curve.items():
                    stored, kind = model.intermediate_value_to_stored_repr(value)
                    rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                                 "intermediate_value_type": kind})
                _upsert(session, insert(model).values(rows), [model.trial_id, model.step],
                        ["intermediate_value", "intermediate_value_type"])
            if attrs:
                model = models.TrialUserAttributeModel
                rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                        for key, value in attrs.items()]
                _upsert(session, insert(model).values(rows), [model.trial_id, model.key],
                        ["value_json"])


def _upsert(session, stmt, keys: list, columns: list[str]) -> None:
    """Run an INSERT whose rows overwrite `columns` of the rows already there with the same
    `keys` (SQLite's and PostgreSQL's ON CONFLICT DO UPDATE)."""
    session.execute(stmt.on_conflict_do_update(
        index_elements=keys, set_={name: stmt.excluded[name] for name in columns}))


def write_trial(trial: optuna.Trial, attrs: dict | None = None,
                curve: dict[int, float] | None = None) -> None:
    """Store user attributes and intermediate values ({step: value}) of a running trial,
    in one transaction where the storage allows."""
    backend = rdb_backend(trial.storage)
    if isinstance(backend, ResilientRDBStorage):
        backend.set_trial_record(trial_id_of(trial), attrs or {}, curve)
        return
    for step, value in (curve or {}).items():
        trial.report(value, step)
    for key, value in (attrs or {}).items():
        trial.set_user_attr(key, value)


def describe(url: str) -> str:
    """The storage URL without a password, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url
