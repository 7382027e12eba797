"""Identical configurations shared by rule studies are trained once.

Several rule studies hold the same arm: batch 64, momentum 0.9, cosine decay, no warmup, no
weight decay, BatchNorm on, no augmentation is R11's cosine arm, R12's BatchNorm-on arm and
R13/R14's unregularized cell. When two arms would train exactly the same trials (same
objective, metric and direction, the same configuration with every fixed value, the same
nuisance grid searched whole with no pruning, so the same tuning trials with the same tuning
seed, the same candidates and so the same chosen configuration re-run on the same seeds),
the later study's arm is not trained again: the earlier arm's finished trials are copied
into it, each with the user attribute `shared_from` ("<study>#<trial number>"), so every
study stays complete for the dashboard and the trial-record contract. The runner then
resumes the copied arm and finds its budget spent (or runs only the seeds it lacks).

Only whole arms are shared: a grid sampler hands its first trials grid points by trial
number, so a study holding some of its grid already would repeat and skip points.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from service import records
from service.plan import Arm, Plan, grid_space, make_plan
from service.spec import StudySpec

__all__ = ["SHARED_FROM", "Sharer", "arm_key"]

SHARED_FROM = "shared_from"
# Budget fields that say where and how fast, not what: they do not change an arm's trials.
_NOT_WHAT = {"seeds", "max_concurrent"}


def arm_key(plan: Plan, arm: Arm) -> str | None:
    """What makes two arms' trials identical, as a string; None when an arm's trials depend
    on its study (a sampler that samples, a pruner that stops trials by the others')."""
    spec = plan.spec
    if spec.search.pruner != "none":
        return None
    if spec.nuisance:
        if spec.search.sampler != "grid":
            return None
        size = 1
        for values in grid_space(spec).values():
            size *= len(values)
        if plan.trials_per_arm < size:
            return None  # part of a grid: which part depends on the sampler's seed
    budget = {k: v for k, v in spec.budget.model_dump(mode="json").items() if k not in _NOT_WHAT}
    what = {"objective": spec.objective, "metric": spec.metric, "direction": spec.direction,
            "config": {**spec.fixed, **arm.values}, "tune_seed": plan.tune_seed,
            "nuisance": {k: v if isinstance(v, list) else v.model_dump(mode="json")
                         for k, v in spec.nuisance.items()}, "budget": budget}
    return json.dumps(what, sort_keys=True, default=str)


class Sharer:
    """Arms already trained in this storage, by `arm_key`, and the copying of them."""

    def __init__(self, storage: optuna.storages.BaseStorage):
        self.storage = storage
        self.sources: dict[str, str] = {}  # arm key -> the arm study that trained it
        self.copied = 0  # trials copied instead of trained, over this sharer's life

    def register(self, spec: StudySpec) -> None:
        """`spec` ran: its arms are sources for later studies (the first one to run wins)."""
        plan = make_plan(spec)
        for arm in plan.arms:
            key = arm_key(plan, arm)
            if key is not None:
                self.sources.setdefault(key, arm.study_name)

    def share(self, spec: StudySpec) -> int:
        """Copy into `spec`'s arms the trials of identical arms that ran before; returns how
        many trials were copied (each is one the runner does not train)."""
        plan = make_plan(spec)
        copied = 0
        for arm in plan.arms:
            source = self.sources.get(arm_key(plan, arm) or "")
            if source is not None and source != arm.study_name:
                copied += self._copy(plan, arm, source)
        self.copied += copied
        return copied

    def _copy(self, plan: Plan, arm: Arm, source: str) -> int:
        src = optuna.load_study(study_name=source, storage=self.storage)
        done = [t for t in src.get_trials(deepcopy=False) if _outcome(t)]
        tuned = [t for t in done if t.user_attrs.get("role") != "seed"]
        if len(tuned) < plan.trials_per_arm:
            return 0  # the source's tuning did not finish: nothing settled to share
        target = _target_study(self.storage, plan, arm)
        own = target.get_trials(deepcopy=False)
        if any(SHARED_FROM not in t.user_attrs for t in own):
            return 0  # the arm trained trials of its own: copies would double them
        have = {t.user_attrs[SHARED_FROM] for t in own}
        seeds = set(plan.seeds)
        n = 0
        for t in done:
            ref = f"{source}#{t.number}"
            if ref in have or (t.user_attrs.get("role") == "seed"
                               and t.user_attrs.get("stage") in (None, "evidence")
                               and int(t.params.get("seed", -1)) not in seeds):
                continue  # copied already, or an evidence seed this look does not plan
            target.add_trial(_copy_of(t, ref, plan.distributions(arm, t.params.get("seed"))))
            n += 1
        return n


def _outcome(t: FrozenTrial) -> bool:
    """A finished trial whose end is an outcome of its configuration (never an interrupted
    or cancelled one, whose budget a resume spends again)."""
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) \
        and t.user_attrs.get("fail_reason") not in records.UNFINISHED


def _target_study(storage: Any, plan: Plan, arm: Arm) -> optuna.Study:
    """The arm's study, made as the runner makes it (same user attributes) when missing."""
    spec = plan.spec
    study = optuna.create_study(study_name=arm.study_name, storage=storage,
                                direction=spec.direction, load_if_exists=True)
    study.set_user_attr("spec", spec.model_dump(mode="json"))
    study.set_user_attr("spec_name", spec.name)
    study.set_user_attr("arm", arm.label or None)
    study.set_user_attr("arm_values", arm.values)
    return study


def _copy_of(t: FrozenTrial, ref: str, space: dict[str, Any]) -> FrozenTrial:
    """`t` as a trial of the target arm: its parameters under the target's distributions (the
    same values; a target's fixed value is a one-choice distribution where the source's was
    scientific), its curve, state and records, and where it came from."""
    return optuna.trial.create_trial(
        state=t.state, value=t.value if t.state == TrialState.COMPLETE else None,
        params=dict(t.params), distributions={k: space.get(k, d)
                                              for k, d in t.distributions.items()},
        user_attrs={**t.user_attrs, SHARED_FROM: ref},
        intermediate_values=dict(t.intermediate_values))
