"""Reading the batch-size studies: what R1-R4 (throughput.py, batch.py) and R9 (scaling.py) share.

Arms are keyed by their batch size; a study's budget and device are described the same way
in every finding's protocol and caveats; an effect is an `Estimate` (a t-test with an optional
TOST margin) that `fill` copies into a `Finding`; plots put batch sizes on a log2 axis and
never cost a finding when they fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from optuna.trial import FrozenTrial
from scipy import stats as st

from service.rulebook._base import Finding
from service.store.study_data import ArmData, StudyData

# ---------------------------------------------------------------- reading arms


def batch_of(study: StudyData, arm: ArmData) -> int | None:
    """The arm's batch size: its scientific value, else the spec's fixed one, else a trial's."""
    for source in (arm.values, study.spec.get("fixed", {})):
        if isinstance(source.get("batch_size"), int):
            return int(source["batch_size"])
    for t in arm.trials:
        if "batch_size" in t.params:
            return int(t.params["batch_size"])
    return None


def arms_by_batch(study: StudyData) -> list[tuple[int, ArmData]]:
    """(batch size, arm) for every arm that has one, smallest batch first."""
    found = [(batch_of(study, arm), arm) for arm in study.arms]
    return sorted(((b, a) for b, a in found if b is not None), key=lambda pair: pair[0])


def diverged(t: FrozenTrial) -> bool:
    return t.user_attrs.get("diverged") is True or t.user_attrs.get("fail_reason") == "diverged"


def devices(studies: list[StudyData]) -> list[str]:
    return sorted({str(t.user_attrs["device"]) for s in studies for a in s.arms for t in a.trials
                   if t.user_attrs.get("device")})


def describe_budget(study: StudyData) -> str:
    """The study's tuning budget in one clause, e.g. for `Finding.protocol`."""
    spec = study.spec
    budget, search, fixed = spec.get("budget", {}), spec.get("search", {}), spec.get("fixed", {})
    parts = []
    for name, domain in spec.get("nuisance", {}).items():
        if isinstance(domain, list):
            nums = [v for v in domain if isinstance(v, int | float)]
            span = f" {min(nums):g}..{max(nums):g}" if len(nums) == len(domain) else ""
            parts.append(f"{name} over {len(domain)} values{span}")
        else:
            log = " log" if domain.get("log") else ""
            parts.append(f"{name}{log} in [{domain.get('low'):g}, {domain.get('high'):g}]")
    tuned = "; ".join(parts) or "nothing tuned"
    fixed_txt = ", ".join(f"{k}={v}" for k, v in fixed.items())
    return (f"{study.name}: {tuned} ({search.get('sampler', 'tpe')} sampler, "
            f"{budget.get('trials')} trials per arm, pruner {search.get('pruner', 'asha')}); "
            f"best config re-run with {budget.get('seeds', 0)} seeds; fixed {fixed_txt or '-'}")


def standard_caveats(studies: list[StudyData]) -> list[str]:
    found = devices(studies)
    objectives = sorted({str(s.spec.get("objective")) for s in studies})
    notes = [f"device: {', '.join(found) or 'unknown'}; objective: {', '.join(objectives)}"]
    if objectives and all(o.startswith("digits") for o in objectives):
        notes.append("digits has 1,437 training images (360 validation images: one image is "
                     "0.28 points of accuracy); effects on large data sets may differ")
    return notes


# ---------------------------------------------------------------- estimates


@dataclass(frozen=True)
class Estimate:
    """An effect with its 95% CI, two-sided p, and a TOST equivalence decision."""

    effect: float
    ci: tuple[float, float] | None
    p: float | None
    equivalent: bool
    method: str
    se: float = float("nan")


def t_estimate(effect: float, se: float, df: float, margin: float | None, name: str) -> Estimate:
    if se == 0 or not math.isfinite(se):
        equivalent = margin is not None and abs(effect) < margin
        return Estimate(effect, (effect, effect), 0.0 if effect != 0 else 1.0, equivalent,
                        f"{name}: no residual variance, compared exactly", 0.0)
    half = float(st.t.ppf(0.975, df)) * se
    p = float(min(1.0, 2 * st.t.sf(abs(effect / se), df)))
    equivalent = False
    if margin is not None:  # TOST: the 90% interval inside +-margin
        half90 = float(st.t.ppf(0.95, df)) * se
        equivalent = -margin < effect - half90 and effect + half90 < margin
    tost = f"; TOST margin +-{margin:g}" if margin is not None else ""
    return Estimate(effect, (effect - half, effect + half), p, equivalent,
                    f"{name}, t-test df={df:g}{tost}", se)


def fill(finding: Finding, est: Estimate) -> Finding:
    finding.effect, finding.ci, finding.p_value = est.effect, est.ci, est.p
    finding.equivalent, finding.method = est.equivalent, est.method
    return finding


def fmt_ci(ci: tuple[float, float] | None, scale: float = 1.0, digits: int = 2) -> str:
    if ci is None:
        return "[no CI]"
    return f"[{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def fmt_p(p: float | None) -> str:
    return "p n/a" if p is None else f"p={p:.2g}"


def batch_axis(ax: Any, batches: Any) -> None:
    """A log2 x axis labelled with the batch sizes themselves (no 2x10^1 ticks)."""
    sizes = sorted({int(b) for b in batches})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("batch size")


def save_plot(fig: Figure, plot_dir: Any, file: str, finding: Finding) -> None:
    """Write `fig` as PNG under plot_dir; a failed plot is a caveat, never a lost finding."""
    try:
        folder = Path(plot_dir)
        folder.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(folder / file, dpi=110)
        finding.plots.append(f"{folder.name}/{file}")
    except Exception as exc:  # noqa: BLE001 - a plot must never cost the report its finding
        finding.caveats.append(f"plot {file} not written: {type(exc).__name__}: {exc}")


def plot_file(rule: str, study: StudyData) -> str:
    """`r2_batch_arms-digits_cnn.png`; no second prefix when the study is named for the rule."""
    prefix = rule.lower() + "_"
    return f"{'' if study.name.startswith(prefix) else prefix}{study.name}.png"
