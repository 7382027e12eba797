"""Deciding verdicts: every claim's hypotheses in one Holm family across the report.

A claim is made of parts ("momentum is faster" AND "ends at least as good"). Each part
contributes hypotheses, each a one-sided or equivalence test with its own p-value:

- `support`: the part holds in the claimed direction (for a difference, H0: no effect or the
  other way; for non-inferiority, H0: worse by the margin or more; for a value claim, a TOST
  against target ± margin);
- `against`: the part is false in the opposite direction (the one-sided test the other way,
  or for a value, the value lies outside target ± margin);
- `equivalence` (a difference claimed with a stated margin): TOST, H0 |effect| >= margin;
  rejecting it says the claimed difference is practically none, which contradicts the part.

`finalize` gathers every hypothesis of every tested finding in the report, applies Holm's
step-down correction to all of them together, and decides each part: contradicted when an
`against` or `equivalence` hypothesis is rejected (adjusted p <= alpha; a difference that is
significant but inside the margin is practically none, so equivalence wins), supported when
every `support` hypothesis is rejected, inconclusive otherwise. A claim is decided
intersection-union: supported only when every part is, contradicted when any part is. Any
wrong decided verdict needs a true null hypothesis rejected, so Holm's family-wise error
control over the whole family bounds the chance of any wrong verdict in the report by alpha.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from service.rulebook import stats
from service.rulebook._base import ALPHA, Finding
from service.rulebook.stats._core import t_quantile

__all__ = ["Hypothesis", "Part", "family_text", "finalize", "rate_part", "t_part",
           "trend_part", "two_sample_part", "value_part"]

Role = Literal["support", "against", "equivalence"]


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass
class Hypothesis:
    """One test in the report's family; `p_adjusted` is set by `finalize`."""

    role: Role
    test: str  # "welch", "tost", "non-inferiority", "slope", "value", "fisher", ...
    p: float | None
    margin: float | None = None
    p_adjusted: float | None = None

    def rejected(self, alpha: float) -> bool:
        return self.p_adjusted is not None and self.p_adjusted <= alpha


@dataclass
class Part:
    """One part of a claim: its estimate, its hypotheses, and what a plot of it shows."""

    claim: str
    metric: str
    test: str  # how it was estimated, in words
    effect: float
    ci: tuple[float, float] | None
    n: list[int]
    hypotheses: list[Hypothesis]
    claimed_sign: int = 1
    margin: float | None = None
    sds: tuple[float, float] | None = None  # seed sds of the two arms, for planning
    samples: dict[str, list[float]] = field(default_factory=dict)  # arm -> values compared
    xs: dict[str, float] = field(default_factory=dict)  # arm -> x, for a trend
    line: tuple[float, float] | None = None  # (intercept, slope) of a fitted trend
    se: float | None = None  # the estimate's standard error, for planning
    baseline: float | None = None  # a trend's null slope other than 0 (R2: -0.5), for plots
    verdict: str = "inconclusive"

    def support(self) -> list[Hypothesis]:
        return [h for h in self.hypotheses if h.role == "support"]

    def deciding(self, alpha: float) -> Hypothesis | None:
        """The hypothesis that decides the part: the strongest rejected one against it, else
        (supported) its weakest support hypothesis; None when undecided."""
        against = [h for h in self.hypotheses if h.role != "support" and h.rejected(alpha)]
        if against:
            return min(against, key=lambda h: h.p_adjusted)  # type: ignore[arg-type,return-value]
        support = self.support()
        if support and all(h.rejected(alpha) for h in support):
            return max(support, key=lambda h: h.p_adjusted)  # type: ignore[arg-type,return-value]
        return None

    def to_json(self, alpha: float = ALPHA) -> dict[str, Any]:
        h = self.deciding(alpha) or _weakest_support(self)
        return {"claim": self.claim, "test": h.test if h else self.test,
                "effect": _num(self.effect),
                "ci": None if self.ci is None else [_num(c) for c in self.ci],
                "p": None if h is None else _num(h.p),
                "p_adjusted": None if h is None else _num(h.p_adjusted),
                "verdict": self.verdict}


def _weakest_support(part: Part) -> Hypothesis | None:
    support = part.support()
    if not support or any(h.p is None for h in support):
        return support[0] if support else None
    return max(support, key=lambda h: h.p)  # type: ignore[arg-type,return-value]


# ------------------------------------------------------------------ building parts
def _t_hypotheses(effect: float, se: float, df: float, claimed_sign: int,
                  margin: float | None, noninferior: bool, test: str) -> list[Hypothesis]:
    toward, away = ("greater", "less") if claimed_sign > 0 else ("less", "greater")
    if noninferior:  # claimed_sign * effect > -margin
        edge = -claimed_sign * (margin or 0.0)
        return [Hypothesis("support", "non-inferiority", stats.t_tail(effect, se, df, edge,
                                                                       toward), margin),
                Hypothesis("against", "inferiority", stats.t_tail(effect, se, df, edge, away),
                           margin)]
    found = [Hypothesis("support", test, stats.t_tail(effect, se, df, 0.0, toward)),
             Hypothesis("against", test, stats.t_tail(effect, se, df, 0.0, away))]
    if margin:
        p = max(stats.t_tail(effect, se, df, -margin, "greater"),
                stats.t_tail(effect, se, df, margin, "less"))
        found.append(Hypothesis("equivalence", "tost", p, margin))
    return found


def t_part(claim: str, metric: str, effect: float, se: float, df: float, *, claimed_sign: int,
           margin: float | None, test: str, method: str, n: Sequence[int],
           noninferior: bool = False, level: float = 0.95, **shown: Any) -> Part:
    """A part estimated as a t statistic (a slope, a regression coefficient, a difference)."""
    if se == 0 or not math.isfinite(se):
        ci: tuple[float, float] | None = (effect, effect)
    else:
        half = t_quantile((1 + level) / 2, df) * se
        ci = (effect - half, effect + half)
    return Part(claim, metric, method, effect, ci, list(n),
                _t_hypotheses(effect, se, df, claimed_sign, margin, noninferior, test),
                claimed_sign, margin, se=se, **shown)


def two_sample_part(claim: str, metric: str, a: dict[str, list[float]],
                    b: dict[str, list[float]], *, claimed_sign: int, margin: float | None,
                    noninferior: bool = False) -> Part:
    """mean(a) - mean(b) of two arms' seed values by Welch's t (a and b: {label: values})."""
    (la, va), (lb, vb) = next(iter(a.items())), next(iter(b.items()))
    test = stats.welch(va, vb)
    se_df = stats.welch_se_df(va, vb)
    what = "non-inferiority " if noninferior else ""
    if se_df is None:
        return Part(claim, metric, f"{what}Welch t-test not possible: n={list(test.n)}",
                    test.effect, None, list(test.n),
                    [Hypothesis("support", "welch", None)], claimed_sign, margin,
                    samples={la: list(va), lb: list(vb)})
    se, df = se_df
    sds = (float(np.std(va, ddof=1)), float(np.std(vb, ddof=1)))
    margin_txt = f", margin {margin:g}" if margin else ""
    return t_part(claim, metric, test.effect, se, df if math.isfinite(df) else 1.0,
                  claimed_sign=claimed_sign, margin=margin, test="welch",
                  method=f"{what}Welch t-test{margin_txt} on seed values ({la} - {lb}), "
                         f"df={df:.1f}", n=test.n, noninferior=noninferior, sds=sds,
                  samples={la: list(va), lb: list(vb)})


def trend_part(claim: str, metric: str, trend: stats.ArmTrend, labels: Sequence[str],
               samples: dict[str, list[float]], *, claimed_sign: int, margin: float | None,
               null: float = 0.0) -> Part:
    """A slope through arm means on log2(batch), tested against `null` (R2: -0.5, what
    minibatch averaging alone gives); `xs` keeps each arm's batch size, for the plot."""
    part = t_part(claim, metric, trend.slope - null, trend.se, trend.df,
                  claimed_sign=claimed_sign, margin=margin, test="slope",
                  method=trend.method + (f"; tested against the baseline slope {null:g}"
                                         if null else ""), n=list(trend.n),
                  samples=samples,
                  xs={lab: 2.0**x for lab, x in zip(labels, trend.x, strict=True)},
                  line=(trend.intercept, trend.slope))
    part.effect += null  # report the slope itself; the hypotheses are about slope - null
    part.baseline = null or None
    if part.ci is not None:
        part.ci = (part.ci[0] + null, part.ci[1] + null)
    return part


def value_part(claim: str, metric: str, estimate: float, se: float, df: float, *,
               target: float, margin: float, method: str, n: Sequence[int],
               **shown: Any) -> Part:
    """A claimed value (R9: slope 1) with a margin: supported by a TOST inside target ±
    margin, contradicted by a one-sided test outside it (either side)."""
    ci = None if se == 0 else (estimate - t_quantile(0.975, df) * se,
                               estimate + t_quantile(0.975, df) * se)
    p_in = max(stats.t_tail(estimate, se, df, target - margin, "greater"),
               stats.t_tail(estimate, se, df, target + margin, "less"))
    hyps = [Hypothesis("support", "value tost", p_in, margin),
            Hypothesis("against", "value below", stats.t_tail(estimate, se, df,
                                                               target - margin, "less"), margin),
            Hypothesis("against", "value above", stats.t_tail(estimate, se, df,
                                                               target + margin, "greater"),
                       margin)]
    return Part(claim, metric, method, estimate, ci, list(n), hyps, 1, margin, se=se, **shown)


def rate_part(claim: str, metric: str, p_support: float | None, p_against: float | None,
              effect: float, ci: tuple[float, float] | None, n: Sequence[int], *,
              claimed_sign: int, test: str, method: str, **shown: Any) -> Part:
    """A part on event rates (divergence) whose one-sided p-values come from an exact or
    permutation test (Fisher's, or a stratified trend)."""
    return Part(claim, metric, method, effect, ci, list(n),
                [Hypothesis("support", test, p_support), Hypothesis("against", test, p_against)],
                claimed_sign, None, **shown)


# ------------------------------------------------------------------ the family
def _family(findings: Sequence[Finding]) -> list[Hypothesis]:
    return [h for f in findings if f.verdict != "not_tested" for part in f.parts
            for h in part.hypotheses if h.p is not None]


def family_text(findings: Sequence[Finding], alpha: float = ALPHA,
                plan_alpha: float | None = None) -> str:
    """What the report's multiplicity family is, in one paragraph (`plan_alpha`: the level
    'more needed' plans at, when it is not `alpha`: a staged design's last look)."""
    m = len(_family(findings))
    level = alpha if plan_alpha is None else plan_alpha
    k = sum(1 for f in findings if f.verdict != "not_tested" and f.parts)
    return (f"Error control: one Holm family of m = {m} hypotheses over the {k} tested rules, "
            f"at alpha = {alpha:g}. Each part of a claim contributes a one-sided test in the "
            "claimed direction, one in the opposite direction and, where a difference is "
            "claimed with a stated margin, a TOST equivalence test (value claims: a TOST "
            "inside target ± margin and one-sided tests outside it). A part is supported when "
            "its claimed-direction test has Holm-adjusted p <= alpha, contradicted when its "
            "opposite-direction or equivalence test does; a rule is supported only when every "
            "part is (intersection-union), contradicted when any part is. Holm's control of "
            "the family-wise error bounds the chance of any wrong decided verdict in this "
            f"report by {alpha:g}. 'More needed' plans seeds at the Bonferroni level "
            f"alpha/m = {level / max(m, 1):.2g}"
            + ("" if plan_alpha is None else f" (alpha {level:.3g}, the last look's share)")
            + ", the strictest step of Holm's procedure.")


def finalize(findings: list[Finding], alpha: float = ALPHA, *,
             plan_more: bool = True, plan_alpha: float | None = None) -> list[Finding]:
    """Holm-correct every hypothesis of the report together, then decide every verdict (and,
    with `plan_more`, plan the seeds an inconclusive one needs, at `plan_alpha` / m: by
    default `alpha`; a staged design passes its last look's share of alpha)."""
    family = _family(findings)
    for h, adj in zip(family, stats.holm([h.p for h in family]), strict=True):
        h.p_adjusted = adj
    m = max(len(family), 1)
    for f in findings:
        if f.verdict != "not_tested":
            _decide(f, alpha, m, plan_more, alpha if plan_alpha is None else plan_alpha)
    return findings


def _decide(f: Finding, alpha: float, m: int, plan_more: bool, plan_alpha: float) -> None:
    for part in f.parts:
        h = part.deciding(alpha)
        part.verdict = ("inconclusive" if h is None else
                        "supported" if h.role == "support" else "contradicted")
    contra = [p for p in f.parts if p.verdict == "contradicted"]
    if f.parts and not contra and all(p.verdict == "supported" for p in f.parts):
        deciding = max(f.parts, key=lambda p: p.deciding(alpha).p_adjusted)  # type: ignore
        f.verdict = "supported"
    elif contra:
        deciding = min(contra, key=lambda p: p.deciding(alpha).p_adjusted)  # type: ignore
        f.verdict = "contradicted"
    else:
        deciding, f.verdict = None, "inconclusive"
    if deciding is not None and f.undecided_because:
        deciding, f.verdict = None, "inconclusive"
    if deciding is not None:
        h = deciding.deciding(alpha)
        assert h is not None
        f.decision = {"test": h.test, "part": deciding.claim, "p": _num(h.p),
                      "p_adjusted": _num(h.p_adjusted), "alpha": alpha, "margin": h.margin}
        f.metric, f.effect, f.ci, f.n = deciding.metric, deciding.effect, deciding.ci, \
            list(deciding.n)
        f.p_value, f.p_adjusted = h.p, h.p_adjusted
        return
    f.decision = None
    if f.parts:
        primary = f.parts[0]
        f.metric, f.effect, f.ci, f.n = primary.metric, primary.effect, primary.ci, \
            list(primary.n)
        support = [h for p in f.parts for h in p.support()]
        if support and all(h.p is not None for h in support):
            f.p_value = max(h.p for h in support)  # type: ignore[type-var]
            f.p_adjusted = max(h.p_adjusted for h in support)  # type: ignore[type-var]
        if plan_more and not f.more_needed:
            f.more_needed = plan(f, plan_alpha, m)


def _target_se(margin: float | None, level: float, power: float = 0.8) -> float | None:
    """The standard error at which a true effect of `margin` is detected by a one-sided test
    at `level` with `power` (normal approximation)."""
    if not margin:
        return None
    from scipy import stats as st

    return margin / float(st.norm.ppf(1 - level) + st.norm.ppf(power))


def _se_text(part: Part, target: float | None) -> str:
    if part.se is None or target is None or not math.isfinite(part.se):
        return ""
    return (f"; to detect a true effect of {part.margin:.3g} (80% power at the Holm-level "
            f"alpha) its standard error must fall from {part.se:.3g} to {target:.3g}")


def plan(f: Finding, alpha: float, m: int) -> str:
    """Prospective seeds per arm for each undecided two-arm part, at alpha/m and 80% power,
    planned for the part's margin (not for the effect observed)."""
    level = alpha / m
    out = []
    for part in f.parts:
        if part.verdict != "inconclusive":
            continue
        if part.sds is not None and part.margin:
            got = stats.seeds_to_decide(part.margin, *part.sds, alpha=level)
            if got is not None:
                out.append(f"{part.claim}: about {got[0]} seeds per arm to detect a true "
                           f"difference of {part.margin:.3g} and {got[1]} to show equivalence "
                           f"within ±{part.margin:.3g} if there is none (80% power, one-sided "
                           f"alpha {level:.2g} = {alpha:g}/{m}; the sds observed here: "
                           f"{part.sds[0]:.3g}, {part.sds[1]:.3g})")
                continue
        target = _target_se(part.margin, level)
        if part.xs:
            out.append(f"{part.claim}: a trend across {len(part.xs)} arms has {len(part.xs) - 2}"
                       " degree(s) of freedom; more batch sizes (arms) narrow it, more seeds "
                       "per arm only shrink the part of the scatter that seeds cause"
                       + _se_text(part, target))
        elif part.se is not None and target is not None and math.isfinite(part.se):
            out.append(f"{part.claim}:{_se_text(part, target)}, about "
                       f"{max(1.0, (part.se / target) ** 2):.1f}x the replicates")
        else:
            out.append(f"{part.claim}: no margin to plan for; more seeds narrow its interval")
    if f.undecided_because:
        out.insert(0, f.undecided_because)
    return "; ".join(out)
