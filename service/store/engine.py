"""SQLAlchemy engines on the storage's database, set up in one place: the Optuna storage's
(`storage.open_storage`) and the service's own (the queue's, the API's read-outs).

Both wait out a busy SQLite file instead of failing, replace connections a database
restart killed (`pool_pre_ping`), and put SQLite in WAL mode.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

__all__ = ["engine_kwargs", "make_engine", "use_wal"]

SQLITE_TIMEOUT_S = 60  # readers (dashboard, status) and the driver share the file: wait


def engine_kwargs(url: str) -> dict[str, Any]:
    """`create_engine` keyword arguments for `url` (and WAL mode, for an SQLite URL)."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}  # survive a database restart
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
        use_wal()
    return kwargs


def make_engine(url: str) -> Engine:
    """An engine on the storage's database, for many short concurrent statements (the
    service's queue and status polls)."""
    return sa.create_engine(url, pool_size=8, max_overflow=16, **engine_kwargs(url))


def _wal_pragmas(dbapi_conn: Any, _record: Any) -> None:
    if isinstance(dbapi_conn, sqlite3.Connection):
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def use_wal() -> None:
    """Every SQLite connection of this process in WAL mode with synchronous=NORMAL.

    Optuna commits each record on its own (a trial is ~20 commits); in the default rollback
    journal each commit is an fsync and blocks readers. WAL makes a commit an append, lets
    the dashboard and status reads go on while the driver writes, and stays durable across
    a process crash, a kill -9 mid-write included (only an OS crash may lose the last
    commits). Listening on every Engine reaches the engine Optuna's RDBStorage creates.
    """
    if not sa.event.contains(Engine, "connect", _wal_pragmas):
        sa.event.listen(Engine, "connect", _wal_pragmas)
