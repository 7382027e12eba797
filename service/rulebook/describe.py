"""The words of findings: protocols read back from a study's own spec, caveats, numbers.

Shared by every family: `protocol`/`caveats` for two-arm comparisons, `describe_budget`/
`standard_caveats` for the batch-size studies, and the number formats of evidence sentences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from service.store.study_data import StudyData, devices

if TYPE_CHECKING:
    from service.rulebook.compare import ArmRuns

# What a reader needs to know about an objective's data to weigh a small effect.
OBJECTIVE_NOTES = {
    "digits_cnn": "digits has 1437 training and 360 validation images: one validation image "
                  "is 0.28 pp, and accuracies near 99% leave little room for any effect",
}


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def pct(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"


def pp(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:+.2f} pp"


def _domain(value: Any) -> str:
    if isinstance(value, dict):
        scale = "log-uniform" if value.get("log") else "uniform"
        return f"{scale} [{value.get('low'):g}, {value.get('high'):g}]"
    return "{" + ", ".join(map(str, value)) + "}"


def protocol(study: StudyData, compared: str) -> str:
    """The fair protocol as run, read back from the study's own spec."""
    spec = study.spec
    budget, search = spec.get("budget", {}), spec.get("search", {})
    arms = "; ".join(f"{k} in {_domain(v)}" for k, v in spec.get("scientific", {}).items())
    nuisance = spec.get("nuisance", {})
    fixed = ", ".join(f"{k}={v}" for k, v in spec.get("fixed", {}).items())
    if nuisance:
        tuned = ", ".join(f"{k} {_domain(v)}" for k, v in nuisance.items())
        how = (f"tuned per arm with {budget.get('trials')} trials each ({search.get('sampler')} "
               f"sampler, pruner {search.get('pruner')}): {tuned}; each arm's best re-run with "
               f"{budget.get('seeds')} new seeds")
    else:
        how = (f"nothing tuned: each arm is one fixed configuration run with "
               f"{1 + int(budget.get('seeds', 0))} seeds")
    return (f"Study {study.name} ({spec.get('objective')}): arms {arms}; {how}; fixed {fixed}. "
            f"{compared}")


def caveats(study: StudyData, runs: Sequence[ArmRuns]) -> list[str]:
    """Device, data and budget: what limits how far the finding reaches."""
    spec = study.spec
    found = devices(t for r in runs for t in r.runs)
    out = [f"device: {', '.join(found) or 'unknown'}"]
    note = OBJECTIVE_NOTES.get(spec.get("objective", ""))
    if note:
        out.append(note)
    epochs = spec.get("fixed", {}).get("epochs")
    budget = spec.get("budget", {})
    per_arm = (f"{budget.get('trials')} tuning trials and {budget.get('seeds')} seed re-runs"
               if spec.get("nuisance") else f"{1 + int(budget.get('seeds', 0))} runs of one "
               "fixed configuration")
    out.append(f"budget: {epochs or 'default'} epochs per run, {per_arm} per arm; a longer "
               "schedule or a larger data set may change the answer")
    if spec.get("nuisance") and not any(getattr(r.arm, "selection", None) for r in runs):
        out.append("each arm's configuration is its single best tuning trial (no selection "
                   "re-runs recorded): the luck of the tuning itself is not in the interval, so "
                   "arms that tuned to different settings by chance can differ for that reason")
    planned = int(budget.get("seeds", 0)) + (0 if spec.get("nuisance") else 1)
    short = [r.label for r in runs if len(r.runs) < planned]
    if short:
        out.append(f"seed re-runs missing (failed or not run) in {', '.join(short)}")
    return out

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
    found = devices(t for s in studies for a in s.arms for t in a.trials)
    objectives = sorted({str(s.spec.get("objective")) for s in studies})
    notes = [f"device: {', '.join(found) or 'unknown'}; objective: {', '.join(objectives)}"]
    if objectives and all(o.startswith("digits") for o in objectives):
        notes.append("digits has 1,437 training images (360 validation images: one image is "
                     "0.28 points of accuracy); effects on large data sets may differ")
    return notes


def fmt_ci(ci: tuple[float, float] | None, scale: float = 1.0, digits: int = 2) -> str:
    if ci is None:
        return "[no CI]"
    return f"[{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def fmt_p(p: float | None) -> str:
    return "p n/a" if p is None else f"p={p:.2g}"
