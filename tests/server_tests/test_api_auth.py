"""Off loopback: no start without a token; then the token on every request, the dashboard's
included. (Bound to 0.0.0.0, reached only through 127.0.0.1.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.server_tests.conftest import AUTH, TOKEN, Service, free_port


def serve_exit(tmp_path, token: str | None, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANDAN_")}
    if token is not None:
        env["LIANDAN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--host", "0.0.0.0", "--port",
         str(free_port()), "--workers", "0", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
         *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_refuses_to_start_off_loopback_without_a_good_token(tmp_path):
    r = serve_exit(tmp_path, None)
    assert r.returncode == 2 and "without a token" in r.stdout, r.stdout + r.stderr
    r = serve_exit(tmp_path, "short")
    assert r.returncode == 2 and "at least 16 characters" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "x.db").exists()  # refused before touching anything


def test_refuses_to_allow_every_module(tmp_path):
    r = serve_exit(tmp_path, TOKEN, "--allow-objective", "toy_objectives",
                   "--allow-objective", "*")
    said = " ".join(r.stdout.split())  # unwrapped
    assert r.returncode == 2 and "'*' is not a module name" in said, r.stdout + r.stderr
    assert not (tmp_path / "x.db").exists()


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    cwd = tmp_path_factory.mktemp("exposed")
    service = Service(cwd, f"sqlite:///{cwd / 'studies.db'}", workers=0, host="0.0.0.0",
                      env={"LIANDAN_ALLOWED_HOSTS": "tune.example.com"})
    yield service.start()
    service.stop()


@pytest.mark.parametrize("path", ["/healthz", "/studies", "/studies/x", "/openapi.json",
                                  "/docs", "/studies/x/report"])
def test_every_read_needs_the_token(exposed: Service, path: str):
    assert httpx.get(exposed.url + path).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all-1234"}
    assert httpx.get(exposed.url + path, headers=wrong).status_code == 401
    assert httpx.get(exposed.url + path, headers=AUTH).status_code in (200, 404)


def test_the_dashboard_needs_the_token_too(exposed: Service):
    dash = exposed.dashboard_url
    for path in ("/", "/dashboard", "/api/studies", "/api/meta"):
        r = httpx.get(dash + path)
        assert r.status_code == 401, path
        assert httpx.get(dash + path, params={"token": "guess-guess-guess-guess"}
                         ).status_code == 401
    # Its mutating routes as well (they can rename and delete studies).
    assert httpx.delete(f"{dash}/api/studies/1").status_code == 401
    assert httpx.get(f"{dash}/api/studies", headers=AUTH).status_code == 200
    # A browser: ?token= once sets a cookie and drops the token from the address.
    r = httpx.get(f"{dash}/dashboard", params={"token": TOKEN, "x": "1"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard?x=1"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    with httpx.Client(base_url=dash) as browser:
        browser.cookies.set("liandan_dashboard", cookie.split(";")[0].split("=", 1)[1])
        assert browser.get("/api/studies").status_code == 200


def test_a_proxy_name_is_served_when_allowed_any_other_host_is_not(exposed: Service):
    for host in ("tune.example.com", "TUNE.example.com:443", "127.0.0.1"):
        r = httpx.get(f"{exposed.url}/healthz", headers={**AUTH, "Host": host})
        assert r.status_code == 200, host
    for host in ("attacker.example", "tune.example.com.attacker.example"):
        assert httpx.get(f"{exposed.url}/healthz",
                         headers={**AUTH, "Host": host}).status_code == 400
        assert httpx.get(f"{exposed.dashboard_url}/api/studies",
                         headers={**AUTH, "Host": host}).status_code == 400
    assert httpx.get(f"{exposed.dashboard_url}/api/studies",
                     headers={**AUTH, "Host": "tune.example.com"}).status_code == 200
