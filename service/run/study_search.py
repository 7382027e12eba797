"""One Ray Tune searcher over all arms of a study.

`StudySearch` hands out trials across arms so no arm can starve another: the arm with the
fewest started trials goes next; once an arm's tuning budget has finished, its configuration
is chosen without tuning luck and re-run with new seeds (`ArmSearch`, service.run.selection).
A trial whose worker was lost is handed out again, bounded; the storage is the checkpoint.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from service.plan import Plan
from service.records import CANCELLED, INTERRUPTED
from service.run.ledger import DriverOnly, Ledger
from service.run.search import REPORT_EVERY_S, WAIT, ArmSearch
from service.run.trainable import REPORT_EVERY_KEY
from service.store.storage import write_trial

__all__ = ["StudySearch"]


class StudySearch(DriverOnly, Searcher):
    """One Tune searcher over all arms: equal tuning budgets, then seed re-runs."""

    def __init__(self, plan: Plan, storage: optuna.storages.BaseStorage, ledger: Ledger):
        spec = plan.spec
        super().__init__(metric=spec.metric, mode="max" if spec.direction == "maximize"
                         else "min")
        self.plan, self.ledger = plan, ledger
        self.arms = [ArmSearch(plan, arm, storage, ledger) for arm in plan.arms]
        self.tune_started = {a.arm.index: a.tune_done for a in self.arms}
        self._owner: dict[str, ArmSearch] = {}
        self.lost = 0  # trials re-issued because their worker died

    @property
    def remaining(self) -> int:
        """Trials still to start (an arm's seed re-runs counted as planned, though an arm
        with nothing complete will have none)."""
        tune = sum(self.plan.trials_per_arm - n for n in self.tune_started.values())
        return tune + sum(a.reruns_left() for a in self.arms)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the plan fixed metric, mode and space already

    def suggest(self, trial_id: str) -> dict | None:
        plan = self.plan
        if self.ledger.cancelled:
            return Searcher.FINISHED
        # Tuning first, fewest-started arm next, so arms progress together.
        open_arms = [a for a in self.arms if self.tune_started[a.arm.index] < plan.trials_per_arm]
        if open_arms:
            arm = min(open_arms, key=lambda a: self.tune_started[a.arm.index])
            self.tune_started[arm.arm.index] += 1
            self._owner[trial_id] = arm
            return self._config(arm.ask(trial_id, "tune"), "tune")
        waiting = False
        for arm in self.arms:
            if arm.tune_done < plan.trials_per_arm:
                # This arm's tuning is still running: its candidates may change.
                waiting = waiting or arm.reruns_left() > 0
                continue
            rerun = arm.next_rerun()
            if rerun == WAIT:
                waiting = True  # its choice waits on candidate re-runs still running
            elif rerun is not None:
                self._owner[trial_id] = arm
                return self._config(arm.ask(trial_id, "seed", rerun), "seed")
        return None if waiting else Searcher.FINISHED

    def _config(self, params: dict, role: str) -> dict:
        """Tune's config of a trial: its parameters, and how often it reports. Only a tuning
        trial with a pruner can be stopped (`PerArmScheduler`), so only it must report every
        epoch; the others report their epochs together, at most once every `REPORT_EVERY_S`."""
        stoppable = role == "tune" and self.plan.spec.search.pruner != "none"
        return {**params, REPORT_EVERY_KEY: 0.0 if stoppable else REPORT_EVERY_S}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._owner:
            self._owner[trial_id].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        owner = self._owner.pop(trial_id, None)
        if owner is None:
            return
        info = self.ledger.trials.get(trial_id)
        key = owner._rerun_keys.get(trial_id)
        outcome = owner.on_trial_complete(trial_id, result, error)
        if outcome != "lost" or info is None:
            return
        if self.lost < self.plan.trials_per_arm * len(self.arms):
            # Hand the lost trial's slot out again (bounded: a worker that dies every time
            # must not loop forever): the same configuration, for a tuning trial, so what
            # the sampler proposed is measured and the grid loses no point.
            self.lost += 1
            if key is not None:
                owner.reruns_started.discard(key)
            else:
                owner.enqueue_rerun(info.ot_trial.number, info.ot_trial.params)
                self.tune_started[owner.arm.index] -= 1
        elif key is not None:
            # Not re-issued: a candidate's choice must not wait for it forever.
            owner.reruns_done[key] = (None, None)

    def failure(self) -> str | None:
        """Why the study measured nothing, when every one of its trials failed (read from
        the storage, so a resumed run of a failed study says it again): the first failed
        trial's error, or its `fail_reason`. None when any trial completed, or none ran."""
        failed: list[tuple[ArmSearch, optuna.trial.FrozenTrial]] = []
        for arm in self.arms:
            for t in arm._ot_study.get_trials(deepcopy=False):
                if t.state == TrialState.COMPLETE:
                    return None
                if t.state == TrialState.FAIL:
                    failed.append((arm, t))
        if not failed:
            return None
        arm, first = next(((a, t) for a, t in failed if "error" in t.user_attrs), failed[0])
        reason = first.user_attrs.get("fail_reason", "unknown")
        what = first.user_attrs.get("error") or f"fail_reason {reason}"
        return (f"every trial failed ({len(failed)} failed, none complete); first error, trial "
                f"#{first.number} of study {arm.arm.study_name!r}: {what}")

    def abandon_unfinished(self) -> int:
        """Fail every trial Tune never completed (stopped with the run, or never started),
        so nothing stays RUNNING in the storage; a resume spends their budget again."""
        reason = CANCELLED if self.ledger.cancelled else INTERRUPTED
        abandoned = 0
        for trial_id, info in list(self.ledger.trials.items()):
            owner = self._owner.pop(trial_id)
            if info.epochs is not None and info.last_step >= info.epochs:
                # It reported its last epoch; only Tune's completion event was lost.
                owner.on_trial_complete(trial_id, info.last_result)
                continue
            write_trial(info.ot_trial, {"fail_reason": reason}, curve=info.unwritten)
            owner._tell(info.ot_trial, TrialState.FAIL, None)
            self.ledger.outcomes["cancelled" if self.ledger.cancelled else "failed"] += 1
            del self.ledger.trials[trial_id]
            abandoned += 1
        return abandoned

    # The Optuna storage is the checkpoint: a restarted run recovers from it (`_recover`).
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass
