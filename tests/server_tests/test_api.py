"""The API over real HTTP (uvicorn in `liandan serve`, no workers): submissions, every kind
of bad input, limits, tokens on loopback, concurrent submissions, the CLI's client commands."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import run_cli
from tests.server_tests.conftest import AUTH, TOKEN, YAML, Service, toy_spec


def stored(service: Service) -> tuple[set[str], set[str]]:
    """(queue names, Optuna study names) straight from the database."""
    engine = sa.create_engine(service.storage)
    with engine.connect() as conn:
        queue = set(conn.execute(sa.text("SELECT name FROM liandan_queue")).scalars())
        studies = set(conn.execute(sa.text("SELECT study_name FROM studies")).scalars())
    engine.dispose()
    return queue, studies


def test_submit_queues_the_study_and_reads_it_back(api_only: Service):
    r = api_only.submit(toy_spec("queued-one", trials=3, seeds=2))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "queued-one" and body["state"] == "queued"
    assert body["report_url"].endswith("/studies/queued-one/report")
    assert body["dashboard_url"] is None  # this service runs no dashboard
    study = api_only.study("queued-one")
    assert study["state"] == "queued" and study["objective"] == "toy_objectives:quadratic"
    assert study["progress"] == {"finished": 0, "total": 5, "fraction": 0.0}
    assert study["counts"]["complete"] == 0 and study["best_trial"] is None
    assert study["spec"]["budget"] == {"trials": 3, "seeds": 2, "max_concurrent": 2}
    listed = httpx.get(f"{api_only.url}/studies").json()
    assert "queued-one" in [s["name"] for s in listed["data"]]
    # Not run, so no report yet: a 404 that says why.
    r = httpx.get(f"{api_only.url}/studies/queued-one/report")
    assert r.status_code == 404 and "queued" in r.json()["detail"]


def test_json_body_is_accepted_too(api_only: Service):
    spec = {"name": "as-json", "objective": "toy_objectives:quadratic", "metric": "val_loss",
            "direction": "minimize", "nuisance": {"x": [0.5, 1.5]},
            "budget": {"trials": 2}}
    r = httpx.post(f"{api_only.url}/studies", json=spec, headers=AUTH)
    assert r.status_code == 201, r.text
    assert api_only.study("as-json")["progress"]["total"] == 2


BAD = {
    "malformed yaml": ("name: x\nnuisance: {x: [1, 2\n", "<yaml>"),
    "not a mapping": ("- just\n- a list\n", "<root>"),
    "unknown key": (toy_spec("bad-key") + "budgett: {trials: 3}\n", "budgett"),
    "bad values": (toy_spec("bad-values").replace("max_concurrent: 2", "max_concurrent: 0")
                   .replace("sampler: random", "sampler: annealing"), "budget.max_concurrent"),
    "unknown objective": (toy_spec("bad-objective").replace("toy_objectives:quadratic",
                                                             "toy_objectives:nope"), "objective"),
    "missing module": (toy_spec("bad-module").replace("toy_objectives:quadratic",
                                                       "no_such_module:f"), "objective"),
    "path in name": (toy_spec("x").replace("name: x", "name: ../../etc/passwd"), "name"),
    "dots in name": (toy_spec("x").replace("name: x", "name: ..hidden"), "name"),
    "anchor bomb": ("a: &a [1, 2]\nb: [*a, *a]\nname: bomb\n", "<yaml>"),
    "deep nesting": ("name: deep\nfixed: " + "[" * 40 + "]" * 40 + "\n", "<yaml>"),
    "python tag": ("name: !!python/object:os.system x\n", "<yaml>"),
    "duplicate key": (toy_spec("dup") + "name: dup2\n", "<yaml>"),
    "not utf-8": (b"name: \xff\xfe\n", "<body>"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_specs_are_422_with_every_problem_and_nothing_is_stored(api_only: Service,
                                                                     case: str):
    body, path = BAD[case]
    before = stored(api_only)
    r = httpx.post(f"{api_only.url}/studies", content=body, headers={**YAML, **AUTH})
    assert r.status_code == 422, r.text
    problems = r.json()["detail"]
    assert all(set(p) == {"path", "value", "allowed", "message"} for p in problems)
    assert path in [p["path"] for p in problems], problems
    assert stored(api_only) == before


def test_a_spec_with_several_problems_names_them_all(api_only: Service):
    body = toy_spec("many").replace("max_concurrent: 2", "max_concurrent: 0").replace(
        "sampler: random", "sampler: annealing").replace("direction: minimize",
                                                         "direction: sideways")
    r = api_only.submit(body)
    assert r.status_code == 422
    paths = {p["path"] for p in r.json()["detail"]}
    assert {"budget.max_concurrent", "search.sampler", "direction"} <= paths


def test_bad_json_and_wrong_media_type(api_only: Service):
    r = httpx.post(f"{api_only.url}/studies", content=b"{not json",
                   headers={"Content-Type": "application/json", **AUTH})
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "<json>"
    r = httpx.post(f"{api_only.url}/studies", content=b"[" * 5000 + b"]" * 5000,
                   headers={"Content-Type": "application/json", **AUTH})
    assert r.status_code == 422
    r = httpx.post(f"{api_only.url}/studies", content=toy_spec("plain"),
                   headers={"Content-Type": "text/plain", **AUTH})
    assert r.status_code == 415


def test_duplicate_name_is_409_whether_queued_or_in_the_storage(api_only: Service):
    assert api_only.submit(toy_spec("twice")).status_code == 201
    r = api_only.submit(toy_spec("twice", trials=9))
    assert r.status_code == 409 and "twice" in r.json()["detail"]
    # A study that only the Optuna storage knows (a `liandan run` of the same name).
    import optuna

    optuna.create_study(study_name="from-the-cli", storage=api_only.storage)
    before = stored(api_only)
    assert api_only.submit(toy_spec("from-the-cli")).status_code == 409
    assert stored(api_only) == before


def test_oversized_body_is_413_before_it_is_read(api_only: Service):
    big = toy_spec("big") + "# " + "x" * (1 << 20) + "\n"
    before = stored(api_only)
    r = api_only.submit(big)
    assert r.status_code == 413
    # Without a Content-Length (chunked), the route counts as it reads.
    r = httpx.post(f"{api_only.url}/studies", content=iter([big.encode()[i:i + 65536] for i in
                                                           range(0, len(big), 65536)]),
                   headers={**YAML, **AUTH})
    assert r.status_code == 413
    assert stored(api_only) == before


@pytest.mark.parametrize("path", ["/studies/..%2F..%2Fetc%2Fpasswd/report",
                                  "/studies/%2e%2e/report", "/studies/UPPER/findings",
                                  "/studies/a%00b/report", "/studies/_x/report",
                                  "/studies/" + "a" * 65])
def test_path_tricks_in_names_are_4xx(api_only: Service, path: str):
    r = httpx.get(api_only.url + path)
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    assert "root:" not in r.text


def test_mutations_need_the_token_reads_on_loopback_do_not(api_only: Service):
    spec = toy_spec("auth-check")
    assert httpx.post(f"{api_only.url}/studies", content=spec, headers=YAML).status_code == 401
    r = httpx.post(f"{api_only.url}/studies", content=spec,
                   headers={**YAML, "Authorization": "Bearer wrong-token-wrong-token"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "auth-check" not in stored(api_only)[0]
    assert api_only.submit(spec).status_code == 201
    assert httpx.post(f"{api_only.url}/studies/auth-check/cancel").status_code == 401
    assert httpx.get(f"{api_only.url}/studies/auth-check").status_code == 200
    assert httpx.get(f"{api_only.url}/openapi.json").status_code == 200


def test_cancel_a_queued_study_is_immediate(api_only: Service):
    assert api_only.submit(toy_spec("to-cancel")).status_code == 201
    r = httpx.post(f"{api_only.url}/studies/to-cancel/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert api_only.study("to-cancel")["cancel_requested"] is True
    r = httpx.post(f"{api_only.url}/studies/never-was/cancel", headers=AUTH)
    assert r.status_code == 404


def test_twenty_concurrent_submissions_are_all_recorded(api_only: Service):
    names = [f"burst-{i:02d}" for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda n: api_only.submit(toy_spec(n)).status_code, names))
    assert codes == [201] * 20
    queue, _ = stored(api_only)
    assert set(names) <= queue
    listed = {s["name"]: s for s in httpx.get(f"{api_only.url}/studies?limit=1000").json()["data"]}
    assert all(listed[n]["state"] == "queued" for n in names)
    # The same 20 again, concurrently: each name is taken exactly once.
    with ThreadPoolExecutor(20) as pool:
        again = list(pool.map(lambda n: api_only.submit(toy_spec(n)).status_code, names))
    assert again == [409] * 20


def test_healthz_counts_the_queue(api_only: Service):
    r = httpx.get(f"{api_only.url}/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.json()["queue"].get("queued", 0) >= 1


def test_cli_submit_status_cancel_talk_to_the_api(api_only: Service, tmp_path):
    (tmp_path / "spec.yaml").write_text(toy_spec("via-cli"))
    env_token = {"LIANDAN_TOKEN": TOKEN}
    import os

    os.environ.update(env_token)
    try:
        r = run_cli("submit", "spec.yaml", "--url", api_only.url, cwd=tmp_path, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "via-cli" in r.stdout and "queued" in r.stdout
        r = run_cli("submit", "spec.yaml", "--url", api_only.url, cwd=tmp_path, timeout=60)
        assert r.returncode == 2 and "409" in r.stdout
        (tmp_path / "bad.yaml").write_text(toy_spec("bad-cli").replace("trials: 4", "trials: 0"))
        r = run_cli("submit", "bad.yaml", "--url", api_only.url, cwd=tmp_path, timeout=60)
        assert r.returncode == 2 and "budget.trials" in r.stdout
        r = run_cli("status", "via-cli", "--url", api_only.url, cwd=tmp_path, timeout=60)
        assert r.returncode == 0 and "queued" in r.stdout and "0/4" in r.stdout, r.stdout
        r = run_cli("cancel", "via-cli", "--url", api_only.url, cwd=tmp_path, timeout=60)
        assert r.returncode == 0 and "cancelled" in r.stdout, r.stdout + r.stderr
    finally:
        os.environ.pop("LIANDAN_TOKEN", None)
    assert json.loads(httpx.get(f"{api_only.url}/studies/via-cli").text)["state"] == "cancelled"
