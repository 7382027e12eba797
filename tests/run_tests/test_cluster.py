"""Scale-out and failure: a simulated multi-node Ray cluster (`ray.cluster_utils.Cluster`,
a head with no CPUs and two worker nodes), a node removed mid-study, and a driver killed
with SIGKILL and started again. Real Ray, real SQLite, pure-Python objectives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import ray
from optuna.trial import TrialState

from service.run.runner import run_study
from service.spec import validate_spec
from service.store.storage import open_storage
from tests.conftest import local_cluster

pytestmark = pytest.mark.slow


def toy_spec(trials: int, concurrent: int, sleep: float, epochs: int = 4):
    return validate_spec({
        "name": "scale", "objective": "toy_objectives:quadratic", "metric": "val_loss",
        "direction": "minimize", "nuisance": {"x": {"low": -2.0, "high": 3.0}},
        "fixed": {"epochs": epochs, "sleep": sleep},
        "budget": {"trials": trials, "seeds": 0, "max_concurrent": concurrent},
        "search": {"sampler": "random", "pruner": "none", "seed": 0},
    })


@pytest.fixture
def cluster():
    """Head (0 CPUs: it only schedules) + two 2-CPU worker nodes, on this one machine."""
    with local_cluster(nodes=2, cpus=2) as (c, workers):
        yield c, workers


def complete_trials(url: str, name: str = "scale") -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return []
    return [t for t in study.trials if t.state == TrialState.COMPLETE]


def test_trials_spread_over_nodes_and_never_land_on_a_cpu_less_head(cluster, sqlite_url):
    c, workers = cluster
    run_study(toy_spec(trials=8, concurrent=4, sleep=0.2), sqlite_url, show_progress=False)
    trials = complete_trials(sqlite_url)
    assert len(trials) == 8
    nodes = {t.user_attrs["node_id"] for t in trials}
    assert len(nodes) >= 2
    assert c.head_node.node_id not in nodes
    assert nodes <= {w.node_id for w in workers}


def test_a_node_removed_mid_study_loses_nothing(cluster, sqlite_url):
    c, workers = cluster
    removed: list[str] = []
    open_storage(sqlite_url)  # create the tables before two threads race to

    def remove_a_busy_node() -> None:
        # Wait until trials are finished *and* running, then take away a node.
        deadline = time.time() + 60
        while time.time() < deadline and len(complete_trials(sqlite_url)) < 2:
            time.sleep(0.2)
        c.remove_node(workers[0])
        removed.append(workers[0].node_id)

    remover = threading.Thread(target=remove_a_busy_node)
    remover.start()
    run_study(toy_spec(trials=10, concurrent=4, sleep=0.3), sqlite_url, show_progress=False)
    remover.join()
    assert removed, "the node was never removed"
    study = optuna.load_study(study_name="scale", storage=sqlite_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 10
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4] for t in complete)
    others = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.user_attrs.get("fail_reason") == "worker_lost" for t in others)
    # Trials that finished after the removal ran on the surviving node.
    survivors = {t.user_attrs["node_id"] for t in complete[-3:]}
    assert survivors == {workers[1].node_id}


def test_a_killed_driver_resumes_with_nothing_lost_or_run_twice(tmp_path: Path):
    ray.shutdown()  # this test's drivers start their own in-process Ray
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: scale\nobjective: toy_objectives:quadratic\nmetric: val_loss\n"
        "direction: minimize\nnuisance: {x: {low: -2.0, high: 3.0}}\n"
        "fixed: {epochs: 5, sleep: 0.3}\n"
        "budget: {trials: 8, seeds: 0, max_concurrent: 2}\n"
        "search: {sampler: random, pruner: none, seed: 0}\n")
    url = f"sqlite:///{tmp_path / 'liandan.db'}"
    cmd = [sys.executable, "-m", "service.cli", "run", str(spec), "--storage", url,
           "--no-progress"]
    first = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(complete_trials(url)) < 3:
        time.sleep(0.2)
    before = {t.number: t.params["x"] for t in complete_trials(url)}
    assert len(before) >= 3, "the first driver never got going"
    os.killpg(first.pid, signal.SIGKILL)  # the driver and every Ray process it started
    first.wait()

    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    study = optuna.load_study(study_name="scale", storage=url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8  # the budget, exactly: nothing run twice
    kept = {t.number: t.params["x"] for t in complete}
    assert all(kept.get(n) == x for n, x in before.items())  # nothing finished was lost
    leftovers = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted"
               for t in leftovers)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def _bigger_than_every_node(spec):
    # 3 CPUs a trial: the cluster has 4 in all, but no one node has more than 2.
    return spec.model_copy(update={"resources": spec.resources.model_copy(update={"cpu": 3.0})})


def test_a_trial_no_node_can_hold_fails_naming_the_largest_node(cluster, sqlite_url,
                                                                 monkeypatch):
    from service.run import runner

    monkeypatch.setattr(runner, "NODE_WAIT_S", 2.0)  # (25 s in use; the rule, not the wait)
    with pytest.raises(runner.Unschedulable, match=r"largest node has cpu 2, gpu 0 \(3 nodes\)"):
        run_study(_bigger_than_every_node(toy_spec(trials=1, concurrent=1, sleep=0.0)),
                  sqlite_url, show_progress=False)


def test_a_node_that_joins_while_the_run_waits_takes_the_trial(cluster, sqlite_url,
                                                               monkeypatch):
    """A node started with `ray start` (as an operator or an autoscaler would) while the
    run waits for one that can hold a trial: the run goes on, on that node."""
    from service.run import runner

    c, _ = cluster
    monkeypatch.setattr(runner, "NODE_WAIT_S", 120.0)  # generous: starting a node is slow here
    ray_cli = Path(sys.executable).with_name("ray")
    node = subprocess.Popen([str(ray_cli), "start", "--address", c.address, "--num-cpus", "4",
                             "--block"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run_study(_bigger_than_every_node(toy_spec(trials=2, concurrent=1, sleep=0.0)),
                  sqlite_url, show_progress=False)
        big = {n["NodeID"] for n in ray.nodes()
               if n["Alive"] and n["Resources"].get("CPU") == 4.0}
    finally:
        os.killpg(node.pid, signal.SIGKILL)  # the node's raylet and workers, nothing else
        node.wait()
    trials = complete_trials(sqlite_url)
    assert len(trials) == 2 and {t.user_attrs["node_id"] for t in trials} == big
