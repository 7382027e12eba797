"""The figures of rule checks: the decision plot every check draws, and shared axes.

The decision plot shows, for each part of a claim, the compared quantity of the fresh-seed
runs per arm: each run as a dot and the arm's mean with its 95% t-interval. Accuracies near
1 hide their differences on a 0-1 axis, so an accuracy is drawn as its error rate (1 -
accuracy) on a log axis; any other quantity is drawn on an axis zoomed to the arms' range. A
trend part puts the arms at their x (batch size, log2 axis) and draws the fitted line.
A figure that fails is a caveat, never a lost finding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats as st

from service.rulebook._base import Finding
from service.rulebook.decision import Part
from service.store.study_data import ArmData, StudyData

__all__ = ["batch_axis", "decision_plot", "mean_ci", "save_plot", "study_plots"]

DPI = 100


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean (a point when n < 2)."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    half = float(st.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def _rate_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """(rate, low, high): the Wilson 95% interval of a share of 0/1 outcomes."""
    k, n = int(sum(values)), len(values)
    ci = st.binomtest(k, n).proportion_ci(0.95, method="wilson")
    return k / n, float(ci.low), float(ci.high)


def _is_rate(part: Part) -> bool:
    return all(v in (0.0, 1.0) for vs in part.samples.values() for v in vs)


def _is_accuracy(part: Part) -> bool:
    vals = [v for vs in part.samples.values() for v in vs]
    return "acc" in part.metric and bool(vals) and all(0 <= v <= 1 for v in vals)


def batch_axis(ax: Any, batches: Any) -> None:
    """A log2 x axis labelled with the batch sizes themselves (no 2x10^1 ticks)."""
    sizes = sorted({int(b) for b in batches})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("batch size")


def _panel(ax: Any, part: Part) -> None:
    error_rate = _is_accuracy(part) and not _is_rate(part)
    interval = _rate_ci if _is_rate(part) else mean_ci

    def shown(v: float) -> float:  # error rate; floor keeps a perfect run on the log axis
        return max(1.0 - v, 1e-4) if error_rate else v

    labels = list(part.samples)
    trend = bool(part.xs) and all(label in part.xs for label in labels)
    for i, label in enumerate(labels):
        vals = part.samples[label]
        if not vals:
            continue
        x = part.xs[label] if trend else i
        jitter = np.linspace(-0.08, 0.08, len(vals)) * (x * 0.5 if trend else 1)
        ax.scatter(np.full(len(vals), x) + jitter, [shown(v) for v in vals], s=12,
                   alpha=0.5, color="tab:blue")
        m, lo, hi = interval(vals)
        # Error rate reverses the order: the high accuracy is the low error.
        y, y_lo, y_hi = shown(m), min(shown(lo), shown(hi)), max(shown(lo), shown(hi))
        ax.errorbar([x], [y], yerr=[[y - y_lo], [y_hi - y]], fmt="o", color="k", capsize=4,
                    ms=5, zorder=3)
    if trend:
        if part.line is not None and not error_rate:
            xs = np.geomspace(min(part.xs.values()), max(part.xs.values()), 20)
            ax.plot(xs, part.line[0] + part.line[1] * np.log2(xs), "k-", lw=1,
                    label=f"fit: slope {part.line[1]:.2f} per doubling")
            if part.baseline is not None:  # the slope the claim must beat, through the mean
                x0 = float(np.mean(np.log2(list(part.xs.values()))))
                y0 = part.line[0] + part.line[1] * x0
                ax.plot(xs, y0 + part.baseline * (np.log2(xs) - x0), "r--", lw=1,
                        label=f"baseline: slope {part.baseline:g}")
            ax.legend(fontsize=7)
        batch_axis(ax, list(part.xs.values()))
    else:
        ax.set_xticks(range(len(labels)), [label.replace(",", "\n") for label in labels],
                      fontsize=7)
        ax.set_xlim(-0.6, len(labels) - 0.4)
    if error_rate:
        ax.set_yscale("log")
        ax.set_ylabel(f"error rate (1 - {part.metric}), log")
    else:
        ax.set_ylabel(part.metric)
    title = part.claim  # drawn before finalize decides: the verdict is in the report
    ax.set_title(title if len(title) < 60 else title[:57] + "...", fontsize=8)
    ax.grid(alpha=0.3, which="both", axis="y")


def decision_plot(finding: Finding, plot_dir: Any) -> list[str]:
    """One panel per part of `finding` that has per-arm values; [] when none has."""
    parts = [p for p in finding.parts if any(p.samples.values())]
    if plot_dir is None or not parts:
        return []
    fig = Figure(figsize=(3.6 * len(parts) + 0.6, 3.8))
    for i, part in enumerate(parts, 1):
        _panel(fig.add_subplot(1, len(parts), i), part)
    fig.suptitle(f"{finding.rule}: fresh-seed runs per arm, mean and 95% CI (rates: Wilson)",
                 fontsize=9)
    return save_plot(fig, plot_dir, f"{finding.rule}-decision.png", finding)


def save_plot(fig: Figure, plot_dir: Any, file: str, finding: Finding) -> list[str]:
    """Write `fig` under plot_dir; [its path relative to the report], or [] and a caveat."""
    try:
        folder = Path(plot_dir)
        folder.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(folder / file, dpi=DPI)
        return [f"{folder.name}/{file}"]
    except Exception as exc:  # noqa: BLE001 - a plot must never cost the report its finding
        finding.caveats.append(f"plot {file} not written: {type(exc).__name__}: {exc}")
        return []


def study_plots(plot_dir: Any, rule: str, study: StudyData, arms: Sequence[ArmData],
                title: str, isolation: bool = True) -> list[str]:
    """Learning curves of the compared arms and (for tuned arms) the isolation plot of best
    value vs trials spent; paths relative to the report, as `Finding.plots` holds them."""
    if plot_dir is None:
        return []
    from service.report.plots import isolation_plot, learning_curves

    folder = Path(plot_dir)
    kw = {"metric": study.metric, "direction": study.direction}
    written = [learning_curves({a.label: a.trials for a in arms},
                               folder / f"{rule}-curves.png", title=title, **kw)]
    if isolation and study.spec.get("nuisance"):
        written.append(isolation_plot(list(arms), folder / f"{rule}-isolation.png",
                                      title=f"{rule}: best {study.metric} vs tuning trials spent",
                                      **kw))
    return [f"{folder.name}/{p.name}" for p in written]
