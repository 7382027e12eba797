"""Seeds in stages: a group-sequential design over the report's one Holm family (RULES.md).

A budget plans K looks. At look k every study a still-undecided rule reads has
`factor_k x` the evidence seeds its spec asks for (looks at 5, 10, 20 seeds per arm for
factors 1, 2, 4 of a spec with `seeds: 5`). Each look runs every check, puts every
hypothesis of the report into one Holm family and tests it at that look's share of alpha:

    alpha_k = alpha * (factor_k - factor_{k-1}) / factor_K      (alpha spent by information)

A rule keeps the verdict of the first look that decides it; a rule decided earlier stays in
every later family (the family does not shrink with the data). Why the error rate holds: a
wrong verdict needs a true null hypothesis rejected at some look; at look k Holm at alpha_k
rejects one with probability at most alpha_k, whatever the other looks did; by the union
bound over looks (Bonferroni across looks, valid under any dependence between them) the
chance of any wrong verdict in the report is at most sum(alpha_k) = alpha. The looks' data
are nested and positively correlated, so this is conservative next to Pocock's or O'Brien-
Fleming's boundaries, which need that correlation known. Stopping early (every rule
decided, or the wall-time budget spent) only forfeits the alpha of the looks not taken.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.rulebook._base import ALPHA, Finding
from service.rulebook.decision import Hypothesis, Part, finalize

__all__ = ["STAGES", "Stages", "decide_look", "mark_decided", "procedure_text", "stageable"]


@dataclass(frozen=True)
class Stages:
    """A budget's looks: multiples of each spec's evidence seeds, and a wall-time budget."""

    factors: tuple[int, ...] = (1,)
    max_wall_s: float | None = None  # no new look starts past this (estimated before it)

    def __post_init__(self) -> None:
        if not self.factors or list(self.factors) != sorted(set(self.factors)) \
                or self.factors[0] < 1:
            raise ValueError(f"look factors must rise from 1 or more: {self.factors}")

    @property
    def looks(self) -> int:
        return len(self.factors)

    def alphas(self, alpha: float = ALPHA) -> list[float]:
        """Each look's share of alpha, by the seeds it adds (they sum to alpha)."""
        last, prev, out = self.factors[-1], 0, []
        for f in self.factors:
            out.append(alpha * (f - prev) / last)
            prev = f
        return out

    def seeds(self, spec_seeds: int, look: int) -> int:
        """Evidence seeds per arm at look `look` (0-based) of a spec asking `spec_seeds`."""
        return spec_seeds * self.factors[look]


# The looks of each budget. small and full decide once (one look at the spec's seeds).
STAGES = {
    "small": Stages(),
    "medium": Stages((1, 2, 4), max_wall_s=45 * 60),
    "full": Stages(),
}


def stageable(finding: Finding) -> bool:
    """Would more evidence seeds help this finding? Not when it is decided, not tested, or
    undecided for a reason seeds do not change (an arm tuned to the edge of its range)."""
    return finding.verdict == "inconclusive" and not finding.undecided_because \
        and bool(finding.parts)


def mark_decided(finding: Finding, stages: Stages, look: int, seeds: dict[str, int],
                 alpha: float = ALPHA) -> None:
    """Write into a finding decided at `look` (0-based) which look decided it and how."""
    if finding.decision is None:
        return
    finding.decision.update({
        "look": look + 1, "looks": stages.looks, "report_alpha": alpha,
        "seeds_per_arm": seeds,
        "procedure": (f"group-sequential, {stages.looks} look(s) at "
                      f"{'/'.join(f'{f}x' for f in stages.factors)} the spec's evidence seeds; "
                      "alpha spent by seeds added, Bonferroni across looks, Holm within each")})


def procedure_text(stages: Stages, alpha: float, taken: int,
                   seeds: list[dict[str, int]], stopped: str) -> str:
    """The report's paragraph on the staged procedure: looks planned and taken, the alpha
    each spent, the seeds per arm at each, and why it stopped."""
    if stages.looks == 1:
        return ""
    spent = stages.alphas(alpha)
    rows = []
    for k in range(stages.looks):
        at = ", ".join(f"{s} {n}" for s, n in seeds[k].items()) if k < taken else "not taken"
        rows.append(f"look {k + 1}: {stages.factors[k]}x seeds, alpha {spent[k]:.4g} ({at})")
    return (f"Seeds in stages (group-sequential): {stages.looks} looks planned, {taken} "
            f"taken; {stopped}. At each look every hypothesis of the report is in one Holm "
            "family tested at that look's share of alpha, spent in proportion to the seeds "
            f"it adds (they sum to {alpha:g}); a rule keeps the verdict of the first look that "
            "decides it, and more seeds are added only to the studies of rules still "
            "undecided. A wrong verdict needs a true null rejected at some look, each look "
            "errs with probability at most its alpha, so by the union bound (Bonferroni "
            f"across looks) the report's family-wise error is at most {alpha:g}; looks not "
            "taken forfeit their alpha. 'More needed' is planned at the last look's level. "
            + "; ".join(rows) + ".")


def decide_look(order: list[str], current: dict[str, Finding], decided: dict[str, Finding],
                stages: Stages, look: int, seeds: dict[str, dict[str, int]] | None = None,
                alpha: float = ALPHA) -> list[str]:
    """Decide look `look` (0-based): `current` holds this look's findings of the rules not yet
    decided, `decided` the findings of earlier looks (it gains the rules this look decides).
    Returns the rules decided at this look. `seeds` (rule -> spec stem -> seeds per arm) is
    recorded in each new decision."""
    alphas = stages.alphas(alpha)
    family = []
    for rule in order:
        if rule in current:
            family.append(current[rule])
        elif rule in decided:
            family.append(_stand_in(decided[rule]))
    finalize(family, alphas[look], plan_alpha=alphas[-1])
    new = [r for r, f in current.items() if f.verdict in ("supported", "contradicted")]
    for rule in new:
        decided[rule] = current[rule]
        mark_decided(current[rule], stages, look, (seeds or {}).get(rule, {}), alpha)
    return new


def _stand_in(f: Finding) -> Finding:
    """A rule decided at an earlier look, in a later look's family: its hypotheses with p = 1.
    They keep the family's size (Holm's bound counts every true null) and are never rejected
    again: a decided rule is not re-tested on data whose size its stopping made random."""
    parts = [Part(p.claim, p.metric, p.test, p.effect, p.ci, p.n,
                  [Hypothesis(h.role, h.test, None if h.p is None else 1.0, h.margin)
                   for h in p.hypotheses]) for p in f.parts]
    return Finding(rule=f.rule, claim=f.claim, parts=parts)
