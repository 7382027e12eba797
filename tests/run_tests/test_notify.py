"""Notifications (`notify: {webhook: URL}`): the spec's field, delivery with retries, and
`liandan run` posting when a study ends. A real HTTP receiver, real Ray, real SQLite."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.run.notify import deliver, notify_in_background
from service.spec import SpecError, validate_spec
from tests.fixtures.webhook_receiver import Receiver

FAST = {"backoff_s": (0.05, 0.05), "timeout_s": 10.0}  # the retries without the waiting
SECRET = "/services/T000/B000/s3cr3t"


def toy(name: str, objective: str = "toy_objectives:quadratic", webhook: str | None = None,
        trials: int = 3) -> str:
    hook = f"notify: {{webhook: '{webhook}'}}\n" if webhook else ""
    return f"""\
name: {name}
objective: {objective}
metric: val_loss
direction: minimize
nuisance: {{x: {{low: -2.0, high: 3.0}}}}
fixed: {{epochs: 2}}
budget: {{trials: {trials}, max_concurrent: 2}}
search: {{sampler: random, pruner: none, seed: 0}}
{hook}"""


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ── the spec ──────────────────────────────────────────────────────────────────────────────
BASE = {"name": "n", "objective": "toy_objectives:quadratic",
        "nuisance": {"x": {"low": 0.0, "high": 1.0}}}


@pytest.mark.parametrize("bad", ["ftp://example.com/hook", "example.com/hook", "http://",
                                 "http://host:port/", "https://exa mple.com/", 42])
def test_a_webhook_that_is_not_an_http_url_is_a_named_problem(bad):
    with pytest.raises(SpecError) as err:
        validate_spec({**BASE, "notify": {"webhook": bad}}, check_objective=False)
    [problem] = err.value.problems
    assert problem.path == "notify.webhook" and problem.value == bad
    assert "http" in problem.allowed


def test_an_unknown_notify_key_is_named_with_a_suggestion():
    with pytest.raises(SpecError) as err:
        validate_spec({**BASE, "notify": {"webhok": "https://x.org"}}, check_objective=False)
    assert "did you mean 'webhook'" in str(err.value)


def test_the_webhook_stays_out_of_the_stored_spec_but_the_queue_keeps_it():
    spec = validate_spec({**BASE, "notify": {"webhook": "https://hooks.example.com" + SECRET}},
                         check_objective=False)
    # The dump is what the study's attributes, the dashboard and the report show.
    assert "notify" not in spec.model_dump(mode="json")
    assert spec.dump_for_queue()["notify"] == {"webhook": "https://hooks.example.com" + SECRET}
    again = validate_spec(spec.dump_for_queue(), check_objective=False)
    assert again.notify.webhook == spec.notify.webhook


# ── delivery ──────────────────────────────────────────────────────────────────────────────
def test_a_receiver_failing_twice_gets_three_tries_and_the_message():
    with Receiver([500, 503]) as hook:
        sent = deliver(hook.url(), {"study": "s", "state": "done"}, **FAST)
        assert sent.ok and sent.tries == 3 and sent.status == 200
        assert hook.bodies() == [{"study": "s", "state": "done"}] * 3


def test_a_client_error_is_not_retried():
    with Receiver([404]) as hook:
        sent = deliver(hook.url(), {"study": "s"}, **FAST)
        assert not sent.ok and sent.tries == 1 and sent.status == 404


def test_an_unreachable_url_is_logged_without_its_secret_and_never_raises(caplog):
    url = f"http://127.0.0.1:{closed_port()}{SECRET}"
    with caplog.at_level(logging.WARNING, logger="liandan.notify"):
        sent = deliver(url, {"study": "s"}, **FAST)
    assert not sent.ok and sent.tries == 3 and sent.status is None
    assert "not delivered after 3 tries" in caplog.text
    assert "s3cr3t" not in caplog.text  # the path of a webhook is often its secret


def test_background_delivery_returns_at_once_and_builds_the_body_in_its_thread():
    with Receiver([500]) as hook:
        built = []
        thread = notify_in_background([hook.url(), None, hook.url()],
                                      lambda: built.append(1) or {"n": len(built)}, **FAST)
        assert thread is not None
        thread.join(60)
        assert hook.bodies() == [{"n": 1}, {"n": 1}]  # one URL once, its retry included
    assert notify_in_background([None, ""], dict) is None


# ── liandan run ───────────────────────────────────────────────────────────────────────────
def cli(tmp_path: Path, spec: str, *args: str):
    (tmp_path / "spec.yaml").write_text(spec)
    result = CliRunner().invoke(app, [
        "run", str(tmp_path / "spec.yaml"), "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}",
        "--out", str(tmp_path / "reports"), "--no-progress", *args])
    return result, f"sqlite:///{tmp_path / 'db.sqlite'}"


@pytest.mark.slow
def test_liandan_run_posts_the_end_of_a_done_study(ray_session, tmp_path):
    with Receiver([500]) as hook:  # one failure on the way: the retry delivers it
        result, url = cli(tmp_path, toy("notified", webhook=hook.url()))
        assert result.exit_code == 0, result.output
        [body] = hook.wait_for(lambda b: b, 60)[-1:]
    trials = optuna.load_study(study_name="notified", storage=url).trials
    assert body["study"] == "notified" and body["state"] == "done"
    assert body["counts"] == {"complete": 3, "pruned": 0, "failed": 0}
    assert body["best_value"] == min(t.value for t in trials)
    assert body["report"] == str((tmp_path / "reports" / "notified.md").resolve())
    assert Path(body["report"]).is_file() and body["error"] is None
    assert "notified http://127.0.0.1" in result.output


@pytest.mark.slow
def test_liandan_run_posts_the_end_of_a_failed_study(ray_session, tmp_path):
    with Receiver() as hook:
        result, _ = cli(tmp_path, toy("notified-fail", "toy_objectives:boom", hook.url()))
        assert result.exit_code == 1, result.output
        [body] = hook.wait_for(lambda b: b, 60)
    assert body["state"] == "failed" and body["report"] is None
    assert body["counts"] == {"complete": 0, "pruned": 0, "failed": 3}
    assert body["best_value"] is None and "boom" in body["error"]


@pytest.mark.slow
def test_an_unreachable_webhook_does_not_fail_the_study(ray_session, tmp_path):
    result, url = cli(tmp_path, toy("notified-nowhere",
                                    webhook=f"http://127.0.0.1:{closed_port()}/hook"))
    assert result.exit_code == 0, result.output
    assert "not delivered after 3 tries" in result.output
    assert len(optuna.load_study(study_name="notified-nowhere", storage=url).trials) == 3
    assert (tmp_path / "reports" / "notified-nowhere.md").is_file()
