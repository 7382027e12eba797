"""Checkpoints and resume mid-trial: a trial whose worker is killed, or whose node is
removed, goes on from its last saved epoch; a finished trial leaves no checkpoint behind.
Real Ray (in-process, and a simulated cluster), real SQLite, the pure-Python
`toy_objectives:resumable`, which logs every start and every epoch it trains."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from service.run.checkpoints import META_FILE, TrialCheckpoint, takes_checkpoint
from service.run.runner import run_study
from service.spec import validate_spec
from tests.conftest import local_cluster, run_cli

EPOCHS = 8


def spec(log: Path, ckpt_root: Path, trials: int = 1, epochs: int = EPOCHS,
         sleep: float = 0.6, **fixed):
    # pruner none: epochs are reported (and checkpoints stored) together, at most once a
    # second; a 0.6 s epoch makes it every second epoch, whatever the machine's load.
    return validate_spec({
        "name": "ckpt", "objective": "toy_objectives:resumable", "metric": "val_loss",
        "direction": "minimize", "nuisance": {"x": {"low": 0.0, "high": 1.0}},
        "fixed": {"epochs": epochs, "sleep": sleep, "log": str(log),
                  "ckpt_root": str(ckpt_root), **fixed},
        "budget": {"trials": trials, "seeds": 0, "max_concurrent": 1},
        "search": {"sampler": "random", "pruner": "none", "seed": 0},
    })


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def saved_step(root: Path) -> int:
    """The most epochs a stored checkpoint under `root` covers (0: none yet)."""
    steps = []
    for meta in root.rglob(META_FILE):
        try:
            steps.append(json.loads(meta.read_text())["step"])
        except (OSError, ValueError):  # being written or deleted right now
            pass
    return max(steps, default=0)


def kill_once_saved(log: Path, root: Path, kill, min_step: int = 2) -> threading.Thread:
    """In a thread: once the driver holds a checkpoint of `min_step` or more epochs,
    `kill(pid)` the worker process of the trial's first attempt.

    A checkpoint of `s` epochs is in the storage before its report leaves the worker, and
    the worker trains epoch s + 1 only once the driver has taken that report (Tune's
    function trainable waits for it): so a stored checkpoint of `s` epochs and then epoch
    s + 1 in the log mean the driver will hand `s` epochs to the retry."""
    done: list[int] = []

    def holds_checkpoint() -> bool:
        stored = saved_step(root)  # read before the log: an epoch after it is later
        trained = [e["epoch"] for e in events(log) if e["event"] == "epoch"]
        return stored >= min_step and max(trained, default=0) > stored

    def watch() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not holds_checkpoint():
            time.sleep(0.05)
        starts = [e for e in events(log) if e["event"] == "start"]
        if len(starts) == 1:
            kill(starts[0]["pid"])
            done.append(starts[0]["pid"])

    thread = threading.Thread(target=watch, daemon=True)
    thread.killed = done  # type: ignore[attr-defined]
    thread.start()
    return thread


def assert_resumed(url: str, log: Path) -> dict:
    """The one trial is COMPLETE with every epoch's value once, in order, and its retry
    went on from the saved epoch instead of starting over. Returns the retry's start."""
    study = optuna.load_study(study_name="ckpt", storage=url)
    trial, = study.trials
    assert trial.state == TrialState.COMPLETE
    # The objective's own epoch count is in the value (1/epoch): a retry numbered from 1
    # again would put 1/(saved+1) at step 1.
    assert trial.intermediate_values == {e: pytest.approx(1.0 / e) for e in range(1, EPOCHS + 1)}
    assert trial.user_attrs["total"] == EPOCHS * (EPOCHS + 1) // 2  # the state carried over
    seen = events(log)
    first, retry = [e for e in seen if e["event"] == "start"]  # two attempts, no more
    assert first["resumed_from"] == 0
    saved = retry["resumed_from"]
    assert saved >= 2, "the retry did not resume from the checkpoint of >= 2 epochs"
    after = [e["epoch"] for e in seen[seen.index(retry) + 1:] if e["event"] == "epoch"]
    assert after == list(range(saved + 1, EPOCHS + 1))  # first epoch after resume = saved + 1
    before = [e["epoch"] for e in seen[:seen.index(retry)] if e["event"] == "epoch"]
    assert before[:saved] == list(range(1, saved + 1))  # epochs 1..saved ran once, before
    assert retry["pid"] != first["pid"]
    assert trial.user_attrs["resumed_from"] == saved  # the record says so
    return retry


def test_the_opt_in_is_a_second_parameter_named_checkpoint() -> None:
    def plain(params):
        yield {}

    def opted_in(params, checkpoint):
        yield {}

    def other_name(params, ckpt):
        yield {}

    def defaulted(params, checkpoint=None):
        yield {}

    assert not takes_checkpoint(plain)
    assert takes_checkpoint(opted_in)
    assert takes_checkpoint(defaulted)
    assert not takes_checkpoint(other_name)
    assert not takes_checkpoint(print)  # no signature: called the plain way


def test_a_saved_state_is_a_copy_taken_at_the_call() -> None:
    # A model's state_dict holds live tensors; the saved state must not follow them.
    checkpoint = TrialCheckpoint()
    checkpoint.begin_epoch(step=3, compute_s=1.0, started=time.perf_counter())
    state = {"weights": [1, 2]}
    checkpoint.save(state)
    state["weights"].append(3)
    try:
        assert checkpoint.pending is not None
        assert json.loads((checkpoint.pending / META_FILE).read_text())["step"] == 3
        files = {p.name for p in checkpoint.pending.iterdir()}
        assert files & {"state.pt", "state.pkl"}
        first = checkpoint.pending
        checkpoint.save({"weights": [0]})  # only the latest is kept until it is reported
        assert not first.exists()
    finally:
        checkpoint.drop_pending()
    assert checkpoint.pending is None


@pytest.mark.slow
def test_a_killed_worker_resumes_from_its_last_saved_epoch(ray_session, sqlite_url, tmp_path):
    log, root = tmp_path / "events.jsonl", tmp_path / "checkpoints"
    killer = kill_once_saved(log, root, lambda pid: os.kill(pid, signal.SIGKILL))
    run_study(spec(log, root), sqlite_url, show_progress=False, checkpoint_dir=str(root))
    killer.join(timeout=5)
    assert killer.killed, "the worker was never killed"  # type: ignore[attr-defined]
    assert_resumed(sqlite_url, log)
    assert list(root.iterdir()) == []  # the run's folder went with the run


@pytest.mark.slow
def test_finished_trials_leave_no_checkpoint(ray_session, sqlite_url, tmp_path):
    log, root = tmp_path / "events.jsonl", tmp_path / "checkpoints"
    run_study(spec(log, root, trials=3, epochs=3), sqlite_url, show_progress=False,
              checkpoint_dir=str(root))
    study = optuna.load_study(study_name="ckpt", storage=sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    seen = events(log)
    # Trials run one at a time: each starts after the one before ended, and finds none of
    # its checkpoints; while it runs, its own (epoch 2's) is stored.
    assert [e["seen"] for e in seen if e["event"] == "start"] == [0, 0, 0]
    assert all(e["seen"] >= 1 for e in seen if e["event"] == "epoch" and e["epoch"] == 3)
    assert list(root.iterdir()) == []


@pytest.fixture
def cluster():
    """Head (0 CPUs: it only schedules) + two 1-CPU worker nodes, on this one machine."""
    with local_cluster(nodes=2, cpus=1) as (c, workers):
        yield c, workers


def _raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


@pytest.mark.slow
def test_a_trial_on_a_removed_node_resumes_on_another(cluster, sqlite_url, tmp_path):
    c, workers = cluster
    log, root = tmp_path / "events.jsonl", tmp_path / "checkpoints"
    removed: list = []

    def remove_node_of(pid: int) -> None:
        # A worker process is started by its node's raylet.
        raylets = {p.pid for p in psutil.Process(pid).parents()}
        node = next(w for w in workers if _raylet_pid(w) in raylets)
        c.remove_node(node)
        removed.append(node)

    remover = kill_once_saved(log, root, remove_node_of)
    run_study(spec(log, root), sqlite_url, show_progress=False, checkpoint_dir=str(root))
    remover.join(timeout=30)
    assert removed, "no node was removed"
    assert_resumed(sqlite_url, log)
    trial, = optuna.load_study(study_name="ckpt", storage=sqlite_url).trials
    survivor, = (w for w in workers if w is not removed[0])
    assert trial.user_attrs["node_id"] == survivor.node_id
    assert list(root.iterdir()) == []


def _trial_worker() -> int:
    """The pid of the one live trial actor (Ray titles its process after the class) of
    the Ray this process started: other Rays on the machine are none of this test's."""
    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("ImplicitFunc" in part for part in proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:  # ended meanwhile
            pass
    assert len(pids) == 1, f"expected one trial worker, found {pids}"
    return pids[0]


@pytest.mark.slow
def test_a_killed_digits_trial_resumes_with_the_curve_it_would_have_had(
        ray_session, sqlite_url, tmp_path):
    """The built-in saves model, optimizer, schedule and RNG state: the resumed trial's
    curve is the one an uninterrupted trial of the same configuration draws, bit for bit
    (CPU, one thread each)."""
    root = tmp_path / "checkpoints"

    def digits(name: str):
        return validate_spec({
            "name": name, "objective": "digits_cnn", "metric": "val_accuracy",
            "nuisance": {"lr": [0.05]},
            "fixed": {"epochs": 10, "batch_size": 16, "optimizer": "momentum",
                      "momentum": 0.9, "decay": "cosine", "warmup_epochs": 1,
                      "augment": True, "batchnorm": True},
            "budget": {"trials": 1, "seeds": 0, "max_concurrent": 1},
            "search": {"sampler": "random", "pruner": "none", "seed": 0},
        })

    killed: list[int] = []

    def kill_after_a_later_save() -> None:
        # Checkpoint s stored, then a later one: the worker went on past s, so the driver
        # took s (see kill_once_saved).
        deadline = time.time() + 120
        while time.time() < deadline and saved_step(root) < 2:
            time.sleep(0.05)
        first = saved_step(root)
        while time.time() < deadline and saved_step(root) <= first:
            time.sleep(0.05)
        if saved_step(root) > first:
            pid = _trial_worker()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_after_a_later_save, daemon=True)
    killer.start()
    run_study(digits("killed"), sqlite_url, show_progress=False, checkpoint_dir=str(root))
    killer.join(timeout=5)
    assert killed, "the worker was never killed"
    run_study(digits("whole"), sqlite_url, show_progress=False)

    resumed, = optuna.load_study(study_name="killed", storage=sqlite_url).trials
    whole, = optuna.load_study(study_name="whole", storage=sqlite_url).trials
    assert resumed.state == whole.state == TrialState.COMPLETE
    assert resumed.user_attrs["resumed_from"] >= 2
    assert "resumed_from" not in whole.user_attrs
    assert sorted(resumed.intermediate_values) == list(range(1, 11))
    assert resumed.intermediate_values == whole.intermediate_values
    assert resumed.user_attrs["val_loss"] == whole.user_attrs["val_loss"]
    assert list(root.iterdir()) == []


@pytest.mark.slow
def test_liandan_run_keeps_checkpoints_under_checkpoint_dir(tmp_path):
    log, root = tmp_path / "events.jsonl", tmp_path / "shared-ckpt"
    (tmp_path / "spec.yaml").write_text(
        "name: ckpt\nobjective: toy_objectives:resumable\nmetric: val_loss\n"
        "direction: minimize\nnuisance: {x: {low: 0.0, high: 1.0}}\n"
        f"fixed: {{epochs: 3, sleep: 0.6, log: '{log}', ckpt_root: '{root}'}}\n"
        "budget: {trials: 1, seeds: 0, max_concurrent: 1}\n"
        "search: {sampler: random, pruner: none, seed: 0}\n")
    done = run_cli("run", "spec.yaml", "--storage", f"sqlite:///{tmp_path / 'l.db'}",
                   "--checkpoint-dir", str(root), "--no-progress", "--no-report", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    last = [e for e in events(log) if e["event"] == "epoch"][-1]
    assert last["epoch"] == 3 and last["seen"] >= 1  # epoch 2's checkpoint was there
    assert list(root.iterdir()) == []  # and nothing is left


@pytest.mark.slow
def test_a_storage_out_of_reach_turns_checkpoints_off_not_the_trial(
        ray_session, sqlite_url, tmp_path):
    # Tune checks a node reaches the storage by a marker file the driver writes there (a
    # local folder of the driver is absent on another node). The objective removes it, as
    # on such a node: the trial trains on, without checkpoints, and its record says why.
    log, root = tmp_path / "events.jsonl", tmp_path / "checkpoints"
    run_study(spec(log, root, epochs=4, storage_out_of_reach=True), sqlite_url,
              show_progress=False, checkpoint_dir=str(root))
    trial, = optuna.load_study(study_name="ckpt", storage=sqlite_url).trials
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4]
    assert trial.user_attrs["checkpoint_error"].startswith("checkpoints off")
    assert all(e["seen"] == 0 for e in events(log))  # none was ever stored
