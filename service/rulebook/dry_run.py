"""`liandan rulebook --dry-run`: the studies a rulebook would run, priced, nothing started.

Each rule's specs as this objective's studies (the same `spec_for` the run uses), their plans
counted by `service.run.cost`. A budget with several looks (medium) is priced at its first
look and at its last, where every study still undecided has `factor_K x` the evidence seeds:
the run stops earlier when the rules are decided, so the last look is the most it can ask.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from service.plan import make_plan
from service.rulebook import registry
from service.rulebook.execute import spec_for
from service.rulebook.run import BUDGETS, SPECS_DIR, _plan, _selected, honoured_params
from service.rulebook.staging import STAGES
from service.run.cost import Cluster, StudyCost, estimate, study_cost
from service.store.epoch_times import EpochTime, epoch_times

__all__ = ["RulebookPlan", "plan_rulebook"]


@dataclass
class RulebookPlan:
    """What `liandan rulebook` would run: per look priced, the rules it cannot test."""

    objective: str
    budget: str
    looks: dict[str, list[StudyCost]] = field(default_factory=dict)  # "first look" -> costs
    not_tested: dict[str, str] = field(default_factory=dict)  # rule -> why
    notes: list[str] = field(default_factory=list)


def plan_rulebook(objective: str, budget: str, rules: Iterable[str] | None,
                  storage_url: str, cluster: Cluster,
                  specs_dir: str | Path | None = None) -> RulebookPlan:
    """Price the rulebook's studies; ValueError for an unknown budget or rule, or an objective
    that does not load (the run would test nothing)."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}: use {' or '.join(BUDGETS)}")
    selected = _selected(rules)
    checks = registry.all_checks()
    try:
        honoured, note = honoured_params(objective)
    except Exception as exc:  # noqa: BLE001 - said plainly, as the run's report would
        raise ValueError(f"the objective {objective!r} did not load: "
                         f"{type(exc).__name__}: {exc}") from None
    fixed, stems = _plan(selected, checks, objective, honoured)
    out = RulebookPlan(objective, budget, notes=[note] if note else [])
    out.not_tested = {rule: f.evidence for rule, f in fixed.items()}
    stages = STAGES[budget]
    looks = {"": stages.factors[0]} if stages.looks == 1 else {
        "first look": stages.factors[0], "last look (the most it can ask)": stages.factors[-1]}
    folder = Path(specs_dir or SPECS_DIR) / budget
    times: dict[str, EpochTime] = epoch_times(storage_url, objective)
    for label, factor in looks.items():
        costs = []
        for stem in stems:
            readers = [c for c in checks.values() if stem in c.specs]
            note_ = None
            try:
                spec = spec_for(folder / f"{stem}.yaml", objective, factor, readers, {})
            except FileNotFoundError as exc:
                raise ValueError(f"no spec {exc.filename}") from None
            except ValueError as exc:  # a check places its arms from an earlier study's result
                spec = spec_for(folder / f"{stem}.yaml", objective, factor, [], {})
                note_ = f"counted as written: {exc}"
            cost = estimate(study_cost(make_plan(spec), cluster), storage_url, cluster, times)
            if note_:
                cost.notes.insert(0, note_)
            costs.append(cost)
        out.looks[label] = costs
    return out
