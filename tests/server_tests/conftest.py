"""`liandan serve` as a user starts it: a real process tree on free ports, real HTTP.

Each `Service` runs in its own session (process group), so a test can `kill -9` the whole
group the way a crash or an OOM kill would. Ray's trial processes are not in that group
(Ray puts each in its own), so every descendant is noted first and any left after the kill
is ended by its process ID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

TOKEN = "test-token-5f0c2a9e7b1d4c38"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
YAML = {"Content-Type": "application/yaml"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (httpx.TransportError, OSError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def toy_spec(name: str, trials: int = 4, seeds: int = 0, epochs: int = 2, sleep: float = 0.0,
             concurrent: int = 2) -> str:
    return f"""\
name: {name}
objective: toy_objectives:quadratic
metric: val_loss
direction: minimize
nuisance: {{x: {{low: -2.0, high: 3.0}}}}
fixed: {{epochs: {epochs}, sleep: {sleep}}}
budget: {{trials: {trials}, seeds: {seeds}, max_concurrent: {concurrent}}}
search: {{sampler: random, pruner: none, seed: 0}}
"""


class Service:
    """One `liandan serve` subprocess."""

    def __init__(self, cwd: Path, storage: str, workers: int = 1, dashboard: bool = True,
                 host: str = "127.0.0.1", token: str | None = TOKEN,
                 allow: tuple[str, ...] = ("toy_objectives",), env: dict[str, str] | None = None):
        self.cwd, self.storage, self.workers, self.host = cwd, storage, workers, host
        self.allow, self.env = allow, env or {}
        self.port, self.dashboard_port = free_port(), free_port()
        self.dashboard, self.token = dashboard, token
        self.url = f"http://127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.proc: subprocess.Popen | None = None
        self.log = cwd / "serve.log"
        self.known: dict[int, psutil.Process] = {}

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "service.cli", "serve", "--host", self.host,
                "--port", str(self.port), "--dashboard-port", str(self.dashboard_port),
                "--storage", self.storage, "--workers", str(self.workers),
                *([] if self.dashboard else ["--no-dashboard"]),
                *[arg for module in self.allow for arg in ("--allow-objective", module)]]

    def start(self, timeout: float = 120) -> Service:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIANDAN_")}
        if self.token:
            env["LIANDAN_TOKEN"] = self.token
        env.update(self.env)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv(), cwd=self.cwd, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        headers = AUTH if self.token else {}

        def up() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"liandan serve exited {self.proc.returncode}:\n{self.tail()}")
            return httpx.get(f"{self.url}/healthz", headers=headers, timeout=2).status_code == 200

        wait_for(up, timeout, "liandan serve to answer /healthz")
        if self.dashboard:
            wait_for(lambda: httpx.get(f"{self.dashboard_url}/favicon.ico", headers=headers,
                                       timeout=2).status_code < 500,
                     60, "the dashboard to answer")
        self._note_descendants()
        return self

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _note_descendants(self) -> None:
        if self.proc is None:
            return
        try:
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                self.known.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass

    def _end_leftovers(self) -> None:
        for p in self.known.values():
            try:
                if p.is_running():
                    p.kill()
            except psutil.Error:
                pass
        self.known.clear()

    def kill9(self) -> None:
        """SIGKILL the whole process group, as a crash of the machine's service would."""
        self._note_descendants()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        time.sleep(1.0)  # Ray's processes notice their raylet is gone
        self._end_leftovers()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._end_leftovers()
            return
        self._note_descendants()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(45)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._end_leftovers()

    # -- HTTP -----------------------------------------------------------------------------
    def submit(self, spec: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}/studies", content=spec,
                          headers={**YAML, **AUTH, **(headers or {})}, timeout=30)

    def study(self, name: str) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/studies/{name}", headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_state(self, name: str, states: tuple[str, ...], timeout: float = 120) -> dict:
        def reached() -> dict | None:
            study = self.study(name)
            return study if study["state"] in states else None

        try:
            return wait_for(reached, timeout, f"{name} to be {'/'.join(states)}")
        except pytest.fail.Exception:
            print(self.tail())
            raise


@pytest.fixture(scope="module")
def api_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API with no workers and no Ray: submissions stay queued, nothing runs."""
    cwd = tmp_path_factory.mktemp("api-only")
    service = Service(cwd, f"sqlite:///{cwd / 'studies.db'}", workers=0, dashboard=False,
                      allow=("toy_objectives", "sneaky_objectives"))
    yield service.start()
    service.stop()


@pytest.fixture(scope="module")
def running_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The whole service: API, one worker on a local Ray head, the dashboard."""
    cwd = tmp_path_factory.mktemp("service")
    service = Service(cwd, f"sqlite:///{cwd / 'studies.db'}", workers=1)
    yield service.start()
    service.stop()


@pytest.fixture
def pg_private_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own on the `pg_url` server, dropped afterwards.

    `pg_url` resets the shared database's schema; a service test runs minutes and must not
    lose its tables to another test (or another checkout's run) resetting it meanwhile."""
    import uuid

    import sqlalchemy as sa

    from tests.conftest import PG_URL

    name = f"liandan_api_{uuid.uuid4().hex[:12]}"
    try:
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection problem means "no server here"
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}")
    yield sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
