"""Early stopping per arm: Ray Tune's ASHA, median and hyperband, one instance per arm.

A scheduler that compared trials across arms would prune plain SGD because momentum is
ahead, and the slower arm would never get its fair tuning budget. Each arm gets its own
scheduler; seed re-runs are never stopped (they measure the arm, they don't search it).
"""

from __future__ import annotations

import math

from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from service.plan import Plan
from service.run.ledger import DriverOnly, Ledger

TIME_ATTR = "training_iteration"  # one iteration = one epoch of the objective
UNBOUNDED_EPOCHS = 10**6  # for objectives that don't say how long they train


def make_arm_scheduler(pruner: str, metric: str, mode: str,
                       max_t: int) -> TrialScheduler | None:
    if pruner == "asha":
        return AsyncHyperBandScheduler(time_attr=TIME_ATTR, metric=metric, mode=mode,
                                       max_t=max_t, grace_period=1, reduction_factor=3,
                                       brackets=1)
    if pruner == "hyperband":
        # The asynchronous form: synchronous HyperBand pauses trials, which fights reuse.
        return AsyncHyperBandScheduler(time_attr=TIME_ATTR, metric=metric, mode=mode,
                                       max_t=max_t, grace_period=1, reduction_factor=3,
                                       brackets=3)
    if pruner == "median":
        return MedianStoppingRule(time_attr=TIME_ATTR, metric=metric, mode=mode,
                                  grace_period=1, min_samples_required=3)
    return None


class PerArmScheduler(DriverOnly, FIFOScheduler):
    """FIFO order of starts; stop decisions delegated to the trial's own arm scheduler."""

    def __init__(self, plan: Plan, ledger: Ledger):
        super().__init__()
        spec = plan.spec
        mode = "max" if spec.direction == "maximize" else "min"
        max_t = plan.max_epochs or UNBOUNDED_EPOCHS
        self.ledger, self.metric_name = ledger, spec.metric
        self.by_arm = {
            arm.index: make_arm_scheduler(spec.search.pruner, spec.metric, mode, max_t)
            for arm in plan.arms
        }
        self._arm_of: dict[str, TrialScheduler] = {}

    def _delegate(self, trial: Trial) -> TrialScheduler | None:
        if trial.trial_id not in self._arm_of:
            info = self.ledger.trials.get(trial.trial_id)
            if info is None or info.role != "tune":
                return None
            sched = self.by_arm[info.arm.index]
            if sched is None:
                return None
            self._arm_of[trial.trial_id] = sched
        return self._arm_of[trial.trial_id]

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        sched = self._delegate(trial)
        if sched is not None:
            sched.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        sched = self._arm_of.get(trial.trial_id)
        value = result.get(self.metric_name)
        # NaN (a diverging trial) would poison the rung cutoffs of the arm's other trials.
        if sched is None or not isinstance(value, int | float) or not math.isfinite(value):
            return TrialScheduler.CONTINUE
        decision = sched.on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            info = self.ledger.trials.get(trial.trial_id)
            if info is not None:
                info.stopped_by_scheduler = True
        return decision

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        sched = self._arm_of.pop(trial.trial_id, None)
        if sched is not None:
            sched.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        sched = self._arm_of.pop(trial.trial_id, None)
        if sched is not None:
            sched.on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        sched = self._arm_of.pop(trial.trial_id, None)
        if sched is not None:
            sched.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "PerArmScheduler(" + ", ".join(
            type(s).__name__ for s in self.by_arm.values() if s is not None) + ")"
