"""The live progress line of `liandan run`: done, running, pruned, failed, diverged, best."""

from __future__ import annotations

from ray.tune import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service.run.ledger import DriverOnly, Ledger


class ProgressCallback(DriverOnly, Callback):
    """A Tune callback that redraws one rich progress bar from the driver's ledger."""

    def __init__(self, ledger: Ledger, total: int, console: Console | None = None):
        self.ledger = ledger
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self.task = self.progress.add_task("trials", total=total, detail="")

    def __enter__(self) -> ProgressCallback:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._refresh()
        self.progress.stop()

    def _refresh(self) -> None:
        o, best = self.ledger.outcomes, self.ledger.best
        done = sum(o.values())
        detail = (f"running {len(self.ledger.trials)} · pruned {o['pruned']} · "
                  f"failed {o['failed']} · diverged {o['diverged']} · best "
                  + ("—" if best is None else f"{best:.4g}"))
        self.progress.update(self.task, completed=done, detail=detail)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._refresh()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._refresh()
