"""The trial-record vocabulary shared by the runner (which writes it) and the read-outs
(status, API, reports, rule checks), and the rules that read it: finite values, a
direction's better-than, which trials did not get to finish, which diverged.

Each rule is written here once; a module that needs one imports it. Light on purpose:
importing it pulls in neither Ray, torch nor Optuna (a trial is anything with
`user_attrs`, such as Optuna's `FrozenTrial`).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "CANCELLED", "DIRECTIONS", "DIVERGED", "ERROR", "INTERRUPTED", "NO_METRIC", "ROLES",
    "UNFINISHED", "WORKER_LOST", "better", "diverged", "finite", "number", "outcome", "sign",
    "unfinished",
]

ROLES = ("tune", "seed")  # user attribute `role`

# user attribute `fail_reason` of a FAIL trial
ERROR = "error"  # the objective raised; `error` and `traceback` attributes say what
DIVERGED = "diverged"  # the loss blew up and the metric itself is NaN
NO_METRIC = "no metric"  # the objective never yielded the study's metric
INTERRUPTED = "interrupted"  # the driver died while the trial ran
CANCELLED = "cancelled"  # the study was cancelled while the trial ran
WORKER_LOST = "worker_lost"  # its worker or node died more often than Ray retries

# Trials that did not get to finish: their budget is spent again (now, or on resume).
UNFINISHED = (INTERRUPTED, CANCELLED, WORKER_LOST)

DIRECTIONS = ("maximize", "minimize")  # the spec's `direction`


# ------------------------------------------------------------------ values
def finite(value: Any) -> bool:
    """A real, finite int or float. A bool is not: a `diverged=True` attribute is a flag,
    not a measurement of 1.0, and averaging it with accuracies would be nonsense."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any) -> float | None:
    """`value` as a float when it is `finite`, else None (missing, NaN, inf, a bool, text)."""
    return float(value) if finite(value) else None


def sign(direction: str) -> int:
    """+1 to maximize, -1 to minimize: `sign * value` is larger for a better value.

    Anything else is refused rather than read as minimize: the spec admits only these two,
    so another value is a bug upstream (a silent minimize would rank every trial backwards).
    """
    if direction == "maximize":
        return 1
    if direction == "minimize":
        return -1
    raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")


def better(a: float, b: float, direction: str) -> bool:
    """Whether `a` is strictly better than `b` in `direction` (a tie is not better, so the
    first of equal values, the earlier trial, stays the best)."""
    return sign(direction) * a > sign(direction) * b


# ------------------------------------------------------------------ trials
def unfinished(trial: Any) -> bool:
    """A trial that did not get to finish (driver died, study cancelled, worker lost): its
    budget is spent again, so a reader drops it, neither an outcome nor spent budget."""
    return trial.user_attrs.get("fail_reason") in UNFINISHED


def diverged(trial: Any) -> bool:
    """A diverged trial: COMPLETE with `diverged=True`, or FAIL with `fail_reason=diverged`
    when its metric itself was NaN. Both are outcomes of the configuration."""
    return trial.user_attrs.get("diverged") is True or \
        trial.user_attrs.get("fail_reason") == DIVERGED


def outcome(trial: Any) -> bool:
    """A trial whose end says something about its configuration: not `unfinished` (its
    budget is spent again), not an error of the objective nor a missing metric (a bug, not
    training). A diverged trial is an outcome; the trial's state is the caller's to choose."""
    return not unfinished(trial) and trial.user_attrs.get("fail_reason") not in (ERROR, NO_METRIC)
