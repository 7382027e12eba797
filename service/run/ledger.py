"""What the driver knows of the trials it runs: the live trials and the outcome counts,
shared by the searchers, the per-arm schedulers and the progress display."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import optuna

from service.plan import Arm
from service.records import better
from service.store.storage import write_trial

__all__ = ["WRITE_EVERY_S", "DriverOnly", "Ledger", "TrialInfo"]

# Longest a reported epoch's metric waits before it is written to the storage.
WRITE_EVERY_S = 1.0


class DriverOnly:
    """Lives in the driver only. Tune pickles its config for `Tuner.restore`, but this
    object's state is the Optuna storage (a restarted run recovers from it), so it
    pickles to nothing instead of dragging database connections along."""

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


@dataclass
class TrialInfo:
    """What the driver knows of one running trial (shared by searcher, scheduler, progress)."""

    arm: Arm
    role: str  # "tune" or "seed"
    ot_trial: optuna.Trial
    epochs: int | None  # planned epochs, when the objective takes `epochs`
    last_step: int = 0  # number of the last epoch reported
    last_result: dict | None = None
    stopped_by_scheduler: bool = False
    unwritten: dict[int, float] = field(default_factory=dict)  # {epoch: metric} not yet stored
    written_at: float = field(default_factory=time.monotonic)

    def write_curve(self) -> None:
        """Store the epochs' metric values reported since the last write once
        `WRITE_EVERY_S` has passed (the rest goes with the trial's final record). A short
        epoch is thus not one database commit on the driver's path between a result and
        the trial's next epoch, and the dashboard's curves lag by at most that long."""
        if self.unwritten and time.monotonic() - self.written_at >= WRITE_EVERY_S:
            write_trial(self.ot_trial, curve=self.unwritten)
            self.unwritten = {}
            self.written_at = time.monotonic()


@dataclass
class Ledger:
    """Outcome counts and the live trials, read by the progress display."""

    direction: str
    trials: dict[str, TrialInfo] = field(default_factory=dict)
    outcomes: Counter = field(default_factory=Counter)  # complete, pruned, failed, diverged
    reports: Counter = field(default_factory=Counter)  # results the driver took, by trial role
    best: float | None = None
    cancelled: bool = False  # set when the run was asked to stop; unfinished trials FAIL

    def improve(self, value: float) -> None:
        if self.best is None or better(value, self.best, self.direction):
            self.best = value
