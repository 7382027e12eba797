"""The whole service on real Ray and SQLite: submit → run → report (its plots through the API),
the dashboard in a real browser and its refusals, cancel mid-run and resume, what a spec may
run and ask for, and where the Ray head listens."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import optuna
import psutil
import pytest
from optuna.trial import TrialState

from tests.conftest import run_cli
from tests.server_tests.conftest import AUTH, TOKEN, Service, toy_spec, wait_for

pytestmark = pytest.mark.slow


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def flow(running_service: Service) -> dict:
    """The study `flow`, submitted and run to its end."""
    svc = running_service
    r = svc.submit(toy_spec("flow", trials=4, seeds=1, epochs=2))
    assert r.status_code == 201, r.text
    assert r.json()["dashboard_url"] == f"http://127.0.0.1:{svc.dashboard_port}/dashboard"
    return svc.wait_state("flow", ("done", "failed", "cancelled"), timeout=180)


def test_submit_run_report(running_service: Service, flow: dict):
    svc, study = running_service, flow
    assert study["state"] == "done", study["error"]
    planned = study["progress"]["total"]  # 4 tuning + 1 seed re-run (+ seed candidates)
    assert planned >= 5 and study["counts"]["running"] == 0
    assert study["counts"]["complete"] == planned
    assert study["progress"] == {"finished": planned, "total": planned, "fraction": 1.0}
    best = study["best_trial"]
    assert best["study"] == "flow" and set(best["params"]) == {"x", "epochs", "sleep", "seed"}
    assert study["best_value"] == pytest.approx(best["value"])
    loaded = optuna.load_study(study_name="flow", storage=svc.storage)
    trials = loaded.trials
    tune_values = [t.value for t in trials if t.user_attrs["role"] == "tune"]
    assert best["value"] == pytest.approx(min(tune_values))
    assert study["dashboard_url"].endswith(f"/dashboard/studies/{loaded._study_id}")

    # The report the worker wrote when the study finished, through the API.
    r = httpx.get(f"{svc.url}/studies/flow/report")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    assert r.text.startswith("# Study report: flow")
    # The file's, with its plot links made links to this API (see the plots test).
    on_disk = (svc.cwd / "reports" / "flow.md").read_text()
    assert on_disk.replace("](flow/", f"]({svc.url}/studies/flow/report/") == r.text
    findings = httpx.get(f"{svc.url}/studies/flow/findings").json()
    assert findings["study"] == "flow" and findings["objective"] == "toy_objectives:quadratic"
    assert findings["findings"] == []  # no rules in the spec: nothing to test
    # ... and as the study's note in optuna-dashboard.
    attrs = loaded._storage.get_study_system_attrs(loaded._study_id)
    chunks = {int(k.rsplit(":", 1)[1]): v for k, v in attrs.items()
              if k.startswith("dashboard:note_str:")}
    note = "".join(chunks[i] for i in sorted(chunks))
    assert "Study report: flow" in note

    listed = {s["name"]: s for s in httpx.get(f"{svc.url}/studies").json()["data"]}
    assert listed["flow"]["state"] == "done" and listed["flow"]["counts"]["complete"] == planned
    assert listed["flow"]["progress"]["total"] == planned


def test_cancel_stops_a_running_study_and_resume_finishes_it(running_service: Service,
                                                             tmp_path: Path):
    svc = running_service
    assert svc.submit(toy_spec("to-stop", trials=6, epochs=4, sleep=0.5)).status_code == 201
    wait_for(lambda: svc.study("to-stop")["counts"]["complete"] > 0
             and svc.study("to-stop")["counts"]["running"] > 0, 120,
             "a trial of to-stop to finish and another to run")
    r = httpx.post(f"{svc.url}/studies/to-stop/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    study = svc.wait_state("to-stop", ("cancelled", "done", "failed"), timeout=60)
    assert study["state"] == "cancelled"
    trials = optuna.load_study(study_name="to-stop", storage=svc.storage).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs["fail_reason"] == "cancelled" for t in stopped)
    kept = {t.number: (t.params, t.value) for t in trials if t.state == TrialState.COMPLETE}
    assert 0 < len(kept) < 6
    # Cancelling again says so idempotently; a cancelled study has no report.
    r = httpx.post(f"{svc.url}/studies/to-stop/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    detail = httpx.get(f"{svc.url}/studies/to-stop/report").json()["detail"]
    assert "cancelled" in detail and "yet" not in detail

    # `liandan resume`: queued again, runs the rest of the budget, keeps what finished.
    import os

    os.environ["LIANDAN_TOKEN"] = TOKEN
    try:
        r = run_cli("resume", "to-stop", "--url", svc.url, cwd=tmp_path, timeout=60)
    finally:
        os.environ.pop("LIANDAN_TOKEN", None)
    assert r.returncode == 0 and "to-stop" in r.stdout and "queued" in r.stdout, r.stdout
    study = svc.wait_state("to-stop", ("done", "failed", "cancelled"), timeout=180)
    assert study["state"] == "done", study["error"]
    trials = optuna.load_study(study_name="to-stop", storage=svc.storage).trials
    by_number = {t.number: t for t in trials}
    assert all(by_number[n].state == TrialState.COMPLETE
               and (by_number[n].params, by_number[n].value) == kept[n] for n in kept)
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 6
    assert httpx.get(f"{svc.url}/studies/to-stop/report").status_code == 200


def test_the_dashboard_shows_the_study_its_trials_and_the_report_note(
        running_service: Service, flow: dict, tmp_path: Path):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright Python package is not installed")
    study_page = flow["dashboard_url"]
    assert study_page.startswith(running_service.dashboard_url + "/dashboard/studies/")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(running_service.dashboard_url + "/dashboard")
            page.get_by_text(re.compile(r"^\d+\. flow$")).first.wait_for(timeout=30_000)
            page.goto(study_page + "/trials")
            page.get_by_text(f"{flow['progress']['total']} Trials").wait_for(timeout=30_000)
            page.get_by_text("Trial 4", exact=True).first.wait_for()
            page.goto(study_page + "/note")
            page.get_by_role("heading", name="Study report: flow").wait_for(timeout=30_000)
            page.get_by_role("heading", name=re.compile(r"^Best trials")).wait_for()
            # The report's plots come from the reports folder through the dashboard.
            image = page.locator("img[src*='/artifacts/']").first
            image.wait_for(timeout=30_000)
            assert image.evaluate("img => img.complete && img.naturalWidth > 0")
            page.screenshot(path=str(tmp_path / "dashboard.png"))
        finally:
            browser.close()
    if target := os.environ.get("LIANDAN_SCREENSHOT"):  # how docs/dashboard.png was made
        shutil.copy(tmp_path / "dashboard.png", target)


def test_a_dead_worker_is_replaced_and_its_study_resumed(running_service: Service):
    svc = running_service
    assert svc.submit(toy_spec("orphaned", trials=4, epochs=3, sleep=0.5)).status_code == 201
    wait_for(lambda: svc.study("orphaned")["counts"]["running"] > 0, 120,
             "a trial of orphaned to run")
    serve = psutil.Process(svc.proc.pid)
    workers = [p for p in serve.children() if "service.server.worker" in " ".join(p.cmdline())]
    assert len(workers) == 1
    workers[0].kill()  # kill -9 of the worker alone: the serve process lives on
    study = svc.wait_state("orphaned", ("done", "failed", "cancelled"), timeout=150)
    assert study["state"] == "done", study["error"]
    trials = optuna.load_study(study_name="orphaned", storage=svc.storage).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 4 and failed
    assert all(t.user_attrs["fail_reason"] == "interrupted" for t in failed)
    assert "requeued (its worker died): orphaned" in svc.tail(200)


# ── what a spec may run, end to end (issue 15, item 1) ────────────────────────────────────

ZEN = "Beautiful is better than ugly"


def _attacks(proof: Path) -> dict[str, str]:
    shell = (f'fixed: {{/bin/sh: 1, -c: 2, "id > {proof}": 3, epochs: 1}}\n')
    base = toy_spec("attack").replace("fixed: {epochs: 2, sleep: 0.0}\n", shell)
    return {ref: base.replace("name: attack", f"name: attack-{i}")
            .replace("toy_objectives:quadratic", ref)
            for i, ref in enumerate(["subprocess:run", "os:system", "builtins:exec",
                                     "ctypes:CDLL", "this:s", "toy_objectives:os.system",
                                     "objectives.registry:importlib.import_module"])}


def test_a_spec_cannot_run_code_the_operator_did_not_allow(running_service: Service,
                                                          flow: dict, tmp_path: Path):
    svc = running_service
    proof = tmp_path / "ran"
    for ref, body in _attacks(proof).items():
        r = svc.submit(body)
        assert r.status_code == 422, (ref, r.text)
        [problem] = r.json()["detail"]
        assert problem["path"] == "objective" and problem["value"] == ref
        assert "toy_objectives" in problem["allowed"], problem  # what is allowed, named
    # Nothing was queued; the worker is idle (it ran `flow`, an allowed module, to its end).
    names = {s["name"] for s in httpx.get(f"{svc.url}/studies").json()["data"]}
    assert not any(n.startswith("attack") for n in names)
    assert flow["state"] == "done"
    assert not proof.exists()
    assert ZEN not in svc.tail(2000)  # `this` was never imported by the API


def test_the_worker_refuses_a_queued_objective_that_is_not_allowed(running_service: Service,
                                                                   tmp_path: Path):
    # A row the API never checked (an older service's, or written into the database): the
    # worker checks before it imports or runs anything, and fails the study saying why.
    import json

    import sqlalchemy as sa

    svc = running_service
    proof = tmp_path / "ran-by-worker"
    spec = {"name": "smuggled", "objective": "subprocess:run", "metric": "val_loss",
            "direction": "minimize", "nuisance": {"x": [1, 2]},
            "fixed": {"/bin/sh": 1, "-c": 2, f"id > {proof}": 3},
            "budget": {"trials": 2, "seeds": 0, "max_concurrent": 1}}
    engine = sa.create_engine(svc.storage)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO liandan_queue (name, spec, state, total_trials, created, updated, "
            "cancel_requested) VALUES ('smuggled', :spec, 'queued', 2, CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP, 0)"), {"spec": json.dumps(spec)})
    engine.dispose()
    study = svc.wait_state("smuggled", ("done", "failed", "cancelled"), timeout=120)
    assert study["state"] == "failed" and "not allowed" in study["error"], study["error"]
    assert study["counts"]["complete"] + study["counts"]["fail"] == 0
    assert not proof.exists()


# ── what a study may ask for (item 5, submission half) ────────────────────────────────────


def test_resources_no_node_can_hold_are_refused_at_submission(running_service: Service):
    import json

    import sqlalchemy as sa

    svc = running_service
    r = svc.submit(toy_spec("too-big") + "resources: {cpu: 1024, gpu: 64}\n")
    assert r.status_code == 422, r.text
    [problem] = r.json()["detail"]
    assert problem["path"] == "resources" and problem["value"] == {"cpu": 1024, "gpu": 64}
    # The serve's own Ray head, recorded when serve started it: its CPUs are named.
    engine = sa.create_engine(svc.storage)
    with engine.connect() as conn:
        [nodes] = conn.execute(sa.text("SELECT nodes FROM liandan_cluster")).scalars()
    engine.dispose()
    [node] = json.loads(nodes)
    cpus = node["Resources"]["CPU"]
    assert "largest node" in problem["message"] and f"{cpus:g}" in problem["message"], problem
    assert svc.submit(toy_spec("too-big") + "resources: {cpu: 1, gpu: 0}\n").status_code == 201
    httpx.post(f"{svc.url}/studies/too-big/cancel", headers=AUTH)


# ── the Ray head of serve listens on loopback only (item 7) ──────────────────────────────


def test_the_ray_head_listens_on_loopback_only(running_service: Service):
    serve = psutil.Process(running_service.proc.pid)
    listening = []
    for proc in [serve, *serve.children(recursive=True)]:
        try:
            listening += [(proc.name(), c.laddr.ip) for c in proc.net_connections("inet")
                          if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    names = {name for name, _ in listening}
    assert {"gcs_server", "raylet"} <= names, listening  # the head is there to be looked at
    exposed = [(name, ip) for name, ip in listening
               if ip not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    assert not exposed, exposed


# ── the report through the API (item 7) ───────────────────────────────────────────────────


def test_the_reports_plots_are_served_through_the_api(running_service: Service, flow: dict):
    svc = running_service
    report = httpx.get(f"{svc.url}/studies/flow/report").text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert links, report[:500]
    for link in links:
        assert link.startswith(f"{svc.url}/studies/flow/report/") and link.endswith(".png")
        r = httpx.get(link)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", link
        assert r.content.startswith(b"\x89PNG")
    # The file on disk keeps its links relative to the reports folder.
    assert "](flow/" in (svc.cwd / "reports" / "flow.md").read_text()


# ── the dashboard takes changes only with the token (item 3) ─────────────────────────────


def test_the_dashboard_refuses_changes_without_the_token_on_loopback(
        running_service: Service, flow: dict):
    svc = running_service
    dash = svc.dashboard_url
    scratch = optuna.create_study(study_name="scratch-for-dashboard", storage=svc.storage)
    sid = scratch._study_id
    note = {"version": 0, "body": "overwritten"}
    attempts = [("POST", f"/api/studies/{sid}/rename", {"study_name": "renamed"}),
                ("DELETE", f"/api/studies/{sid}", None),
                ("PUT", f"/api/studies/{sid}/note", note),
                ("POST", "/api/studies", {"study_name": "made-here", "directions": ["minimize"]})]
    for method, path, body in attempts:
        r = httpx.request(method, dash + path, json=body)
        assert r.status_code == 401, (method, path, r.status_code)
        wrong = {"Authorization": "Bearer not-the-token-at-all-1234"}
        assert httpx.request(method, dash + path, json=body, headers=wrong).status_code == 401
    names = {s.study_name for s in optuna.get_all_study_summaries(svc.storage)}
    assert "scratch-for-dashboard" in names and not {"renamed", "made-here"} & names
    # Reads stay open on loopback: a browser on this machine just opens it.
    assert httpx.get(f"{dash}/api/studies").status_code == 200
    assert httpx.get(f"{dash}/dashboard").status_code == 200
    # With the token the same change goes through.
    r = httpx.post(f"{dash}/api/studies/{sid}/rename", json={"study_name": "renamed"},
                   headers=AUTH)
    assert r.status_code in (200, 201), r.text
    assert httpx.delete(f"{dash}/api/studies/{r.json()['study_id']}",
                        headers=AUTH).status_code == 204


@pytest.mark.parametrize("host", ["attacker.example:8080", "attacker.example", ""])
def test_the_dashboard_refuses_a_foreign_host(running_service: Service, host: str):
    dash = running_service.dashboard_url
    for method, path in (("GET", "/api/studies"), ("GET", "/dashboard"),
                         ("DELETE", "/api/studies/1")):
        r = httpx.request(method, dash + path, headers={**AUTH, "Host": host})
        assert r.status_code == 400, (method, path, r.status_code)
    port = running_service.dashboard_port
    assert httpx.get(f"{dash}/api/studies", headers={"Host": f"localhost:{port}"}
                     ).status_code == 200
