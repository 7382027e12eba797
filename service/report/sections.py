"""The sections of a study report, each a list of markdown lines (plots written on the way).

`report.py` decides which sections a report has; this module knows how each looks. The
trials come in once, as `StudyData` (read with `get_trials(deepcopy=False)`), and every
section works on those lists: a 10,000-trial study is read from the database one time.
"""

from __future__ import annotations

import math
import random
import shutil
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from service.report import plots
from service.store.study_data import ArmData, StudyData

TOP_TRIALS = 10
IMPORTANCE_SAMPLE = 2_000  # importances on a seeded random sample beyond this many trials
SCHEDULE_PARAMS = ("decay", "warmup_epochs")
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


# ------------------------------------------------------------------ formatting
def cell(value: Any) -> str:
    """A value as a markdown table cell: short numbers, no pipes or line breaks."""
    if isinstance(value, bool) or value is None:
        text = "—" if value is None else str(value).lower()
    elif isinstance(value, float):
        text = f"{value:.4g}" if math.isfinite(value) else str(value)
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(cell(v) for v in value) + "]"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A markdown table of `rows`; the columns are every key, in the order first seen."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines


def plot_link(path: str | Path, out: Path, plot_dir: Path) -> str:
    """A plot's link relative to the report in `out`, whatever form the check gave it in.

    A check may name a plot relative to the report, relative to its plot folder, or
    absolute; a file outside the reports folder is copied in, so the report stays
    self-contained and no link leaves `out`.
    """
    p = Path(path)
    if not p.is_absolute():
        for base in (out, plot_dir):
            if (base / p).is_file():
                p = base / p
                break
        else:
            return p.as_posix()
    p = p.resolve()
    if not p.is_relative_to(out):
        copy = plot_dir / p.name
        shutil.copyfile(p, copy)
        p = copy
    return p.relative_to(out).as_posix()


def _sign(direction: str) -> int:
    return 1 if direction == "maximize" else -1


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _complete_tune(arm: ArmData) -> list[FrozenTrial]:
    return [t for t in arm.trials if t.user_attrs.get("role") != "seed"
            and t.state == TrialState.COMPLETE and _finite(t.value)]


def _best(arm: ArmData, direction: str) -> FrozenTrial | None:
    done = _complete_tune(arm)
    return max(done, key=lambda t: _sign(direction) * t.value) if done else None


def _searched(data: StudyData, trials: list[FrozenTrial]) -> list[str]:
    """The parameters worth a column: the spec's nuisance, else any that takes two values."""
    if data.spec.get("nuisance"):
        return list(data.spec["nuisance"])
    names: list[str] = []
    for t in trials:
        for k, dist in t.distributions.items():
            if k not in names and not dist.single():
                names.append(k)
    return names


def _params_text(trial: FrozenTrial, names: list[str]) -> str:
    return " ".join(f"{k}={cell(trial.params[k])}" for k in names if k in trial.params)


# ------------------------------------------------------------------ sections
def counts_lines(data: StudyData) -> list[str]:
    """Trial counts by state per arm, with diverged trials (of any state) counted apart."""
    rows = []
    for arm in data.arms:
        counts = Counter(t.state.name for t in arm.trials)
        row: dict[str, Any] = {"arm": arm.label or data.name}
        row.update({s.lower(): counts[s] for s in STATES if counts[s] or s != "WAITING"})
        row["diverged"] = sum(bool(t.user_attrs.get("diverged")) for t in arm.trials)
        row["seed re-runs"] = sum(t.user_attrs.get("role") == "seed" for t in arm.trials)
        row["total"] = len(arm.trials)
        rows.append(row)
    return ["## Trials", "", *table_lines(rows), "",
            "A diverged trial is counted under its state (COMPLETE or FAIL) and again under "
            "*diverged*; a pruned trial was stopped early by the scheduler.", ""]


def arm_table_lines(data: StudyData) -> list[str]:
    """Per arm: best tuning value and its parameters, and the seed re-runs' mean ± sd."""
    rows = []
    for arm in data.arms:
        best = _best(arm, data.direction)
        seeds = [t.value for t in arm.seeds() if _finite(t.value)]
        sd = statistics.stdev(seeds) if len(seeds) > 1 else None
        rows.append({
            "arm": arm.label or data.name,
            f"best tune {data.metric}": None if best is None else best.value,
            "best params": "" if best is None else _params_text(best, _searched(data, [best])),
            "seed mean": statistics.fmean(seeds) if seeds else None,
            "seed sd": sd, "n seeds": len(seeds),
            "tune trials": sum(t.user_attrs.get("role") != "seed" for t in arm.trials),
        })
    return table_lines(rows)


def _schedule_lines(labelled: dict[str, FrozenTrial], path: Path, rel: str) -> list[str]:
    schedules = {label: t.params for label, t in labelled.items()
                 if any(k in t.params for k in SCHEDULE_PARAMS)}
    if not schedules:
        return []
    plots.lr_schedule_plot(schedules, path, title="learning-rate schedule of the best trial")
    return ["## Learning-rate schedule", "",
            f"![learning-rate schedule]({rel}/{path.name})", ""]


def arms_lines(data: StudyData, plot_dir: Path, rel: str) -> list[str]:
    """A study with arms: the per-arm table, the isolation plot and learning curves."""
    lines = ["## Arms", "", *arm_table_lines(data), "",
             "Each arm had its own search over the nuisance parameters with the same budget; "
             "the seed re-runs repeat each arm's best configuration with new seeds.", ""]
    plots.isolation_plot(data.arms, plot_dir / "isolation.png", metric=data.metric,
                         direction=data.direction)
    plots.learning_curves({a.label or data.name: a.trials for a in data.arms},
                          plot_dir / "curves.png", metric=data.metric,
                          direction=data.direction, max_trials=TOP_TRIALS)
    lines += ["## Isolation plot", "", f"![isolation plot]({rel}/isolation.png)", "",
              "Best tuning value so far per arm against tuning trials spent: a gap that is "
              "still closing at the end of the budget is not yet a difference between arms.",
              "", "## Learning curves", "", f"![learning curves]({rel}/curves.png)", "",
              f"Per arm: the {TOP_TRIALS} best tuning trials (best bold) and the seed re-runs "
              "(dashed).", ""]
    best = {a.label: b for a in data.arms if (b := _best(a, data.direction)) is not None}
    return lines + _schedule_lines(best, plot_dir / "lr_schedule.png", rel)


def _importances(data: StudyData, trials: list[FrozenTrial]) -> tuple[dict[str, float], str]:
    """(importances, '') or ({}, why not). Computed on an in-memory copy of the tuning
    trials, so Optuna's evaluator does not read 10,000 trials from the database again."""
    names = _searched(data, trials)
    if len(trials) < 2:
        return {}, f"needs at least 2 complete tuning trials ({len(trials)} here)"
    varying = [k for k in names
               if len({repr(t.params.get(k)) for t in trials if k in t.params}) > 1]
    if not varying:
        return {}, "no searched parameter took more than one value"
    note = ""
    if len(trials) > IMPORTANCE_SAMPLE:
        trials = random.Random(0).sample(trials, IMPORTANCE_SAMPLE)
        note = f"on a seeded random sample of {IMPORTANCE_SAMPLE} complete tuning trials"
    # Only what the evaluator reads: the in-memory storage deep-copies every trial it adds.
    slim = [optuna.trial.create_trial(
        params={k: t.params[k] for k in varying if k in t.params},
        distributions={k: t.distributions[k] for k in varying if k in t.params},
        value=t.value) for t in trials]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory"
    try:
        study = optuna.create_study(direction=data.direction)
        study.add_trials(slim)
    finally:
        optuna.logging.set_verbosity(verbosity)
    try:
        return optuna.importance.get_param_importances(study, params=varying), note
    except (ValueError, RuntimeError) as exc:
        return {}, f"Optuna could not compute them: {exc}"


def search_lines(data: StudyData, plot_dir: Path, rel: str) -> list[str]:
    """A plain search (one arm, no scientific parameter): best trials, history, importances."""
    arm = data.arms[0]
    done = sorted(_complete_tune(arm), key=lambda t: -_sign(data.direction) * t.value)
    names = _searched(data, done[:TOP_TRIALS * 10])
    lines = [f"## Best trials (top {TOP_TRIALS} of {len(done)} complete)", ""]
    rows = [{"rank": i + 1, "trial": t.number, data.metric: t.value,
             **{k: t.params.get(k) for k in names}} for i, t in enumerate(done[:TOP_TRIALS])]
    lines += table_lines(rows) if rows else ["no complete trial yet"]
    plots.isolation_plot([arm], plot_dir / "history.png", metric=data.metric,
                         direction=data.direction, title=f"optimization history of {data.name}")
    plots.learning_curves({"": done[:TOP_TRIALS] + arm.seeds()}, plot_dir / "curves.png",
                          metric=data.metric, direction=data.direction,
                          title=f"the {TOP_TRIALS} best trials")
    lines += ["", "## Optimization history", "", f"![optimization history]({rel}/history.png)",
              "", "## Learning curves of the best trials", "",
              f"![learning curves]({rel}/curves.png)", "", "## Parameter importances", ""]
    importances, note = _importances(data, done)
    if importances:
        plots.importance_plot(importances, plot_dir / "importances.png")
        lines += table_lines([{"parameter": k, "importance": v}
                              for k, v in importances.items()])
        lines += ["", f"![parameter importances]({rel}/importances.png)", "",
                  "Optuna's default evaluator (PED-ANOVA)" + (f", {note}" if note else "")
                  + ".", ""]
    else:
        lines += [f"Not computed: {note}.", ""]
    if done:
        lines += _schedule_lines({"best": done[0]}, plot_dir / "lr_schedule.png", rel)
    return lines
