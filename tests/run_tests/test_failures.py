"""Failures told truly: an objective's exception is one FAIL trial with its error, never
retried; a study whose trials all failed ends failed with the first error; resources no
node can hold are refused at once. Real Ray, real SQLite, pure-Python toy objectives."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import ray
from optuna.trial import TrialState

from service.run.capacity import unschedulable
from service.run.runner import StudyFailed, Unschedulable, run_study
from service.spec import validate_spec
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("ray_session")

EXPECTED = {  # toy objective -> the error its trials must carry
    "boom": "RuntimeError: boom at x=",
    "boom_before_first": "ValueError: no data",
    "boom_after_first": "KeyError: 'epoch 2 went wrong'",
}


def failing_spec(objective: str, calls: Path, **overrides):
    base = {
        "name": "fails", "objective": f"toy_objectives:{objective}", "metric": "val_loss",
        "direction": "minimize", "nuisance": {"x": [0.3, 0.7]},
        "fixed": {"calls": str(calls)},
        "budget": {"trials": 2, "seeds": 2, "max_concurrent": 2},
        "search": {"sampler": "grid", "pruner": "none"},
    }
    base.update(overrides)
    return validate_spec(base)


@pytest.mark.parametrize("objective", sorted(EXPECTED))
def test_an_objectives_exception_is_one_failed_trial_never_retried(
        sqlite_url, tmp_path, objective):
    calls = tmp_path / "calls"
    calls.mkdir()
    with pytest.raises(StudyFailed, match=EXPECTED[objective].replace("(", r"\(")):
        run_study(failing_spec(objective, calls), sqlite_url, show_progress=False)
    trials = optuna.load_study(study_name="fails", storage=sqlite_url).trials
    # Two tuning trials, each run once: no retry by Ray, no re-issue, no seed re-runs.
    assert len(trials) == 2 and len(list(calls.iterdir())) == 2
    for t in trials:
        assert t.state == TrialState.FAIL
        assert t.user_attrs["role"] == "tune"
        assert t.user_attrs["fail_reason"] == "error"
        assert t.user_attrs["error"].startswith(EXPECTED[objective])
        assert "toy_objectives.py" in t.user_attrs["traceback"]
        assert objective in t.user_attrs["traceback"]
    if objective == "boom_after_first":  # the epoch it did report is kept
        assert all(t.intermediate_values == {1: pytest.approx(t.params["x"] ** 2)}
                   for t in trials)


def test_a_failed_study_is_failed_again_when_run_again(sqlite_url, tmp_path):
    spec = failing_spec("boom", tmp_path)
    with pytest.raises(StudyFailed):
        run_study(spec, sqlite_url, show_progress=False)
    # Nothing is left to run (an error is final), and the verdict is read from the storage.
    with pytest.raises(StudyFailed, match="RuntimeError: boom"):
        run_study(spec, sqlite_url, show_progress=False)
    assert len(optuna.load_study(study_name="fails", storage=sqlite_url).trials) == 2


def test_liandan_run_exits_non_zero_with_the_first_error(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: fails\nobjective: toy_objectives:boom\nmetric: val_loss\n"
        "direction: minimize\nnuisance: {x: [0.3, 0.7]}\n"
        "budget: {trials: 2, seeds: 1, max_concurrent: 1}\n"
        "search: {sampler: grid, pruner: none}\n")
    url = f"sqlite:///{tmp_path / 'liandan.db'}"
    out = run_cli("run", str(spec), "--storage", url, "--no-progress", cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "study fails failed" in out.stdout and "RuntimeError: boom at x=0." in out.stdout


def test_the_service_worker_marks_an_all_failed_study_failed_with_its_error(sqlite_url,
                                                                           tmp_path):
    from service.server.queue import StudyQueue
    from service.server.worker import Worker

    spec = failing_spec("boom_before_first", tmp_path)
    queue = StudyQueue(sqlite_url).setup()
    queue.submit("fails", spec.model_dump(mode="json"), 4)
    worker = Worker(queue, "w1", ray_address=None, reports_dir=tmp_path / "reports",
                    heartbeat_s=1.0, allow_objectives=("toy_objectives",))
    entry = queue.claim("w1")
    assert entry is not None and worker.run_one(entry) == "failed"
    row = queue.get("fails")
    assert row.state == "failed"
    assert row.error.startswith("every trial failed") and "ValueError: no data" in row.error


def test_the_service_worker_fails_a_study_no_node_can_hold_within_seconds(sqlite_url,
                                                                           tmp_path):
    from service.server.queue import StudyQueue
    from service.server.worker import Worker

    spec = failing_spec("quadratic", tmp_path, nuisance={"x": {"low": 0.0, "high": 1.0}},
                        fixed={}, search={"sampler": "random", "pruner": "none"},
                        resources={"cpu": 1024, "gpu": 64})
    queue = StudyQueue(sqlite_url).setup()
    queue.submit("fails", spec.model_dump(mode="json"), 4)  # as a row the API let through
    worker = Worker(queue, "w1", ray_address=None, reports_dir=tmp_path / "reports",
                    heartbeat_s=1.0, allow_objectives=("toy_objectives",))
    start = time.monotonic()
    assert worker.run_one(queue.claim("w1")) == "failed"
    assert time.monotonic() - start < 30
    row = queue.get("fails")
    assert row.state == "failed" and row.error.startswith("resources: a trial needs cpu 1024")


def test_resources_no_node_can_hold_fail_fast_naming_the_largest_node(sqlite_url):
    from service.run.runner import ensure_ray

    # The Ray `liandan run` starts (a test before may have stopped the session's): no node
    # can join it, so the check is final at once.
    ensure_ray(None)
    cpus = ray.cluster_resources()["CPU"]
    spec = failing_spec("quadratic", Path("."), nuisance={"x": {"low": 0.0, "high": 1.0}},
                        fixed={}, search={"sampler": "random", "pruner": "none"},
                        resources={"cpu": 1024, "gpu": 64})
    start = time.monotonic()
    with pytest.raises(Unschedulable) as err:
        run_study(spec, sqlite_url, show_progress=False)
    assert time.monotonic() - start < 30, err.value
    message = str(err.value)
    assert message.startswith("resources:") and "cpu 1024, gpu 64" in message
    assert f"largest node has cpu {cpus:g}, gpu 0" in message
    assert optuna.load_study(study_name="fails", storage=sqlite_url).trials == []


def test_unschedulable_compares_each_node_not_the_cluster_total():
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
             {"Alive": True, "Resources": {"CPU": 16.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    assert unschedulable(8, 1, nodes) is None
    assert unschedulable(16, 0, nodes) is None
    assert unschedulable(0.5, 0.25, nodes) is None
    # 24 CPUs exist in all, but no one node has them; the dead node does not count.
    problem = unschedulable(12, 1, nodes)
    assert problem and "largest node has cpu 8, gpu 1 (2 nodes)" in problem
    assert "no live node" in unschedulable(1, 0, nodes[2:])
