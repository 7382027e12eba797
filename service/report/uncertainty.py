"""How far a plain report's numbers can be read: accuracies on a finite split carry their
binomial interval, and parameter importances say what they rest on, carry a bootstrap
interval over trials, or are withheld.

- An accuracy of k/n on a split of n images is a binomial proportion: 360/360 is not "1" but
  [0.990, 1.000] (Clopper-Pearson, 95%). The split size is read from a trial attribute
  (`val_size`, `n_val`) when the objective yields one, else inferred from the values
  themselves: every accuracy on a split of n is a multiple of 1/n, so n is the least common
  denominator of the observed values (taken only from 3+ distinct values below 1, so that a
  few lucky fractions cannot fake it).
- Importances (Optuna's evaluator) from a handful of trials are noise: below
  MIN_IMPORTANCE_TRIALS trials they are withheld, and above it each carries a percentile
  bootstrap interval over trials. Where few trials completed but many were pruned, the
  trials' values at the latest epoch they all reached (a shared rung) stand in for final
  values: every trial is then compared at the same point of training.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState
from scipy import stats as st

from service.records import finite

__all__ = ["MIN_IMPORTANCE_TRIALS", "accuracy_interval", "bootstrap_importances",
           "importance_trials", "split_size"]

MIN_IMPORTANCE_TRIALS = 10  # fewer trials than this: importances are withheld
IMPORTANCE_BOOTSTRAP = 50  # resamples for the interval (each one re-runs the evaluator)
MAX_SPLIT = 100_000
TOLERANCE = 2e-7  # |value - k/n|: float32 rounding of an accuracy, with room
SIZE_ATTRS = ("val_size", "n_val")


def split_size(trials: Sequence[FrozenTrial], metric: str) -> tuple[int | None, str]:
    """(the size of the split `metric` was measured on, how it is known), or (None, why)."""
    for t in trials:
        for name in SIZE_ATTRS:
            if finite(n := t.user_attrs.get(name)) and n >= 1:
                return int(n), f"`{name}` reported by the objective"
    if "accuracy" not in metric:
        return None, "not an accuracy"
    values = {float(v) for t in trials for v in (t.user_attrs.get(metric), t.value)
              if finite(v) and 0 < v < 1}
    if len(values) < 3:
        return None, "too few distinct accuracies to infer the split size"
    n = 1
    for v in values:
        d = _denominator(v)
        n = MAX_SPLIT + 1 if d is None else n * d // math.gcd(n, d)
        if n > MAX_SPLIT:
            return None, "the accuracies are not fractions of one split"
    return n, f"inferred from {len(values)} distinct accuracies (all multiples of 1/{n})"


def _denominator(v: float) -> int | None:
    """The smallest d with v within float32 rounding of a multiple of 1/d (an accuracy
    computed in float32 is k/n to about 6e-8), or None below MAX_SPLIT."""
    d = np.arange(1, MAX_SPLIT + 1)
    hit = np.nonzero(np.abs(v * d - np.round(v * d)) <= TOLERANCE * d)[0]
    return int(d[hit[0]]) if len(hit) else None


def accuracy_interval(value: Any, n: int | None, level: float = 0.95) -> list[float] | None:
    """The exact (Clopper-Pearson) interval of an accuracy measured on `n` examples."""
    if n is None or not finite(value) or not 0 <= value <= 1:
        return None
    k = round(value * n)
    ci = st.binomtest(k, n).proportion_ci(level, method="exact")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def _rung_values(trials: Sequence[FrozenTrial]) -> tuple[list[tuple[FrozenTrial, float]], str]:
    """Complete trials with their values; with pruned ones, each trial's value at the latest
    epoch every one of them reached, when that gives more trials."""
    done = [(t, float(t.value)) for t in trials
            if t.state == TrialState.COMPLETE and finite(t.value)]
    reached = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               and t.intermediate_values]
    if len(reached) <= len(done):
        return done, f"{len(done)} complete tuning trials"
    rung = min(max(t.intermediate_values) for t in reached)
    at = [(t, float(t.intermediate_values[rung])) for t in reached
          if finite(t.intermediate_values.get(rung))]
    if len(at) <= len(done):
        return done, f"{len(done)} complete tuning trials"
    return at, (f"{len(at)} tuning trials ({len(done)} complete, the others pruned) compared "
                f"at epoch {rung}, the latest epoch all of them reached")


def importance_trials(trials: Sequence[FrozenTrial]) -> tuple[list[tuple[FrozenTrial, float]],
                                                             str]:
    """The (trial, value) pairs importances rest on, and a sentence saying which."""
    return _rung_values(trials)


def bootstrap_importances(pairs: list[tuple[FrozenTrial, float]],
                          evaluate: Callable[[list[tuple[FrozenTrial, float]]], dict[str, float]],
                          seed: int = 0) -> dict[str, list[float]]:
    """Percentile 95% intervals of each importance over trials resampled with replacement
    (`evaluate` computes importances from (trial, value) pairs); a resample the evaluator
    refuses is skipped."""
    rng = random.Random(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(IMPORTANCE_BOOTSTRAP):
        sample = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        try:
            got = evaluate(sample)
        except (ValueError, RuntimeError):
            continue
        for k, v in got.items():
            draws.setdefault(k, []).append(v)
    return {k: [round(float(q), 3) for q in np.quantile(v, [0.025, 0.975])]
            for k, v in draws.items() if len(v) >= IMPORTANCE_BOOTSTRAP // 2}
