"""`liandan serve` tells a webhook when a study ends: the spec's `notify.webhook` and the
service's `LIANDAN_WEBHOOK`, for a done, a failed and a cancelled study. A real serve, a
real HTTP receiver on 127.0.0.1, real Ray and SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import optuna
import pytest

from tests.fixtures.webhook_receiver import Receiver
from tests.server_tests.conftest import AUTH, Service, toy_spec, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, hook: Receiver) -> Iterator[Service]:
    cwd = tmp_path_factory.mktemp("notify-service")
    svc = Service(cwd, f"sqlite:///{cwd / 'studies.db'}", workers=1, dashboard=False,
                  env={"LIANDAN_WEBHOOK": hook.url("/operator")})
    yield svc.start()
    svc.stop()


def with_hook(spec: str, hook: Receiver) -> str:
    return spec + f"notify: {{webhook: '{hook.url('/owner')}'}}\n"


def ended(hook: Receiver, name: str, path: str) -> dict:
    """The one message about study `name` that reached `path`."""
    hook.wait_for(lambda _: any(b["study"] == name for b in hook.bodies(path)))
    [body] = [b for b in hook.bodies(path) if b["study"] == name]
    return body


def test_a_done_study_is_posted_to_the_spec_and_the_service_webhooks(service, hook):
    assert service.submit(with_hook(toy_spec("hooked", trials=3), hook)).status_code == 201
    assert service.wait_state("hooked", ("done", "failed"))["state"] == "done"
    owner, operator = ended(hook, "hooked", "/owner"), ended(hook, "hooked", "/operator")
    assert owner == operator
    trials = optuna.load_study(study_name="hooked", storage=service.storage).trials
    assert owner["state"] == "done"
    assert owner["counts"] == {"complete": 3, "pruned": 0, "failed": 0}
    assert owner["best_value"] == min(t.value for t in trials)
    assert owner["report"] == f"{service.url}/studies/hooked/report"
    assert httpx.get(owner["report"], timeout=30).status_code == 200  # the link works
    # Readers of the API never see the webhook (it may carry a secret).
    assert "notify" not in service.study("hooked")["spec"]


def test_a_failed_study_is_posted_with_its_error(service, hook):
    spec = toy_spec("hooked-boom", trials=2).replace("toy_objectives:quadratic",
                                                     "toy_objectives:boom")
    assert service.submit(spec).status_code == 201
    assert service.wait_state("hooked-boom", ("done", "failed"))["state"] == "failed"
    body = ended(hook, "hooked-boom", "/operator")
    assert body["state"] == "failed" and body["report"] is None
    assert body["counts"] == {"complete": 0, "pruned": 0, "failed": 2}
    assert "boom" in body["error"]
    assert not [b for b in hook.bodies("/owner") if b["study"] == "hooked-boom"]


def test_a_cancelled_study_is_posted(service, hook, tmp_path: Path):
    spec = with_hook(toy_spec("hooked-stop", trials=6, epochs=4, sleep=0.5), hook)
    assert service.submit(spec).status_code == 201
    wait_for(lambda: service.study("hooked-stop")["counts"]["running"] > 0, 120,
             "a trial of hooked-stop to run")
    assert httpx.post(f"{service.url}/studies/hooked-stop/cancel", headers=AUTH).status_code \
        == 200
    assert service.wait_state("hooked-stop", ("cancelled", "done", "failed"))["state"] \
        == "cancelled"
    body = ended(hook, "hooked-stop", "/owner")
    assert body["state"] == "cancelled" and body["report"] is None
    assert body["counts"]["failed"] >= 1  # the trials stopped are FAIL (cancelled)
