"""Choosing each arm's configuration without tuning luck (../shared/RULES.md).

The single best tuning trial overstates its configuration: it won partly by its seed's
luck (the winner's curse). So once an arm's tuning has finished:

    top `candidates` tuning configurations ──► each re-run on the `candidate_seeds`
        (role `seed`, stage `select`)        ──► the best MEAN chosen (ties: mean val_loss)
    chosen configuration ──► re-run on fresh seeds (role `seed`, stage `evidence`)

and only the evidence runs measure the arm. Candidate and evidence seeds are disjoint
from each other and from the tuning seed (service.plan). Every candidate runs the same
seeds, so their means are compared on common seeds.

The arm's study records it in its user attribute `selection` (written when the
candidates are fixed, so a resume re-runs the same ones, and again once one is chosen):

    {"candidates_per_arm": 3, "seeds_per_candidate": 2, "chosen_by": "...",
     "chosen_trial": 7, "candidates": [{"trial": 7, "params": {...}, "tune_value": 0.91,
                                        "mean": 0.90, "n": 2, "val_loss": 0.31}, ...]}

A seed trial without `stage` (an older storage) is evidence.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial

from service.records import finite, sign
from service.store.study_data import ranked_tune

__all__ = ["CANDIDATE", "EVIDENCE", "SELECT", "STAGE", "Candidate", "candidates_from_record",
           "choose", "selection_record", "stage_of", "top_candidates"]

STAGE = "stage"  # user attribute of a role-`seed` trial: SELECT or EVIDENCE
CANDIDATE = "candidate"  # user attribute of a SELECT trial: the candidate's tuning trial
SELECT, EVIDENCE = "select", "evidence"


@dataclass
class Candidate:
    """One of an arm's top tuning configurations, and its re-runs' outcomes by seed."""

    trial: int  # number of the tuning trial that proposed it
    params: dict[str, Any]
    tune_value: float
    values: dict[int, float | None] = field(default_factory=dict)  # seed -> metric (None: failed)
    val_losses: dict[int, float] = field(default_factory=dict)

    @property
    def complete(self) -> list[float]:
        return [v for v in self.values.values() if v is not None]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.complete) if self.complete else None

    @property
    def val_loss(self) -> float | None:
        return statistics.fmean(self.val_losses.values()) if self.val_losses else None


def stage_of(trial: FrozenTrial) -> str | None:
    """SELECT or EVIDENCE for a seed re-run (EVIDENCE when unmarked: older storages)."""
    if trial.user_attrs.get("role") != "seed":
        return None
    return trial.user_attrs.get(STAGE, EVIDENCE)


def top_candidates(trials: list[FrozenTrial], k: int, direction: str) -> list[Candidate]:
    """The arm's `k` best COMPLETE tuning configurations, best first, each configuration
    once (a sampler may propose one twice; it is one candidate)."""
    out: list[Candidate] = []
    seen: list[dict[str, Any]] = []
    for t in ranked_tune(trials, direction):
        if t.params in seen:
            continue
        seen.append(t.params)
        out.append(Candidate(t.number, dict(t.params), float(t.value)))
        if len(out) == k:
            break
    return out


def choose(candidates: list[Candidate], direction: str, metric: str) -> tuple[Candidate, str]:
    """The candidate with the best mean over its re-runs, and how it was chosen.

    A candidate with a failed re-run (diverged to NaN, an error) ranks below every
    candidate whose re-runs all completed: an unstable configuration is not a choice.
    Equal means go to the lower mean validation loss, never to the order of the list;
    only candidates equal on both fall back to the better tuning value.
    """
    s = sign(direction)
    if len(candidates) == 1:
        return candidates[0], f"the only complete tuning configuration (its {metric})"
    measured = [c for c in candidates if c.mean is not None]
    if not measured:
        best = max(candidates, key=lambda c: (s * c.tune_value, -c.trial))
        return best, (f"best tuning {metric} (one seed): every candidate's re-runs failed")

    def key(c: Candidate) -> tuple:
        all_ok = len(c.complete) == len(c.values)
        loss = c.val_loss if c.val_loss is not None and metric != "val_loss" else 0.0
        return (all_ok, s * c.mean, -loss, s * c.tune_value, -c.trial)

    ranked = sorted(measured, key=key, reverse=True)
    best = ranked[0]
    n = len(best.values)
    how = f"best mean {metric} over {n} candidate seed{'s' * (n != 1)}"
    if len(ranked) > 1 and key(ranked[1])[:2] == key(best)[:2]:
        how += ("; tied means broken by mean val_loss" if key(ranked[1])[:3] != key(best)[:3]
                else "; tied means and val_loss broken by the tuning value")
    return best, how


def selection_record(candidates: list[Candidate], k: int, seeds: list[int],
                     chosen: Candidate | None, chosen_by: str | None) -> dict[str, Any]:
    """The arm study's `selection` user attribute (JSON)."""
    return {
        "candidates_per_arm": k, "seeds_per_candidate": len(seeds), "candidate_seeds": seeds,
        "chosen_by": chosen_by, "chosen_trial": None if chosen is None else chosen.trial,
        "candidates": [{
            "trial": c.trial, "params": c.params, "tune_value": c.tune_value,
            "mean": c.mean, "n": len(c.complete), "failed": len(c.values) - len(c.complete),
            "val_loss": c.val_loss,
        } for c in candidates],
    }


def candidates_from_record(record: dict[str, Any]) -> list[Candidate]:
    """The candidates a run fixed (the `selection` attribute), outcomes not included."""
    return [Candidate(int(c["trial"]), dict(c["params"]), float(c["tune_value"]))
            for c in record.get("candidates", []) if finite(c.get("tune_value"))]
