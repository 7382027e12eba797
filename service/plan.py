"""From a validated spec to what will run: arms, their search spaces, samplers and seeds.

The Tuning Playbook's fair test gives every arm (value of the scientific parameter)
the same budget and its *own* search over the nuisance parameters, so each arm is an
Optuna study of its own: a sampler that saw another arm's trials would pool learning
rates across arms, which is exactly what a rule like "scale LR with batch size" forbids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from service.spec import Range, StudySpec

TUNE_SEED = 0  # the seed every tuning trial uses unless the spec fixes one
SEED_BASE = 1000  # evidence re-runs use 1000, 1001, ...: never the tuning seed
# Candidate re-runs (choosing an arm's configuration) use 2000, 2001, ...: seeds that are
# neither the tuning seed nor the evidence's, so the evidence is measured on fresh seeds.
SELECT_SEED_BASE = 2000


@dataclass(frozen=True)
class Arm:
    """One value (or combination of values) of the scientific parameters."""

    index: int
    values: dict[str, Any]
    label: str  # "optimizer=adam"; "" when the study has no scientific parameter
    study_name: str  # the Optuna study that holds this arm's trials


@dataclass(frozen=True)
class Plan:
    spec: StudySpec
    arms: list[Arm]
    trials_per_arm: int
    seeds: list[int] = field(default_factory=list)  # evidence: re-runs of each arm's choice
    tune_seed: int = TUNE_SEED
    max_epochs: int | None = None  # longest trial in epochs, when the objective says
    # Choosing an arm's configuration: its top `candidates` tuning configurations, each
    # re-run on `candidate_seeds`; the best mean is chosen (service.run.selection).
    candidates: int = 1
    candidate_seeds: list[int] = field(default_factory=list)

    @property
    def selects(self) -> bool:
        """Whether arms choose among candidates (else: the single best tuning trial)."""
        return bool(self.seeds) and self.candidates > 1 and bool(self.candidate_seeds)

    @property
    def total_trials(self) -> int:
        """Trials of the plan: at most, since an arm with fewer complete tuning trials
        than `candidates` re-runs fewer."""
        select = self.candidates * len(self.candidate_seeds) if self.selects else 0
        return len(self.arms) * (self.trials_per_arm + select + len(self.seeds))

    @property
    def study_names(self) -> list[str]:
        return [arm.study_name for arm in self.arms]

    def distributions(self, arm: Arm, seed: int | None = None) -> dict[str, BaseDistribution]:
        """Every parameter of a trial of `arm` as an Optuna distribution.

        Arm values and fixed values become one-choice distributions, so every trial
        records every parameter under its name (the dashboard and the rule checks read
        them) while the sampler only searches the nuisance parameters.
        """
        spec = self.spec
        space: dict[str, BaseDistribution] = {}
        for name, value in arm.values.items():
            space[name] = CategoricalDistribution([value])
        for name, domain in spec.nuisance.items():
            space[name] = nuisance_distribution(name, domain)
        for name, value in spec.fixed.items():
            space[name] = CategoricalDistribution([value])
        if "seed" not in spec.nuisance and "seed" not in arm.values:
            s = self.tune_seed if seed is None else seed
            space["seed"] = IntDistribution(s, s)
        return space

    def sampler(self, arm: Arm, resumed_at: int = 0) -> optuna.samplers.BaseSampler:
        """A fresh sampler for one arm (seeded per arm when the spec gives a seed).

        `resumed_at` is the number of trials the arm's study already holds. A seeded
        sampler started again with its first seed would replay its first proposals (a
        random sampler, TPE's and GP's startup trials), so a resumed study gets a seed
        drawn from (seed, arm, resumed_at): reproducible for the same history, never the
        sequence that already ran. (The grid sampler skips the points already run by
        itself; the re-runs of interrupted ones are enqueued: service.run.search.)
        """
        search = self.spec.search
        if search.sampler == "grid":
            # Not re-seeded: the seed shuffles the grid's point numbering, which the grid
            # sampler reads back from the stored trials to skip the points already run.
            resumed_at = 0
        seed = None if search.seed is None else sampler_seed(search.seed, arm.index, resumed_at)
        if search.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if search.sampler == "grid":
            return optuna.samplers.GridSampler(grid_space(self.spec), seed=seed)
        if search.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if search.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        # constant_liar keeps concurrent TPE trials from all proposing the same point.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)


def sampler_seed(seed: int, arm_index: int, resumed_at: int = 0) -> int:
    """The seed of an arm's sampler: `seed + arm` on a fresh study (as it always was), a
    seed mixed from all three once the study has trials."""
    if resumed_at == 0:
        return seed + arm_index
    return int(np.random.SeedSequence([seed % 2**32, arm_index, resumed_at]).generate_state(1)[0])


def nuisance_distribution(name: str, domain: Range | list[Any]) -> BaseDistribution:
    if isinstance(domain, list):
        return CategoricalDistribution(domain)
    if domain.kind == "int":
        step = int(domain.step) if domain.step else 1
        return IntDistribution(int(domain.low), int(domain.high), log=domain.log, step=step)
    return FloatDistribution(
        float(domain.low), float(domain.high), log=domain.log,
        step=None if domain.step is None else float(domain.step),
    )


def grid_space(spec: StudySpec) -> dict[str, list[Any]]:
    """The grid of a `grid` study: lists as they are, stepped ranges enumerated."""
    grid: dict[str, list[Any]] = {}
    for name, domain in spec.nuisance.items():
        if isinstance(domain, list):
            grid[name] = list(domain)
        else:
            assert domain.step, "spec validation requires a step for grid ranges"
            n = int(round((domain.high - domain.low) / domain.step)) + 1
            values = [domain.low + i * domain.step for i in range(n)]
            grid[name] = [int(v) for v in values] if domain.kind == "int" else [
                float(np.round(v, 12)) for v in values
            ]
    return grid


def arm_study_name(spec_name: str, label: str) -> str:
    return f"{spec_name}[{label}]" if label else spec_name


def max_epochs(spec: StudySpec) -> int | None:
    """The most epochs any trial may run: what a pruner's rung ladder is scaled to."""
    candidates: list[Any] = []
    if "epochs" in spec.fixed:
        candidates.append(spec.fixed["epochs"])
    candidates += spec.scientific.get("epochs", [])
    domain = spec.nuisance.get("epochs")
    if isinstance(domain, list):
        candidates += domain
    elif domain is not None:
        candidates.append(domain.high)
    if not candidates:
        from objectives import BUILTINS, DEFAULTS

        return int(DEFAULTS["epochs"]) if spec.objective in BUILTINS else None
    return int(max(candidates))


def make_plan(spec: StudySpec) -> Plan:
    arms = [
        Arm(i, values, spec.arm_label(values), arm_study_name(spec.name, spec.arm_label(values)))
        for i, values in enumerate(spec.arms())
    ]
    trials = spec.budget.trials
    if spec.search.sampler == "grid":
        # Optuna's grid sampler repeats points once the grid is exhausted: cap the budget.
        size = int(np.prod([len(v) for v in grid_space(spec).values()])) if spec.nuisance else 1
        trials = min(trials, size)
    tune_seed = int(spec.fixed.get("seed", TUNE_SEED))
    seeds = [SEED_BASE + i for i in range(spec.budget.seeds)]
    budget = spec.budget
    candidates, candidate_seeds = 1, []
    if seeds and budget.candidates > 1 and budget.candidate_seeds > 0:
        candidates = min(budget.candidates, trials)
        candidate_seeds = [SELECT_SEED_BASE + i for i in range(budget.candidate_seeds)]
    return Plan(spec, arms, trials, seeds, tune_seed, max_epochs(spec), candidates,
                candidate_seeds)


