"""The function Ray Tune runs in a worker: an objective's epochs, reported to the driver.

It is the only place where Ray meets an objective. It pins torch threads to the CPUs
the trial was given, picks the device, and adds `node_id` and `device` to each report.
Objectives themselves stay free of Ray and Optuna.

A trial that a scheduler may stop reports every epoch: the scheduler decides after each.
Any other trial (no pruner, a seed re-run) reports at most as often as its config's
`REPORT_EVERY_KEY` says (the searcher sets it), each report carrying the epochs since the
last. Each `tune.report` holds the training thread until the driver has taken the result,
so per-epoch reports of short epochs cost a round trip each, longer still while the driver
is busy starting another trial.

An objective that takes a `checkpoint` (service.run.checkpoints) is given the state its
trial last saved: a trial Ray retried after its worker or node died goes on from there,
its epochs numbered on from the saved one, and each report carries the latest state saved.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ray
from ray import tune

from objectives import resolve
from service.run.checkpoints import TrialCheckpoint, takes_checkpoint

ERROR_KEY = "error"  # a result carrying it ends the trial as FAIL with the message kept
# Set by the searcher in a trial's config (and taken out before the objective sees it):
# the least time between two reports, 0 for a report per epoch.
REPORT_EVERY_KEY = "__liandan_report_every_s"
STEP_KEY = "__liandan_step"  # the epoch's number in this run of the trial (1, 2, ...)
EPOCHS_KEY = "__liandan_epochs"  # a report's earlier epochs, oldest first; the report is the last


def _device() -> tuple[str, str]:
    """(kind for the objective, name for the record): a GPU only when Ray gave one."""
    if ray.get_gpu_ids():
        import torch

        if torch.cuda.is_available():
            return "cuda", torch.cuda.get_device_name(0)
    return "cpu", "cpu"


def _clean(value: Any) -> Any:
    # Tune results must serialise; numpy/torch scalars become Python numbers.
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _epochs(objective: str, config: dict[str, Any], cpus: float
            ) -> tuple[Iterator[Any], TrialCheckpoint | None]:
    """The objective's epochs, and its checkpoint when it takes one (restored from Tune's
    on a retried trial). A plain function that raises does so here, at the call; one that
    returns a dict (instead of yielding one per epoch) is told so."""
    fn = resolve(objective)
    checkpoint = TrialCheckpoint.restored() if takes_checkpoint(fn) else None
    if "torch" in sys.modules:  # a pure-Python objective never pays for importing torch
        import torch

        torch.set_num_threads(max(1, int(cpus)))
    out = fn(config) if checkpoint is None else fn(config, checkpoint)
    if isinstance(out, Mapping):
        raise TypeError("the objective returned a dict; it must yield one dict of metrics "
                        "per epoch (use `yield`, not `return`)")
    return iter(out), checkpoint


def run_trial(config: dict[str, Any], objective: str, cpus: float) -> None:
    config = dict(config)
    report_every_s = float(config.pop(REPORT_EVERY_KEY, 0.0))
    kind, device_name = _device()
    os.environ["LIANDAN_DEVICE"] = kind
    node_id = ray.get_runtime_context().get_node_id()

    def fail(exc: BaseException) -> None:
        # Reported, not raised: Ray retries a trial whose *worker* died (FailureConfig),
        # but re-running a deterministic bug would only fail again, slower, and be told
        # as a lost worker instead of the objective's error.
        tune.report({ERROR_KEY: f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc(limit=8)[-4000:],
                     "node_id": node_id, "device": device_name})

    try:  # importing the objective and calling it are the objective's, as its epochs are
        epochs, checkpoint = _epochs(objective, config, cpus)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the objective's bug is the outcome
        fail(exc)
        return
    try:
        _report_epochs(epochs, checkpoint, report_every_s, node_id, device_name, fail)
    finally:
        if checkpoint is not None:
            checkpoint.drop_pending()


def _report_epochs(epochs: Iterator[Any], checkpoint: TrialCheckpoint | None,
                   report_every_s: float, node_id: str, device_name: str,
                   fail: Callable[[BaseException], None]) -> None:
    # A resumed trial numbers its epochs on from the saved one, and its compute time too.
    step = checkpoint.step if checkpoint else 0
    # Time spent inside the objective: what Ray and Optuna add is the rest.
    compute_s = checkpoint.compute_s if checkpoint else 0.0
    held: list[dict] = []  # epochs not yet reported
    reported_at = time.monotonic()

    def flush(last: bool = False) -> None:
        nonlocal held, reported_at
        if held:
            report = {**held[-1], EPOCHS_KEY: held[:-1]} if len(held) > 1 else held[-1]
            if checkpoint is None:
                tune.report(report)
            else:
                if last:  # the trial ends with this report: nothing will resume from it
                    checkpoint.drop_pending()
                checkpoint.report(report)
            held, reported_at = [], time.monotonic()

    while True:
        start = time.perf_counter()
        if checkpoint is not None:
            checkpoint.begin_epoch(step + 1, compute_s, start)
        try:
            metrics = next(epochs, None)
            if metrics is not None and not isinstance(metrics, Mapping):
                raise TypeError(f"the objective yielded {type(metrics).__name__}, not a dict "
                                "of metrics")
            report = {str(k): _clean(v) for k, v in (metrics or {}).items()}
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - see fail()
            flush(last=True)
            fail(exc)
            return
        compute_s += time.perf_counter() - start
        if metrics is None:
            flush(last=True)
            return
        report.update(node_id=node_id, device=device_name, compute_s=compute_s)
        if checkpoint is not None and checkpoint.step:  # the record says it was resumed
            report["resumed_from"] = checkpoint.step
        report[STEP_KEY] = step = step + 1
        held.append(report)
        if time.monotonic() - reported_at >= report_every_s:
            flush()
