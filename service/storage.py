"""Where studies live: one Optuna RDB storage, SQLite by default, PostgreSQL at scale.

Only the driver (the process that runs the search) writes trial records; Ray workers
never open the database. That keeps SQLite free of writer contention at the
concurrency the embedded default allows.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna

DEFAULT_DB_FILE = "liandan.db"


def default_storage_url() -> str:
    """`LIANDAN_STORAGE` if set, else an SQLite file in the working directory."""
    url = os.environ.get("LIANDAN_STORAGE")
    if url:
        return url
    return f"sqlite:///{Path.cwd() / DEFAULT_DB_FILE}"


def open_storage(url: str | None = None) -> optuna.storages.RDBStorage:
    """Open (and create the tables of) an Optuna RDB storage with sane engine settings."""
    url = url or default_storage_url()
    engine_kwargs: dict = {"pool_pre_ping": True}  # survive a database restart
    if url.startswith("sqlite"):
        # Readers (dashboard, status) and the driver share the file: wait, don't fail.
        engine_kwargs["connect_args"] = {"timeout": 60}
        _use_wal()
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


_WAL_LISTENING = False


def _use_wal() -> None:
    """Every SQLite connection in WAL mode with synchronous=NORMAL.

    Optuna commits each record on its own (a trial is ~20 commits); in the default rollback
    journal each commit is an fsync and blocks readers. WAL makes a commit an append, lets
    the dashboard read while the driver writes, and stays durable across a process crash
    (only an OS crash may lose the last commits).
    """
    global _WAL_LISTENING
    if _WAL_LISTENING:
        return
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    _WAL_LISTENING = True


def describe(url: str) -> str:
    """The storage URL without a password, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url
