"""The figures of a report, shared by the report generator and the rule checks.

Four kinds, each one function that writes one PNG and returns its path:

- `isolation_plot`: best metric so far per arm against trials spent. Every arm gets the
  same budget (the fair test of RULES.md), so the curves show whether an arm's lead is real
  or only a matter of how far each arm's search has come.
- `learning_curves`: the metric per epoch (Optuna's intermediate values), a panel per arm.
- `lr_schedule_plot`: the learning-rate multiplier per epoch, from the same
  `objectives.schedule.lr_factor` the training loop calls, so the picture is the schedule.
- `importance_plot`: a bar chart of Optuna's parameter importances.

Figures are built on `matplotlib.figure.Figure` directly, not pyplot: no global figure
registry to leak memory over thousands of calls, and no GUI backend to pick.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from objectives.params import DEFAULTS
from objectives.schedule import lr_factor
from service.records import better, finite
from service.store.study_data import ArmData, ranked_tune

__all__ = ["best_so_far", "importance_plot", "isolation_plot", "learning_curves",
           "lr_schedule_plot"]

DPI = 100
WIDTH = 7.0  # inches: 700 px wide, readable inline in a markdown viewer and the dashboard


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def best_so_far(values: Sequence[float | None], direction: str) -> list[float | None]:
    """The running best of `values` (None: a trial with no value, which spends budget only)."""
    best: float | None = None
    out: list[float | None] = []
    for v in values:
        if finite(v) and (best is None or better(v, best, direction)):
            best = v
        out.append(best)
    return out


def isolation_plot(arms: Sequence[ArmData], path: str | Path, *, metric: str,
                   direction: str, title: str = "") -> Path:
    """Best tuning value so far per arm vs tuning trials spent (pruned/failed ones count)."""
    fig = Figure(figsize=(WIDTH, 4.0))
    ax = fig.add_subplot()
    for arm in arms:
        tune = sorted((t for t in arm.trials if t.user_attrs.get("role") != "seed"),
                      key=lambda t: t.number)
        values = [t.value if t.state == TrialState.COMPLETE else None for t in tune]
        curve = best_so_far(values, direction)
        xs = [i + 1 for i, v in enumerate(curve) if v is not None]
        ys = [v for v in curve if v is not None]
        label = arm.label or "study"
        if xs:
            line, = ax.step(xs, ys, where="post", label=label)
            # Each completed trial faintly, so the spread behind the running best shows.
            done = [(i + 1, v) for i, v in enumerate(values) if finite(v)]
            ax.scatter([x for x, _ in done], [v for _, v in done], s=6, alpha=0.25,
                       color=line.get_color())
        else:
            ax.plot([], [], label=f"{label} (no complete trial)")
    ax.set_xlabel("tuning trials spent")
    ax.set_ylabel(f"best {metric} so far")
    ax.set_title(title or f"best {metric} vs trials spent ({direction})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def _curve(trial: FrozenTrial) -> tuple[list[int], list[float]]:
    steps = sorted(s for s, v in trial.intermediate_values.items() if finite(v))
    return steps, [trial.intermediate_values[s] for s in steps]


def learning_curves(trials_by_label: Mapping[str, Sequence[FrozenTrial]], path: str | Path, *,
                    metric: str, direction: str = "maximize", max_trials: int = 10,
                    title: str = "") -> Path:
    """The metric per epoch, one panel per label (arm).

    Per panel: the `max_trials` best tuning trials (thin; the best bold) and every seed
    re-run (dashed), since those are what a verdict reads. Trials without intermediate
    values are skipped.
    """
    labels = list(trials_by_label) or [""]
    cols = min(len(labels), 3)
    rows = math.ceil(len(labels) / cols)
    fig = Figure(figsize=(WIDTH, 3.2 * rows))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(len(labels))]
    for ax, label in zip(axes, labels, strict=True):
        trials = list(trials_by_label.get(label, ()))
        tune = ranked_tune(trials, direction)
        seeds = [t for t in trials if t.user_attrs.get("role") == "seed"]
        for rank, t in enumerate(tune[:max_trials]):
            xs, ys = _curve(t)
            ax.plot(xs, ys, lw=2.2 if rank == 0 else 0.8, alpha=1.0 if rank == 0 else 0.5,
                    label=f"best tune #{t.number}" if rank == 0 else None)
        for i, t in enumerate(seeds):
            xs, ys = _curve(t)
            ax.plot(xs, ys, ls="--", lw=1.0, color="black", alpha=0.6,
                    label="seed re-runs" if i == 0 else None)
        ax.set_title(label or title or "learning curves", fontsize="small")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    if title and labels != [""]:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def lr_schedule_plot(schedules: Mapping[str, Mapping[str, Any]], path: str | Path, *,
                     steps_per_epoch: int = 100, relative: bool = False,
                     title: str = "") -> Path:
    """The learning rate per epoch for each labelled parameter set.

    Each value holds the standard names `lr`, `epochs`, `warmup_epochs`, `decay` (missing
    ones take the built-ins' defaults). `steps_per_epoch` only sets the resolution: the
    schedule is defined in fractions of the run, so the curve's shape does not depend on it.
    With `relative=True` the multiplier of the peak is drawn instead of the rate.
    """
    fig = Figure(figsize=(WIDTH, 3.5))
    ax = fig.add_subplot()
    for label, params in schedules.items():
        epochs = int(params.get("epochs", DEFAULTS["epochs"]))
        warmup = float(params.get("warmup_epochs", DEFAULTS["warmup_epochs"]))
        decay = str(params.get("decay", DEFAULTS["decay"]))
        peak = 1.0 if relative else float(params.get("lr", DEFAULTS["lr"]))
        total = max(1, epochs * steps_per_epoch)
        xs = [s / steps_per_epoch for s in range(total)]
        ys = [peak * lr_factor(s, total, warmup * steps_per_epoch, decay) for s in range(total)]
        ax.plot(xs, ys, label=f"{label} ({decay}, warmup {warmup:g})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("lr / peak" if relative else "learning rate")
    ax.set_title(title or "learning-rate schedule")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def importance_plot(importances: Mapping[str, float], path: str | Path, *,
                    title: str = "") -> Path:
    """Horizontal bars, most important parameter on top."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(WIDTH, 1.0 + 0.4 * max(1, len(items))))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for y, (_, v) in enumerate(items):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize="small")
    ax.set_xlabel("importance (normalised)")
    ax.set_xlim(0, max([v for _, v in items] + [0.0]) * 1.15 or 1.0)
    ax.set_title(title or "parameter importances")
    fig.tight_layout()
    return _save(fig, path)
