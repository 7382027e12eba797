"""What a rule check is and what it returns: the ◆ findings contract.

A `RuleCheck` reads the trials of the studies that test its rule and returns a
`Finding` with an effect, its confidence interval and an uncorrected p-value. Verdicts
are not decided by the check: `finalize` applies Holm's correction across every finding
of a report first, then decides each verdict from the corrected p-value (or, for a claim
of a specific value such as R9's slope of 1, from where the whole CI lies).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from service.rulebook import stats
from service.store.study_data import StudyData

VerdictName = Literal["supported", "contradicted", "inconclusive", "not_tested"]
ALPHA = 0.05


@dataclass
class Finding:
    """One rule's result. The first twelve fields are the ◆ findings JSON."""

    rule: str
    claim: str
    verdict: VerdictName = "inconclusive"
    metric: str = ""
    effect: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    n: list[int] = field(default_factory=list)
    method: str = ""
    evidence: str = ""
    # How the verdict is decided (not part of the JSON contract):
    claimed_sign: int | None = None  # +1: the claim says effect > 0; -1: < 0
    value_claim: tuple[float, float] | None = None  # (target, margin) for value claims
    equivalent: bool = False  # TOST found the arms equivalent where a difference is claimed
    # What the report shows beside the verdict:
    protocol: str = ""
    table: list[dict[str, Any]] = field(default_factory=list)  # evidence rows
    plots: list[str] = field(default_factory=list)  # PNG paths, relative to the report
    caveats: list[str] = field(default_factory=list)
    more_needed: str = ""  # for inconclusive: how many more seeds/trials would decide it
    studies: list[str] = field(default_factory=list)  # spec names read

    def to_json(self) -> dict[str, Any]:
        def num(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        return {
            "rule": self.rule, "claim": self.claim, "verdict": self.verdict,
            "metric": self.metric, "effect": num(self.effect),
            "ci": None if self.ci is None else [num(self.ci[0]), num(self.ci[1])],
            "p_value": num(self.p_value), "p_adjusted": num(self.p_adjusted),
            "n": list(self.n), "method": self.method, "evidence": self.evidence,
        }


def not_tested(rule: str, claim: str, reason: str) -> Finding:
    return Finding(rule=rule, claim=claim, verdict="not_tested", evidence=reason)


def finalize(findings: list[Finding], alpha: float = ALPHA) -> list[Finding]:
    """Holm-correct the p-values across the report, then decide every verdict."""
    tested = [f for f in findings if f.verdict != "not_tested"]
    adjusted = stats.holm([f.p_value for f in tested])
    for f, p_adj in zip(tested, adjusted, strict=True):
        f.p_adjusted = p_adj
        if f.value_claim is not None:
            target, margin = f.value_claim
            f.verdict = stats.value_verdict(f.ci, target, margin)
        elif f.claimed_sign is not None and f.effect is not None:
            f.verdict = stats.verdict(f.effect, f.ci, p_adj, f.claimed_sign, alpha=alpha,
                                      equivalent=f.equivalent)
        else:
            f.verdict = "inconclusive"
    return findings


class RuleCheck(abc.ABC):
    """One rule of RULES.md: its words, its study specs, and the test of its claim."""

    rule: str  # "R8"
    claim: str  # the measurable form, one sentence
    blog_zh: str  # the blog's words
    blog_en: str  # an English rendering
    literature: str  # how the literature in RULES.md bears on it
    specs: tuple[str, ...]  # spec file stems under search_spaces/rulebook/<budget>/
    needs: tuple[str, ...] = ()  # standard parameters the objective must honour

    @abc.abstractmethod
    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        """Read `studies` (spec stem -> data, None when it did not run) and return a Finding
        with effect, ci, p_value, n, method, evidence, claimed_sign or value_claim; plots
        are written under `plot_dir` and listed in `Finding.plots`."""
