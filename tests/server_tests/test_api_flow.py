"""The whole service on real Ray and SQLite: submit → run → report, the dashboard in a real
browser, and cancel mid-run."""

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

from tests.server_tests.conftest import AUTH, Service, toy_spec, wait_for

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
    assert study["counts"]["complete"] == 5 and study["counts"]["running"] == 0
    assert study["progress"] == {"finished": 5, "total": 5, "fraction": 1.0}
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
    assert (svc.cwd / "reports" / "flow.md").read_text() == r.text
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
    assert listed["flow"]["state"] == "done" and listed["flow"]["counts"]["complete"] == 5


def test_cancel_stops_a_running_study(running_service: Service):
    svc = running_service
    assert svc.submit(toy_spec("to-stop", trials=8, epochs=6, sleep=1.0)).status_code == 201
    wait_for(lambda: svc.study("to-stop")["counts"]["running"] > 0, 120,
             "a trial of to-stop to run")
    r = httpx.post(f"{svc.url}/studies/to-stop/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    study = svc.wait_state("to-stop", ("cancelled", "done", "failed"), timeout=60)
    assert study["state"] == "cancelled"
    trials = optuna.load_study(study_name="to-stop", storage=svc.storage).trials
    assert len(trials) < 8 and not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs["fail_reason"] == "cancelled" for t in stopped)
    # A finished study cannot be cancelled again; a cancelled one says so idempotently.
    r = httpx.post(f"{svc.url}/studies/to-stop/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"


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
            page.get_by_text("5 Trials").wait_for(timeout=30_000)
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
