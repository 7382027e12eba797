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

from service.records import diverged, finite
from service.report import plots
from service.report.uncertainty import (
    MIN_IMPORTANCE_TRIALS,
    accuracy_interval,
    bootstrap_importances,
    importance_trials,
    split_size,
)
from service.store.study_data import StudyData

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
    """Tuning-trial counts by state per arm, with diverged trials (of any state) and seed
    re-runs counted apart, so that "complete" here is what "Best trials" ranks."""
    rows = []
    for arm in data.arms:
        counts = Counter(t.state.name for t in arm.trials if t.user_attrs.get("role") != "seed")
        row: dict[str, Any] = {"arm": arm.label or data.name}
        row.update({s.lower(): counts[s] for s in STATES if counts[s] or s != "WAITING"})
        row["diverged"] = sum(map(diverged, arm.trials))
        row["seed re-runs"] = sum(t.user_attrs.get("role") == "seed" for t in arm.trials)
        row["total"] = len(arm.trials)
        rows.append(row)
    return ["## Trials", "", *table_lines(rows), "",
            "States count tuning trials; seed re-runs are counted apart. A diverged trial is "
            "counted under its state (COMPLETE or FAIL) and again under *diverged*; a pruned "
            "trial was stopped early by the scheduler.", ""]


def arm_table_lines(data: StudyData) -> list[str]:
    """Per arm: best tuning value and its parameters, and the seed re-runs' mean ± sd."""
    rows = []
    n, _ = split_size([t for arm in data.arms for t in arm.trials], data.metric)
    for arm in data.arms:
        best = data.best_tune(arm)
        chosen = arm.chosen(data.direction)
        seeds = [t.value for t in arm.seeds() if finite(t.value)]
        sd = statistics.stdev(seeds) if len(seeds) > 1 else None
        rows.append({
            "arm": arm.label or data.name,
            f"best tune {data.metric}": None if best is None else best.value,
            # The seed mean belongs to the configuration the seeds re-ran, which the
            # selection may have chosen over the single best tuning trial.
            "seeds re-ran": "" if chosen is None
            else _params_text(chosen, _searched(data, [chosen])),
            "seed mean": statistics.fmean(seeds) if seeds else None,
            "seed sd": sd, "n seeds": len(seeds),
            "tune trials": sum(t.user_attrs.get("role") != "seed" for t in arm.trials),
            **({f"best tune 95% interval (n={n})": None if best is None
                else accuracy_interval(best.value, n)} if n else {}),
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
             "the seed re-runs repeat each arm's chosen configuration with new seeds: the "
             "best mean of its top tuning configurations re-run on candidate seeds "
             "(`selection`), or its best tuning trial where nothing was selected.", ""]
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
    best = {a.label: b for a in data.arms if (b := data.best_tune(a)) is not None}
    return lines + _schedule_lines(best, plot_dir / "lr_schedule.png", rel)


def _evaluate(data: StudyData, varying: list[str],
              pairs: list[tuple[FrozenTrial, float]]) -> dict[str, float]:
    """Optuna's importances of (trial, value) pairs, on an in-memory copy with only what the
    evaluator reads (the in-memory storage deep-copies every trial it adds)."""
    slim = [optuna.trial.create_trial(
        params={k: t.params[k] for k in varying if k in t.params},
        distributions={k: t.distributions[k] for k in varying if k in t.params},
        value=v) for t, v in pairs]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory"
    try:
        study = optuna.create_study(direction=data.direction)
        study.add_trials(slim)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return optuna.importance.get_param_importances(study, params=varying)


def _importances(data: StudyData, trials: list[FrozenTrial]
                 ) -> tuple[list[dict[str, Any]], str]:
    """(rows of importance with its bootstrap interval, what they rest on) or ([], why not).
    Below MIN_IMPORTANCE_TRIALS trials they are withheld: a ranking of a handful of trials
    is mostly which ones happened to be lucky."""
    pairs, basis = importance_trials(trials)
    if len(pairs) < MIN_IMPORTANCE_TRIALS:
        return [], (f"withheld: they would rest on {basis}, fewer than the "
                    f"{MIN_IMPORTANCE_TRIALS} this report requires")
    names = _searched(data, [t for t, _ in pairs])
    varying = [k for k in names
               if len({repr(t.params.get(k)) for t, _ in pairs if k in t.params}) > 1]
    if not varying:
        return [], "no searched parameter took more than one value"
    if len(pairs) > IMPORTANCE_SAMPLE:
        pairs = random.Random(0).sample(pairs, IMPORTANCE_SAMPLE)
        basis += f", a seeded random sample of {IMPORTANCE_SAMPLE} of them"
    try:
        found = _evaluate(data, varying, pairs)
    except (ValueError, RuntimeError) as exc:
        return [], f"Optuna could not compute them: {exc}"
    intervals = bootstrap_importances(pairs, lambda p: _evaluate(data, varying, p))
    return [{"parameter": k, "importance": v, "95% bootstrap interval": intervals.get(k)}
            for k, v in found.items()], basis


def search_lines(data: StudyData, plot_dir: Path, rel: str) -> list[str]:
    """A plain search (one arm, no scientific parameter): best trials, history, importances."""
    arm = data.arms[0]
    done = arm.ranked_tune(data.direction)
    names = _searched(data, done[:TOP_TRIALS * 10])
    n, how = split_size(arm.trials, data.metric)
    shown = min(TOP_TRIALS, len(done))
    lines = [f"## Best trials (top {shown} of {len(done)} complete tuning trials)", ""]
    rows = [{"rank": i + 1, "trial": t.number, data.metric: t.value,
             **({"95% interval": accuracy_interval(t.value, n)} if n else {}),
             **{k: t.params.get(k) for k in names}} for i, t in enumerate(done[:TOP_TRIALS])]
    lines += table_lines(rows) if rows else ["no complete trial yet"]
    if rows and n:
        lines += ["", f"{data.metric} is measured on a split of {n} examples ({how}): each "
                  "value carries its exact binomial (Clopper-Pearson) 95% interval, so values "
                  "whose intervals overlap are not told apart by this split."]
    plots.isolation_plot([arm], plot_dir / "history.png", metric=data.metric,
                         direction=data.direction, title=f"optimization history of {data.name}")
    plots.learning_curves({"": done[:TOP_TRIALS] + arm.seeds()}, plot_dir / "curves.png",
                          metric=data.metric, direction=data.direction,
                          title=f"the {TOP_TRIALS} best trials")
    lines += ["", "## Optimization history", "", f"![optimization history]({rel}/history.png)",
              "", "## Learning curves of the best trials", "",
              f"![learning curves]({rel}/curves.png)", "", "## Parameter importances", ""]
    rows, note = _importances(data, arm.tune((TrialState.COMPLETE, TrialState.PRUNED)))
    if rows:
        plots.importance_plot({r["parameter"]: r["importance"] for r in rows},
                              plot_dir / "importances.png")
        lines += table_lines(rows)
        lines += ["", f"![parameter importances]({rel}/importances.png)", "",
                  f"Optuna's default evaluator (PED-ANOVA) on {note}; intervals: percentile "
                  "bootstrap over trials (50 resamples, seed 0). An importance whose interval "
                  "reaches 0 is not shown to matter.", ""]
    else:
        lines += [f"Not computed: {note}.", ""]
    if done:
        lines += _schedule_lines({"best": done[0]}, plot_dir / "lr_schedule.png", rel)
    return lines
