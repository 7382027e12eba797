"""Seeds in stages (service.rulebook.staging): the looks' alphas, decisions kept from the look
that made them, and the family-wise error of the whole staged procedure over null draws."""

from __future__ import annotations

import numpy as np
import pytest

from service.rulebook import Finding
from service.rulebook.decision import two_sample_part
from service.rulebook.staging import STAGES, Stages, decide_look, stageable

ALPHA = 0.05
MEDIUM = STAGES["medium"]


def test_alpha_is_spent_by_the_seeds_each_look_adds():
    assert Stages((1, 2, 4)).alphas(0.05) == pytest.approx([0.0125, 0.0125, 0.025])
    assert sum(MEDIUM.alphas(ALPHA)) == pytest.approx(ALPHA)
    assert STAGES["small"].alphas(ALPHA) == [ALPHA] and Stages((1, 2, 4)).seeds(5, 2) == 20
    with pytest.raises(ValueError):
        Stages((2, 1))


def _part(name, a, b, sign=1, margin=0.05, noninferior=False):
    return two_sample_part(name, "acc", {"a": list(a)}, {"b": list(b)}, claimed_sign=sign,
                           margin=margin, noninferior=noninferior)


def test_a_rule_keeps_the_verdict_of_the_look_that_decided_it():
    stages = Stages((1, 2))
    rng = np.random.default_rng(3)
    strong = lambda n: Finding("R1", "c", parts=[_part("x", rng.normal(1, 0.1, n),  # noqa: E731
                                                       rng.normal(0, 0.1, n))])
    weak = lambda n: Finding("R2", "c", parts=[_part("y", rng.normal(0, 1, n),  # noqa: E731
                                                     rng.normal(0, 1, n))])
    decided: dict[str, Finding] = {}
    first = {"R1": strong(5), "R2": weak(5)}
    assert decide_look(["R1", "R2"], first, decided, stages, 0, {"R1": {"s": 5}}) == ["R1"]
    d = decided["R1"].decision
    assert d["look"] == 1 and d["looks"] == 2 and d["alpha"] == pytest.approx(0.025)
    assert d["seeds_per_arm"] == {"s": 5} and "Bonferroni across looks" in d["procedure"]
    assert stageable(first["R2"]) and not stageable(first["R1"])
    second = {"R2": weak(10)}
    decide_look(["R1", "R2"], second, decided, stages, 1)
    assert decided["R1"] is first["R1"] and decided["R1"].decision["look"] == 1
    # R1 stays in look 2's family as a stand-in (p = 1): Holm still counts its 3 hypotheses.
    assert second["R2"].parts[0].hypotheses[0].p_adjusted >= min(
        1.0, 6 * second["R2"].parts[0].hypotheses[0].p / 6)
    assert "0.025/6" in second["R2"].more_needed  # planned at the last look's level


def _null_rules(rng, n_max):
    """Ten rules' data drawn once at the largest look; rule i reads the first n of each arm.
    Every null is true at its boundary (least favourable): differences claimed without a
    margin are 0, claimed with a margin are exactly the margin (only a contradiction is an
    error there), non-inferiority sits exactly at -margin. Rules 4 and 9 read one study, as
    R5 and R8 do (here with opposite claims on it)."""
    data = []
    for i in range(10):
        kind = i % 3
        shift = {0: 0.05, 1: 0.0, 2: -0.05}[kind]
        data.append((kind, rng.normal(shift, 0.1, n_max), rng.normal(0, 0.1, n_max)))
    data[9] = (1, data[4][1], data[4][2])  # a shared study: same arms, another claim
    return data


def _finding(i, kind, a, b, n):
    if kind == 0:
        part = _part("d", a[:n], b[:n], margin=0.05)
    elif kind == 1:
        part = _part("e", a[:n], b[:n], sign=-1 if i % 2 else 1, margin=None)
    else:
        part = _part("n", a[:n], b[:n], margin=0.05, noninferior=True)
    return Finding(f"R{i}", "null", parts=[part])


def _wrong(f: Finding) -> bool:
    if f.verdict == "contradicted":
        return True
    return f.verdict == "supported" and not f.parts[0].claim.startswith("d")


def _staged_report_errs(rng, stages: Stages, base: int = 5) -> bool:
    data = _null_rules(rng, base * stages.factors[-1])
    order = [f"R{i}" for i in range(10)]
    decided: dict[str, Finding] = {}
    for look, factor in enumerate(stages.factors):
        n = base * factor
        current = {f"R{i}": _finding(i, *d, n) for i, d in enumerate(data)
                   if f"R{i}" not in decided}
        if not current:
            break
        decide_look(order, current, decided, stages, look)
    return any(_wrong(f) for f in decided.values())


def test_familywise_error_of_the_staged_procedure_is_at_most_alpha():
    # The whole procedure (looks at 5/10/20 seeds, each undecided rule re-tested on its grown
    # data, decided rules kept) over null worlds: the share of reports with any wrong verdict
    # must be at most alpha plus Monte Carlo error.
    rng = np.random.default_rng(20261201)
    draws = 400
    errors = sum(_staged_report_errs(rng, MEDIUM) for _ in range(draws))
    rate = errors / draws
    assert rate <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / draws), rate


def test_looking_at_full_alpha_every_time_is_what_the_spending_prevents():
    # The same worlds, but every look tested at the whole alpha (looking until p < 0.05):
    # more wrong verdicts than the staged procedure on the same draws.
    full = Stages((1, 2, 4))
    spent = sum(_staged_report_errs(np.random.default_rng(s), full) for s in range(150))
    naive = 0
    for s in range(150):
        rng = np.random.default_rng(s)
        data = _null_rules(rng, 20)
        order = [f"R{i}" for i in range(10)]
        decided: dict[str, Finding] = {}
        for n in (5, 10, 20):
            current = {f"R{i}": _finding(i, *d, n) for i, d in enumerate(data)
                       if f"R{i}" not in decided}
            decide_look(order, current, decided, Stages((1,)), 0)
        naive += any(_wrong(f) for f in decided.values())
    assert naive > spent
