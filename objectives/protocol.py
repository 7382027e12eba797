"""The objective protocol: what an objective is and what it yields.

An objective is a plain function ``objective(params) -> Iterator[dict]`` that trains and yields
one dict of metrics per epoch. It knows nothing of Ray or Optuna, so it can be run, tested and
profiled on its own. The caller may stop iterating at any time (pruning); an objective must
therefore keep no state that needs closing after a ``yield``.

Checkpoints are opt-in: an objective whose second parameter is named ``checkpoint`` is called as
``objective(params, checkpoint)``. ``checkpoint.load()`` returns the dict it last saved (``None``
on a first attempt); ``checkpoint.save(state)``, called just before an epoch's metrics are
yielded, stores the state after that epoch (serialised at the call). A run retried after its
worker died is given the saved state and goes on from the epoch after it.

This module is torch-free on purpose: the service imports it to check specs and user objectives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeAlias

Objective: TypeAlias = Callable[..., Iterator[dict[str, Any]]]


class Checkpoint(Protocol):
    """What an objective that takes a ``checkpoint`` is given (the service's implementation
    stores it with Ray Tune; a test may keep it in memory)."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...

# The metrics every built-in yields each epoch, with their Python types. Rule checks read these
# names; user objectives may yield any subset plus extra metrics, which are kept and shown.
STANDARD_METRICS: dict[str, type] = {
    "epoch": int,
    "val_accuracy": float,
    "val_loss": float,
    "train_loss": float,
    "train_accuracy": float,
    "samples_per_s": float,
    "loss_oscillation": float,
    "diverged": bool,
    "lr": float,
    "epoch_time_s": float,
}


def metric_problems(metrics: dict[str, Any], required: bool = True) -> list[str]:
    """Describe every way ``metrics`` breaks the protocol; an empty list means it is fine.

    With ``required`` every standard metric must be present (the built-ins' promise); without,
    only the ones present are type-checked (what a user objective must satisfy).
    """
    problems = []
    for name, expected in STANDARD_METRICS.items():
        if name not in metrics:
            if required:
                problems.append(f"missing metric {name!r}")
            continue
        value = metrics[name]
        # bool is a subclass of int, so an int metric must be checked not to be a bool.
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{name}={value!r} is not an int")
        elif expected is float and (isinstance(value, bool) or not isinstance(value, float)):
            problems.append(f"{name}={value!r} is not a float")
        elif expected is bool and not isinstance(value, bool):
            problems.append(f"{name}={value!r} is not a bool")
    return problems
