"""Shared fixtures: one in-process Ray for the whole session, storages, toy objectives."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PG_URL = os.environ.get("LIANDAN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# Worker processes and CLI subprocesses find the toy objectives by import path.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(FIXTURES), str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
sys.path.insert(0, str(FIXTURES))


@pytest.fixture(scope="session")
def ray_session():
    """Real Ray, started once: starting it per test would cost ~5 s each."""
    import ray

    from service.run.runner import ensure_ray, stop_ray

    ensure_ray(None)
    yield ray
    stop_ray()


@contextlib.contextmanager
def local_cluster(nodes: int, cpus: int):
    """A simulated Ray cluster on this one machine: a head with 0 CPUs (it only schedules)
    and `nodes` worker nodes of `cpus` CPUs each, joined by this process as a driver.
    Afterwards the session gets its in-process Ray back if it had one: later tests
    (`ray_session`'s and those that call the runner directly) expect it."""
    import ray
    from ray.cluster_utils import Cluster

    from service.run.runner import ensure_ray, stop_ray

    had_ray = ray.is_initialized()
    stop_ray()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        workers = [cluster.add_node(num_cpus=cpus) for _ in range(nodes)]
        cluster.wait_for_nodes()
        ensure_ray(cluster.address)
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()
        if had_ray:
            ensure_ray(None)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def pg_url() -> str:
    """A fresh PostgreSQL database schema for one test; skipped where there is no server."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    try:
        engine = sqlalchemy.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any connection problem means "no server here"
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}")
    return PG_URL


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`liandan ARGS` as a user would run it, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})
