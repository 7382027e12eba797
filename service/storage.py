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
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def describe(url: str) -> str:
    """The storage URL without a password, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url
