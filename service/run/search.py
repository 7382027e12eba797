"""Ray Tune searchers that write every trial into Optuna, arm by arm.

`ArmSearch` is Ray's `OptunaSearch` for one arm's study, with the gaps of Ray 2.60's
version closed: a trial the scheduler stopped early is told PRUNED (not COMPLETE), the
final epoch is stored as an intermediate value, and each trial gets the ◆ record
attributes (`arm`, `role`, `node_id`, `device`, the last value of every metric).

`StudySearch` hands out trials across arms so no arm can starve another: the arm with
the fewest started trials goes next; once an arm's tuning budget has finished, its
configuration is chosen without tuning luck and re-run with new seeds (role `seed`,
service.run.selection).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from service.plan import Arm, Plan
from service.records import (
    CANCELLED,
    DIVERGED,
    ERROR,
    INTERRUPTED,
    NO_METRIC,
    UNFINISHED,
    WORKER_LOST,
    finite,
)
from service.run.ledger import DriverOnly, Ledger, TrialInfo
from service.run.selection import (
    CANDIDATE,
    EVIDENCE,
    SELECT,
    STAGE,
    Candidate,
    candidates_from_record,
    choose,
    selection_record,
    stage_of,
    top_candidates,
)
from service.run.trainable import EPOCHS_KEY, ERROR_KEY, REPORT_EVERY_KEY, STEP_KEY
from service.store.optuna_adapter import storage_of, trial_id_of
from service.store.storage import write_trial
from service.store.study_data import best_tune_of

log = logging.getLogger(__name__)

# User attribute of a trial that re-runs an unfinished one: the number of that trial.
RERUN_OF = "rerun_of"

# A seed re-run, as the searcher tracks it: (stage, candidate's tuning trial or None, seed).
RerunKey = tuple[str, int | None, int]
WAIT = "wait"  # an arm's next re-run depends on re-runs still running

# Least time between two reports of a trial no scheduler may stop (see service.run.trainable).
REPORT_EVERY_S = 1.0

# Keys Ray adds to every result; everything else came from the objective or the trainable.
RAY_KEYS = frozenset(AUTO_RESULT_KEYS) | frozenset(DEBUG_METRICS) | {
    "done", "should_checkpoint", "__duplicate__", "experiment_tag", "trial_id",
} | {EPOCHS_KEY, STEP_KEY}  # and the trainable's own bookkeeping



def result_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The objective's own metrics (and node/device) out of a Ray result."""
    return {k: v for k, v in result.items() if k not in RAY_KEYS}


def _n_trials(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """How many trials the study already holds (0 when it does not exist yet)."""
    try:
        return storage.get_n_trials(storage.get_study_id_from_name(study_name))
    except KeyError:
        return 0


class ArmSearch(OptunaSearch):
    """OptunaSearch over one arm's Optuna study, recording the full trial contract."""

    def __init__(self, plan: Plan, arm: Arm, storage: optuna.storages.BaseStorage,
                 ledger: Ledger):
        self.plan, self.arm, self.ledger = plan, arm, ledger
        spec = plan.spec
        super().__init__(
            space=plan.distributions(arm), metric=spec.metric,
            mode="max" if spec.direction == "maximize" else "min",
            sampler=plan.sampler(arm, resumed_at=_n_trials(storage, arm.study_name)),
            study_name=arm.study_name, storage=storage,
        )
        study = self._ot_study
        study.set_user_attr("spec", spec.model_dump(mode="json"))
        study.set_user_attr("spec_name", spec.name)
        study.set_user_attr("arm", arm.label or None)
        study.set_user_attr("arm_values", arm.values)
        # Seed re-runs: the ones started in this run or finished before, and their outcomes
        # (metric or None when failed, val_loss), by RerunKey.
        self.reruns_done: dict[RerunKey, tuple[float | None, float | None]] = {}
        self.tune_done = self._recover()
        self.reruns_started: set[RerunKey] = set(self.reruns_done)
        self._rerun_keys: dict[str, RerunKey] = {}  # Tune trial id -> its RerunKey
        self.candidates: list[Candidate] | None = None  # fixed once the tuning is done
        self.chosen: Candidate | None = None
        record = study.user_attrs.get("selection") or {}
        if record.get("candidates"):
            self.candidates = candidates_from_record(record)
            self.chosen = next((c for c in self.candidates
                                if c.trial == record.get("chosen_trial")), None)
        # An older storage's seed re-runs (no `stage`) re-ran the best tuning trial: its
        # arm keeps that choice.
        self.legacy = self.candidates is None and any(
            key[0] == EVIDENCE for key in self.reruns_done)

    # -- resuming ---------------------------------------------------------------------
    def _recover(self) -> int:
        """Count what a previous run of this study finished; fail what it left running,
        and queue its unfinished tuning configurations to run again.

        A trial left RUNNING belonged to a driver that died: it is marked FAIL with
        `fail_reason=interrupted`. Every tuning trial that did not get to finish
        (interrupted, cancelled, worker lost) is run again with the same configuration,
        exactly once: its re-run is an enqueued trial carrying `rerun_of` = its number, so
        a second resume sees it has one. A finished trial is never run again. (A fresh
        sample instead would silently drop the interrupted configuration: the grid sampler
        counts a FAIL grid point as visited.)
        """
        tune_done = 0
        storage = storage_of(self._ot_study)
        trials = self._ot_study.get_trials(deepcopy=False)
        rerun = {t.user_attrs.get(RERUN_OF) for t in trials}
        queued = [t for t in trials if t.state == TrialState.WAITING and RERUN_OF in t.user_attrs]
        to_rerun: list[optuna.trial.FrozenTrial] = []
        waiting = {t.number for t in queued}
        for t in trials:
            if t.number in waiting:
                continue  # a re-run queued by an earlier resume, still to run
            reason = t.user_attrs.get("fail_reason")
            if t.state in (TrialState.RUNNING, TrialState.WAITING):
                storage.set_trial_user_attr(trial_id_of(t), "fail_reason", INTERRUPTED)
                storage.set_trial_state_values(trial_id_of(t), TrialState.FAIL)
                reason = INTERRUPTED
            if reason in UNFINISHED:
                # A trial killed between its ask and its record has no role yet: tuning. One
                # killed while its sampler was still choosing (some parameters missing)
                # had no configuration yet: its budget goes to a fresh proposal.
                if (t.user_attrs.get("role") != "seed" and t.number not in rerun
                        and set(_config_of(t, trials)) >= set(self._space)):
                    to_rerun.append(t)
                continue  # a seed re-run's seed is simply not done: it runs again
            if t.user_attrs.get("role") == "seed":
                if t.state.is_finished():  # an error is final; only unfinished seeds rerun
                    self._rerun_finished(_rerun_key(t), t.value, t.user_attrs)
            else:
                tune_done += 1
        # Re-runs are the tuning budget left: never more than it (a resume may lower the
        # budget), or a seed re-run's ask would take a queued tuning trial. One queued
        # beyond it is cancelled; an unqueued one keeps its claim for a larger budget.
        room = self.plan.trials_per_arm - tune_done
        for t in queued[max(room, 0):]:
            storage.set_trial_user_attr(trial_id_of(t), "fail_reason", CANCELLED)
            storage.set_trial_state_values(trial_id_of(t), TrialState.FAIL)
        for t in to_rerun[:max(room - len(queued), 0)]:
            self.enqueue_rerun(t.number, _config_of(t, trials))
        return tune_done

    def enqueue_rerun(self, number: int, params: dict[str, Any]) -> None:
        """Queue trial `number`'s configuration to run again (the next tuning ask takes it)."""
        attrs = {RERUN_OF: number, "role": "tune",
                 **({"arm": self.arm.label} if self.arm.label else {})}
        self._ot_study.enqueue_trial(dict(params), user_attrs=attrs, skip_if_exists=False)

    # -- seed re-runs: choosing the arm's configuration, then its evidence -------------
    def reruns_left(self) -> int:
        """Seed re-runs still to start (candidates counted as planned until fixed)."""
        plan = self.plan
        if not plan.seeds:
            return 0
        left = sum((EVIDENCE, None, s) not in self.reruns_started for s in plan.seeds)
        if self.chosen is None and plan.selects and not self.legacy:
            n = plan.candidates if self.candidates is None else len(self.candidates)
            if n > 1:
                started = sum(k[0] == SELECT for k in self.reruns_started)
                left += max(n * len(plan.candidate_seeds) - started, 0)
        return left

    def next_rerun(self) -> tuple[RerunKey, dict[str, Any]] | str | None:
        """The next seed re-run of this arm once its tuning is done: a candidate's re-run,
        then (all of those finished, one chosen) the chosen configuration's evidence.
        WAIT while the choice waits on running re-runs; None when nothing is left."""
        plan = self.plan
        if not plan.seeds:
            return None
        if self.chosen is None:
            if self.candidates is None:
                k = plan.candidates if plan.selects and not self.legacy else 1
                self.candidates = top_candidates(
                    self._ot_study.get_trials(deepcopy=False), k, plan.spec.direction)
                if not self.candidates:
                    return None  # nothing completed (all failed or pruned): nothing to re-run
                self._write_selection(None)
            if len(self.candidates) > 1:
                for c in self.candidates:
                    for seed in plan.candidate_seeds:
                        if (SELECT, c.trial, seed) not in self.reruns_started:
                            return (SELECT, c.trial, seed), c.params
                if any(k[0] == SELECT and k not in self.reruns_done
                       for k in self.reruns_started):
                    return WAIT
            for c in self.candidates:
                c.values, c.val_losses = {}, {}
                for (stage, trial, seed), (value, loss) in self.reruns_done.items():
                    if stage == SELECT and trial == c.trial:
                        c.values[seed] = value
                        if loss is not None:
                            c.val_losses[seed] = loss
            self.chosen, how = choose(self.candidates, plan.spec.direction, plan.spec.metric)
            self._write_selection(how)
        for seed in plan.seeds:
            if (EVIDENCE, None, seed) not in self.reruns_started:
                return (EVIDENCE, None, seed), self.chosen.params
        return None

    def _write_selection(self, chosen_by: str | None) -> None:
        plan = self.plan
        k = plan.candidates if plan.selects and not self.legacy else 1
        seeds = plan.candidate_seeds if k > 1 else []
        self._ot_study.set_user_attr("selection", selection_record(
            self.candidates or [], k, seeds, self.chosen, chosen_by))

    def _rerun_finished(self, key: RerunKey, value: float | None, attrs: dict) -> None:
        loss = attrs.get("val_loss")
        self.reruns_done[key] = (float(value) if finite(value) else None,
                                 float(loss) if finite(loss) else None)

    # -- asking -----------------------------------------------------------------------
    def ask(self, trial_id: str, role: str, rerun: tuple[RerunKey, dict] | None = None
            ) -> dict[str, Any]:
        study = self._ot_study
        attrs: dict[str, Any] = {"role": role}
        if rerun is not None:
            (stage, candidate, seed), config = rerun
            attrs[STAGE] = stage
            if candidate is not None:
                attrs[CANDIDATE] = candidate
            params = {**config, "seed": seed}
            # The role goes with the enqueued trial: a driver killed before the ask below
            # leaves a WAITING seed trial, which a resume must not take for a tuning one.
            study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
            ot_trial = study.ask(fixed_distributions=self.plan.distributions(self.arm, seed))
            self.reruns_started.add(rerun[0])
            self._rerun_keys[trial_id] = rerun[0]
        else:
            ot_trial = study.ask(fixed_distributions=self._space)
        write_trial(ot_trial, {**attrs, **({"arm": self.arm.label} if self.arm.label else {})})
        params = dict(ot_trial.params)
        self._ot_trials[trial_id] = ot_trial
        epochs = params.get("epochs", self.plan.max_epochs)
        self.ledger.trials[trial_id] = TrialInfo(self.arm, role, ot_trial, epochs)
        return params

    def best_tune_trial(self) -> optuna.trial.FrozenTrial | None:
        return best_tune_of(self._ot_study.get_trials(deepcopy=False,
                                                      states=(TrialState.COMPLETE,)),
                            self.plan.spec.direction)

    # -- results ------------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        info = self.ledger.trials[trial_id]
        info.last_result = result
        step = result.get(STEP_KEY)
        if step is None or step == info.last_step:
            return  # no epoch (the objective raised), or the last result again (at completion)
        # The trainable numbers the epochs; a coalesced report carries its earlier ones. A
        # trial Ray restarted (its worker died) numbers from 1 again and overwrites them.
        for epoch in [*result.get(EPOCHS_KEY, ()), result]:
            value = epoch.get(self.metric)
            if finite(value):
                info.unwritten[epoch[STEP_KEY]] = float(value)
        info.last_step = step
        self.ledger.reports[info.role] += 1
        info.write_curve()

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> str | None:
        """Record the trial's end; returns its outcome (None for a repeated completion)."""
        if trial_id not in self.ledger.trials:  # Ray may repeat a completion
            return None
        result = result or {}
        if result and not error:
            self.on_trial_result(trial_id, result)  # Ray 2.60 skips the final epoch's
        info = self.ledger.trials.pop(trial_id)
        ot_trial = info.ot_trial
        metrics = result_metrics(result)
        attrs = {key: _jsonable(val) for key, val in metrics.items()}
        value = metrics.get(self.metric)
        diverged = bool(metrics.get("diverged"))
        ended_early = info.epochs is not None and info.last_step < info.epochs
        if ERROR_KEY in metrics:
            state, outcome = TrialState.FAIL, "failed"
            attrs["fail_reason"] = ERROR
        elif error:
            # Not the objective's exception (that arrives as a result): Ray lost the worker
            # or its node, retries included. The budget is spent again.
            state, outcome = TrialState.FAIL, "lost"
            attrs["fail_reason"] = WORKER_LOST
        elif self.ledger.cancelled and (ended_early or info.epochs is None) and not diverged:
            state, outcome = TrialState.FAIL, "cancelled"
            attrs["fail_reason"] = CANCELLED
        elif info.stopped_by_scheduler and ended_early and not diverged:
            state, outcome = TrialState.PRUNED, "pruned"
        elif not finite(value):
            # A diverged trial whose metric is NaN (e.g. val_loss) can't hold a value.
            state, outcome = TrialState.FAIL, "diverged" if diverged else "failed"
            attrs["fail_reason"] = DIVERGED if diverged else NO_METRIC
        else:
            state, outcome = TrialState.COMPLETE, "diverged" if diverged else "complete"
        # One transaction for the whole record: attributes and the curve's last epochs.
        write_trial(ot_trial, attrs, curve=info.unwritten)
        self._tell(ot_trial, state, float(value) if state == TrialState.COMPLETE else None)
        self.ledger.outcomes[outcome] += 1
        if state == TrialState.COMPLETE:
            self.ledger.improve(float(value))
        key = self._rerun_keys.pop(trial_id, None)
        if info.role == "seed":
            if key is not None and outcome not in ("cancelled", "lost"):
                self._rerun_finished(key, value if state == TrialState.COMPLETE else None,
                                     attrs)
        elif outcome not in ("cancelled", "lost"):
            self.tune_done += 1
        return outcome

    def _tell(self, ot_trial: optuna.Trial, state: TrialState, value: float | None) -> None:
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except RuntimeError as exc:
            # GridSampler calls study.stop() when its grid is spent, which only works
            # inside study.optimize; the state is already stored by then.
            log.debug("tell: %s", exc)


def _config_of(trial: optuna.trial.FrozenTrial,
               trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """A trial's configuration: its parameters, or, for a queued re-run that never ran
    (cancelled before its ask), those of the trial it re-runs."""
    while not trial.params and RERUN_OF in trial.user_attrs:
        trial = trials[trial.user_attrs[RERUN_OF]]  # get_trials is in number order
    return dict(trial.params)


def _rerun_key(trial: optuna.trial.FrozenTrial) -> RerunKey:
    stage = stage_of(trial) or EVIDENCE
    candidate = trial.user_attrs.get(CANDIDATE) if stage == SELECT else None
    return stage, candidate, int(trial.params.get("seed", -1))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


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
