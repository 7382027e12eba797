"""Run a study: the plan's trials on Ray Tune, recorded in Optuna as they happen.

    spec ──► Plan ──► StudySearch (one OptunaSearch per arm) ─┐
                      PerArmScheduler (ASHA/median/hyperband) ├─► Tuner.fit() on Ray
                      run_trial (objective's epochs)         ─┘

Ray starts in-process unless `ray_address` names an existing cluster. Running the same
spec against the same storage again resumes it: finished trials are kept, trials a dead
driver left RUNNING are failed and their budget re-run.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import psutil
import ray
from ray import tune
from ray.tune.execution import class_cache
from rich.console import Console

from service.plan import Plan, make_plan
from service.run.capacity import NODE_WAIT_S, Unschedulable, check_fits
from service.run.checkpoints import CheckpointCleanup, checkpoint_storage
from service.run.ledger import DriverOnly, Ledger
from service.run.progress import ProgressCallback
from service.run.schedulers import PerArmScheduler
from service.run.study_search import StudySearch
from service.run.trainable import run_trial
from service.spec import StudySpec
from service.store.storage import open_storage

# What may differ between two runs of one study: how much to run and where, not what.
RESUMABLE_FIELDS = {"budget", "resources", "rules"}
MAX_RETRIES = 3
__all__ = ["RunResult", "StudyConflict", "StudyFailed", "Unschedulable", "ensure_ray",
           "run_study", "stop_ray"]
# What Tune puts in every trainable actor's runtime_env (ray/tune/execution/class_cache.py).
_TUNE_ACTOR_ENV = {"PL_DISABLE_FORK": "1"}
MONITOR_SCRIPT = os.path.join("autoscaler", "_private", "monitor.py")  # Ray's autoscaler
_local_head: str | None = None  # the GCS address of the Ray that ensure_ray started here


class StudyConflict(ValueError):
    """The storage holds a study of this name that searches something else."""


class StudyFailed(RuntimeError):
    """Every trial of the study failed: nothing was measured. The message is the first
    trial's error (`liandan run` exits non-zero with it; the service marks the study
    `failed` with it)."""


class CancelStopper(DriverOnly, tune.Stopper):
    """Ends the whole run when `should_stop()` says so (a cancelled study).

    Tune asks `stop_all` every controller step (~0.1 s); the callback may hit a database,
    so it is asked at most once a second.
    """

    def __init__(self, should_stop: Callable[[], bool], ledger: Ledger, every_s: float = 1.0):
        self.should_stop, self.ledger, self.every_s = should_stop, ledger, every_s
        self._next = 0.0

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        if not self.ledger.cancelled and time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every_s
            self.ledger.cancelled = bool(self.should_stop())
        return self.ledger.cancelled


@dataclass
class RunResult:
    plan: Plan
    ledger: Ledger
    wall_s: float
    started: int  # trials this run started (0 when the study was already finished)
    cancelled: bool = False
    ray_start_s: float = 0.0  # of wall_s, starting Ray (0 when it was running already)


def check_compatible(spec: StudySpec, plan: Plan, storage: optuna.storages.BaseStorage) -> None:
    """Refuse to mix two different searches in one study (a resume must be the same study)."""
    # get_all_studies reads study rows only; get_all_study_summaries reads every trial.
    existing = {s.study_name: s for s in storage.get_all_studies()}
    mine = {k: v for k, v in spec.model_dump(mode="json").items() if k not in RESUMABLE_FIELDS}
    for name in plan.study_names:
        if name not in existing:
            continue
        theirs = existing[name].user_attrs.get("spec")
        if theirs is None:
            raise StudyConflict(f"study {name!r} exists in the storage but was not made by "
                                "liandan; choose another name")
        theirs = {k: v for k, v in theirs.items() if k not in RESUMABLE_FIELDS}
        if theirs != mine:
            diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            raise StudyConflict(
                f"study {name!r} already exists with a different spec (differs in: "
                f"{', '.join(diff)}); rename the study, or run the original spec to resume it")


def ensure_ray(address: str | None, data_root: str | None = None) -> bool:
    """Connect to `address` or start Ray in-process; True when this call started it."""
    global _local_head
    if ray.is_initialized():
        return False
    env = {"PYTHONPATH": os.pathsep.join(
        [os.getcwd(), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])}
    for key in ("LIANDAN_DATA_ROOT",):
        if os.environ.get(key):
            env[key] = os.environ[key]
    if data_root:
        env["LIANDAN_DATA_ROOT"] = str(Path(data_root).resolve())
    common = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:  # a cluster's workers get the environment through the job's runtime_env
        _tune_actor_env(local=False)
        ray.init(address=address, runtime_env={"env_vars": env}, **common)
        return True
    # A local Ray's workers are this process's grandchildren: they inherit the environment
    # the raylet is started with, so the job needs no runtime_env. Without one, the workers
    # Ray prestarts at `ray.init` (one per CPU) are workers the trial actors can take (Ray
    # gives an actor only an idle worker of the same runtime_env), so each trial slot skips
    # the start of a worker process. "local": a fresh Ray; plain None would attach to
    # whatever cluster `ray start` left running on this machine.
    _tune_actor_env(local=True)
    env.update(_TUNE_ACTOR_ENV)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        ray.init(address="local", **common)
        _local_head = ray.get_runtime_context().gcs_address
    finally:  # this process keeps its own environment
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return True



def _tune_actor_env(local: bool) -> None:
    """On a local Ray the workers inherit `_TUNE_ACTOR_ENV` instead, so Tune's actors go
    without a runtime_env of their own and may take the prestarted workers."""
    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if isinstance(defaults, dict):  # absent in another Ray: actors then start new workers
        defaults.clear()
        if not local:
            defaults.update(_TUNE_ACTOR_ENV)


def stop_ray() -> None:
    """`ray.shutdown()`, a second sooner. Ray stops a head's processes one by one, each
    with SIGTERM and up to 1 s to exit; its autoscaler monitor, stopped after the GCS,
    spends that whole second trying to report its own end to the gone GCS. So when the
    Ray to stop is the head `ensure_ray` started here, its monitor is killed first: a head
    about to stop has nothing left to autoscale."""
    global _local_head
    if _local_head and ray.is_initialized() and (
            ray.get_runtime_context().gcs_address == _local_head):
        flag = f"--gcs-address={_local_head}"
        for child in psutil.Process().children():
            try:
                args = child.cmdline()
                if flag in args and any(a.endswith(MONITOR_SCRIPT) for a in args):
                    child.kill()
            except psutil.Error:
                pass
    _local_head = None
    ray.shutdown()



def run_study(spec: StudySpec, storage_url: str | None = None, *,
              ray_address: str | None = None, show_progress: bool = True,
              data_root: str | None = None, console: Console | None = None,
              should_stop: Callable[[], bool] | None = None,
              checkpoint_dir: str | None = None) -> RunResult:
    """Run (or resume) `spec` to the end of its budget, or until `should_stop()` is true:
    then running trials are stopped and recorded FAIL with `fail_reason=cancelled`.

    Trials of an objective that takes a `checkpoint` save theirs under `checkpoint_dir`
    (a path every node reaches, or a storage URI, on a cluster; a temporary folder here
    by default), so a retried trial resumes from its last saved epoch."""
    t0 = time.perf_counter()
    plan = make_plan(spec)
    storage = open_storage(storage_url)
    check_compatible(spec, plan, storage)
    ledger = Ledger(spec.direction)
    search = StudySearch(plan, storage, ledger)
    todo = search.remaining
    if todo == 0:
        _raise_if_failed(search)
        return RunResult(plan, ledger, time.perf_counter() - t0, 0)

    # Tune's CSV/JSON/TensorBoard loggers duplicate what Optuna records; skip them.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune snapshots its experiment state every 10 s or more, pickling every trial, into
    # the temporary directory below that is deleted after the run: the Optuna storage is
    # the checkpoint (`StudySearch` recovers from it). Only its final snapshot remains.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(10**9))
    # A result without the metric (an objective's error, a user objective that forgot it)
    # must end one trial as FAIL, not abort the whole run.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Tune's end-of-run result grid reads those logs back and warns when they are absent.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    ray_t0 = time.perf_counter()
    started_ray = ensure_ray(ray_address, data_root)
    ray_start_s = time.perf_counter() - ray_t0
    res = spec.resources
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, objective=spec.objective, cpus=res.cpu),
        {"cpu": res.cpu, "gpu": res.gpu},
    )
    progress = ProgressCallback(ledger, todo, console) if show_progress else None
    try:
        # Ray would queue a trial no node can hold forever: refuse it (service.run.capacity).
        here = started_ray or (_local_head is not None
                               and ray.get_runtime_context().gcs_address == _local_head)
        check_fits(res.cpu, res.gpu, wait_s=0.0 if here else NODE_WAIT_S)
        with checkpoint_storage(checkpoint_dir) as tune_dir:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=search, scheduler=PerArmScheduler(plan, ledger),
                    # The searcher says when it is done (lost trials are re-issued).
                    num_samples=-1, max_concurrent_trials=spec.budget.max_concurrent,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=spec.name, storage_path=tune_dir, verbose=0,
                    stop=CancelStopper(should_stop, ledger) if should_stop else None,
                    # A trial whose worker process or node died is started again elsewhere;
                    # an objective's own exception is reported as a result, never retried.
                    failure_config=tune.FailureConfig(max_failures=MAX_RETRIES),
                    # A trial's latest checkpoint is kept while it runs, none once it ends.
                    callbacks=[CheckpointCleanup(), *([progress] if progress else [])],
                ),
            )
            if progress:
                with progress:
                    tuner.fit()
            else:
                tuner.fit()
    finally:
        search.abandon_unfinished()
        if started_ray:
            stop_ray()
        sys.stdout.flush()
    if not ledger.cancelled:
        _raise_if_failed(search)
    return RunResult(plan, ledger, time.perf_counter() - t0, todo, ledger.cancelled, ray_start_s)


def _raise_if_failed(search: StudySearch) -> None:
    error = search.failure()
    if error is not None:
        raise StudyFailed(error)
