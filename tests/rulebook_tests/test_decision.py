"""The verdict logic: one Holm family over every hypothesis, claims decided whole, and the
family-wise error of wrong verdicts at most alpha over many null draws (seeded)."""

from __future__ import annotations

import numpy as np
import pytest

from service.rulebook import Finding, finalize
from service.rulebook.decision import (
    Hypothesis,
    Part,
    family_text,
    two_sample_part,
    value_part,
)

ALPHA = 0.05


def finding(rule: str, *parts: Part) -> Finding:
    return Finding(rule=rule, claim=f"{rule} claim", parts=list(parts))


def part(name: str, a, b, sign: int = 1, margin: float | None = 0.5,
         noninferior: bool = False) -> Part:
    return two_sample_part(name, "acc", {"a": list(a)}, {"b": list(b)}, claimed_sign=sign,
                           margin=margin, noninferior=noninferior)


def fixed_part(name: str, p_support: float, p_against: float, p_equiv: float | None = None):
    hyps = [Hypothesis("support", "welch", p_support), Hypothesis("against", "welch", p_against)]
    if p_equiv is not None:
        hyps.append(Hypothesis("equivalence", "tost", p_equiv, 0.1))
    return Part(name, "acc", "fixed p", 0.0, (0.0, 0.0), [5, 5], hyps)


def test_every_hypothesis_is_in_one_holm_family():
    f1 = finding("R1", fixed_part("x", 0.001, 0.999, 0.9))
    f2 = finding("R2", fixed_part("y", 0.02, 0.98, 0.9))
    finalize([f1, f2])
    # m = 6 hypotheses: 0.001 * 6, then max(0.006, 0.02 * 5)
    assert f1.parts[0].hypotheses[0].p_adjusted == pytest.approx(0.006)
    assert f2.parts[0].hypotheses[0].p_adjusted == pytest.approx(0.1)
    assert f1.verdict == "supported" and f2.verdict == "inconclusive"
    assert f1.decision == {"test": "welch", "part": "x", "p": 0.001,
                           "p_adjusted": pytest.approx(0.006), "alpha": ALPHA, "margin": None}
    assert f2.decision is None and f2.p_adjusted == pytest.approx(0.1)
    assert "m = 6 hypotheses" in family_text([f1, f2])


def test_an_equivalence_test_outside_holm_cannot_decide():
    # TOST p 0.04 alone would say "equivalent"; in a family of 9 it does not decide.
    others = [finding(f"R{i}", fixed_part("z", 0.5, 0.5, 0.9)) for i in range(2)]
    f = finding("R7", fixed_part("final", 0.6, 0.4, 0.04))
    finalize([f, *others])
    assert f.verdict == "inconclusive" and f.decision is None
    alone = finding("R7", fixed_part("final", 0.6, 0.4, 0.004))
    finalize([alone])
    assert alone.verdict == "contradicted" and alone.decision["test"] == "tost"
    assert alone.decision["p_adjusted"] == pytest.approx(0.012)
    assert alone.decision["margin"] == 0.1


def test_a_claim_is_supported_only_when_every_part_is():
    strong = fixed_part("fast", 1e-6, 1 - 1e-6)
    weak = fixed_part("as good", 0.2, 0.8)
    f = finding("R5", strong, weak)
    finalize([f])
    assert [p.verdict for p in f.parts] == ["supported", "inconclusive"]
    assert f.verdict == "inconclusive" and f.decision is None
    both = finding("R5", fixed_part("fast", 1e-6, 1 - 1e-6), fixed_part("good", 1e-5, 1))
    finalize([both])
    assert both.verdict == "supported"
    assert both.decision["part"] == "good"  # the weakest part decides an intersection-union
    assert [p["verdict"] for p in both.to_json()["parts"]] == ["supported", "supported"]


def test_a_part_against_the_claim_contradicts_it():
    f = finding("R8", fixed_part("end", 1e-6, 1), fixed_part("early", 1, 1e-6))
    finalize([f])
    assert f.verdict == "contradicted" and f.decision["part"] == "early"
    assert f.parts[0].verdict == "supported"


def test_an_arm_at_the_edge_of_its_range_is_not_decided():
    f = finding("R4", fixed_part("end", 1e-9, 1))
    f.undecided_because = "not decided: batch=256 chose lr=10 at the high edge"
    finalize([f])
    assert f.verdict == "inconclusive" and f.decision is None
    assert "high edge" in f.more_needed and "high edge" in f.to_json()["undecided_because"]


def test_non_inferiority_and_value_parts():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.95, 0.001, 8), rng.normal(0.95, 0.001, 8)
    ni = part("as good", a, b, margin=0.005, noninferior=True)
    assert [h.role for h in ni.hypotheses] == ["support", "against"]
    assert ni.hypotheses[0].p < 1e-4  # equal arms are well within a 0.5 pp margin
    worse = part("as good", a - 0.02, b, margin=0.005, noninferior=True)
    assert worse.hypotheses[1].p < 1e-4
    at_one = value_part("slope", "slope", 1.02, 0.05, 10, target=1.0, margin=0.25, n=[12],
                        method="ols")
    at_half = value_part("slope", "slope", 0.5, 0.05, 10, target=1.0, margin=0.25, n=[12],
                         method="ols")
    finalize([f1 := finding("R9", at_one)])
    finalize([f2 := finding("R9", at_half)])
    assert f1.verdict == "supported" and f1.decision["test"] == "value tost"
    assert f2.verdict == "contradicted" and f2.decision["test"] == "value below"


def test_planning_is_prospective_at_the_holm_level():
    rng = np.random.default_rng(1)
    f = finding("R14", part("acc", rng.normal(0.95, 0.004, 3), rng.normal(0.95, 0.004, 3),
                            margin=0.005))
    others = [finding(f"R{i}", fixed_part("z", 0.5, 0.5, 0.9)) for i in range(4)]
    finalize([f, *others])
    m = 3 + 4 * 3
    assert f.verdict == "inconclusive"
    assert f"{ALPHA:g}/{m}" in f.more_needed and "difference of 0.005" in f.more_needed


def _null_report(rng: np.random.Generator, n: int = 5) -> list[Finding]:
    """Ten findings drawn where every claimed difference is exactly 0 and the equivalence
    nulls hold at the margin (true difference = margin): any decided verdict is wrong."""
    findings = []
    for i in range(10):
        parts = []
        for j in range(1 + i % 3):
            kind = (i + j) % 3
            if kind == 0:  # a difference claimed; truth: difference = margin exactly
                parts.append(part(f"d{j}", rng.normal(0.05, 0.1, n), rng.normal(0, 0.1, n),
                                  margin=0.05))
            elif kind == 1:  # a difference claimed with no margin; truth 0
                parts.append(part(f"e{j}", rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                                  sign=-1, margin=None))
            else:  # non-inferiority; truth: exactly at -margin
                parts.append(part(f"n{j}", rng.normal(-0.05, 0.1, n), rng.normal(0, 0.1, n),
                                  margin=0.05, noninferior=True))
        findings.append(finding(f"R{i}", *parts))
    return findings


def test_familywise_error_of_verdicts_is_at_most_alpha_over_null_draws():
    # Every null is true at its boundary (the least favourable case), so any supported or
    # contradicted verdict is a wrong one; the share of reports with one must be <= alpha.
    # A difference claimed with a margin has its truth at the margin: "supported" needs the
    # one-sided test (true effect > 0: that null is false), so only contradictions count
    # there: an equivalence at the margin, or the opposite direction, is an error.
    rng = np.random.default_rng(20261130)
    draws, errors = 500, 0
    for _ in range(draws):
        findings = finalize(_null_report(rng), plan_more=False)
        wrong = False
        for f in findings:
            for p in f.parts:
                difference_at_margin = p.claim.startswith("d")
                if p.verdict == "contradicted" or (p.verdict == "supported"
                                                   and not difference_at_margin):
                    wrong = True
        errors += wrong
    rate = errors / draws
    mc_error = 3 * np.sqrt(ALPHA * (1 - ALPHA) / draws)
    assert rate <= ALPHA + mc_error, rate


def test_null_worlds_are_never_supported_and_contradicted_only_by_true_equivalence():
    rng = np.random.default_rng(7)
    supported = 0
    equivalent_contradictions = 0
    for _ in range(200):
        a, b = rng.normal(0.95, 0.001, 6), rng.normal(0.95, 0.001, 6)
        f = finding("R14", part("acc", a, b, margin=0.005))
        finalize([f])
        supported += f.verdict == "supported"
        if f.verdict == "contradicted":
            assert f.decision["test"] == "tost"  # equal arms: only equivalence may contradict
            equivalent_contradictions += 1
    assert supported <= 200 * ALPHA and equivalent_contradictions > 150
