"""The Ray Tune searcher of one arm, which writes every trial into Optuna.

`ArmSearch` is Ray's `OptunaSearch` for one arm's study, with the gaps of Ray 2.60's
version closed: a trial the scheduler stopped early is told PRUNED (not COMPLETE), the
final epoch is stored as an intermediate value, and each trial gets the ◆ record
attributes (`arm`, `role`, `node_id`, `device`, the last value of every metric).

Its seed re-runs choose the arm's configuration without tuning luck, then re-run it with
new seeds (role `seed`, service.run.selection); `service.run.study_search` hands out trials
across arms.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS
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
from service.run.ledger import Ledger, TrialInfo
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
from service.run.trainable import EPOCHS_KEY, ERROR_KEY, STEP_KEY
from service.store.optuna_adapter import storage_of, trial_id_of
from service.store.storage import write_trial

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
