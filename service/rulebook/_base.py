"""What a rule check is and what it returns: the ◆ findings contract.

A `RuleCheck` reads the trials of the studies that test its rule and returns a `Finding`
whose `parts` carry each part of the claim with its hypotheses (`service.rulebook.decision`).
Verdicts are not decided by the check: `decision.finalize` puts every hypothesis of a report
into one Holm family, then decides every verdict and names the test that decided it.

A check reads as its protocol: `load` (the studies and arms, or the finding that says why
not), `estimate` (the parts of the claim), `describe` (the finding's words and tables) and
`plot` (the compared quantity with its interval); `check` runs the four in that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from service.store.study_data import StudyData

if TYPE_CHECKING:
    from service.rulebook.decision import Part

VerdictName = Literal["supported", "contradicted", "inconclusive", "not_tested"]
ALPHA = 0.05


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass
class Finding:
    """One rule's result. `to_json` is the ◆ findings JSON."""

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
    parts: list[Part] = field(default_factory=list)  # the claim's parts, each with hypotheses
    decision: dict[str, Any] | None = None  # set by finalize: the test that decided
    undecided_because: str = ""  # e.g. an arm tuned to the edge of its range: not decided
    search_space_warnings: list[dict[str, Any]] = field(default_factory=list)
    selection: dict[str, Any] | None = None  # how each arm's configuration was chosen
    # What the report shows beside the verdict:
    protocol: str = ""
    table: list[dict[str, Any]] = field(default_factory=list)  # evidence rows
    plots: list[str] = field(default_factory=list)  # PNG paths, relative to the report
    caveats: list[str] = field(default_factory=list)
    more_needed: str = ""  # for inconclusive: what would decide it
    studies: list[str] = field(default_factory=list)  # spec names read

    def to_json(self) -> dict[str, Any]:
        out = {
            "rule": self.rule, "claim": self.claim, "verdict": self.verdict,
            "metric": self.metric, "effect": _num(self.effect),
            "ci": None if self.ci is None else [_num(self.ci[0]), _num(self.ci[1])],
            "p_value": _num(self.p_value), "p_adjusted": _num(self.p_adjusted),
            "n": list(self.n), "method": self.method, "evidence": self.evidence,
            "decision": self.decision, "parts": [p.to_json() for p in self.parts],
        }
        if self.undecided_because:
            out["undecided_because"] = self.undecided_because
        if self.selection:
            out["selection"] = self.selection
        return out


def not_tested(rule: str, claim: str, reason: str) -> Finding:
    return Finding(rule=rule, claim=claim, verdict="not_tested", evidence=reason)


class RuleCheck:
    """One rule of RULES.md: its words, its study specs, and the test of its claim."""

    rule: str  # "R8"
    claim: str  # the measurable form, one sentence
    blog_zh: str  # the blog's words
    blog_en: str  # an English rendering
    literature: str  # how the literature in RULES.md bears on it
    specs: tuple[str, ...]  # spec file stems under search_spaces/rulebook/<budget>/
    needs: tuple[str, ...] = ()  # standard parameters the objective must honour

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        """Read `studies` (spec stem -> data, None when it did not run) and return a Finding
        whose parts carry the claim's hypotheses; plots are written under `plot_dir` (None:
        no plots) and listed in `Finding.plots`."""
        loaded = self.load(studies)
        if isinstance(loaded, Finding):
            return loaded
        finding = self.describe(loaded, self.estimate(loaded))
        if plot_dir is not None:
            finding.plots += self.plot(loaded, finding, plot_dir)
        return finding

    def adapt(self, stem: str, spec: dict[str, Any],
              earlier: dict[str, StudyData | None]) -> dict[str, Any]:
        """The spec `stem` runs with (a JSON dict), given the studies of this check's specs
        that ran before it (`earlier`: stem -> data). Default: as written. R10 places its
        arms from an earlier scan this way (a spec cannot depend on a result)."""
        return spec

    def load(self, studies: dict[str, StudyData | None]) -> Any:
        """The data the check compares, or a Finding (not_tested / inconclusive) saying why
        there is nothing to compare."""
        raise NotImplementedError

    def estimate(self, loaded: Any) -> list[Part]:
        """The claim's parts, each with its estimate and hypotheses."""
        raise NotImplementedError

    def describe(self, loaded: Any, parts: list[Part]) -> Finding:
        """The finding: parts, evidence sentence, protocol, table, caveats."""
        raise NotImplementedError

    def plot(self, loaded: Any, finding: Finding, plot_dir: Any) -> list[str]:
        """The compared quantity of the fresh-seed runs with its interval, per part."""
        from service.rulebook.figures import decision_plot

        return decision_plot(finding, plot_dir)
