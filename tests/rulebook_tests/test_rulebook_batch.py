"""Calibration of the batch-size checks (R1-R4, R9) on worlds with PLANTED effects.

Each world is a pure-Python objective (tests/fixtures/planted_batch.py) run as the runner runs
a study, in memory (tests/fixtures/planted_studies.py), then read by the real checks and
decided by the real `finalize`. A check must find what was planted in either direction, and in
a world where batch size does nothing it must support nothing.
"""

from __future__ import annotations

import pytest
from planted_studies import batch, throughput

from service.rulebook import finalize
from service.rulebook.batch import CHECKS as BATCH_CHECKS
from service.rulebook.scaling import CHECKS as SCALING_CHECKS
from service.rulebook.throughput import CHECKS as THROUGHPUT_CHECKS

CHECKS = {c.rule: c for c in THROUGHPUT_CHECKS + BATCH_CHECKS + SCALING_CHECKS}


def verdicts(studies, rules=("R2", "R3", "R4", "R9")) -> dict:
    """Each rule decided alone (its own Holm family), as a one-rule report would."""
    out = {}
    for rule in rules:
        (f,) = finalize([CHECKS[rule].check(studies, None)])
        assert f.evidence and f.protocol, rule
        out[rule] = f
    return out


def test_textbook_world_supports_every_planted_rule():
    # Best LR proportional to batch, large batches 1 point worse per doubling, slower to
    # converge per epoch, loss noise falling as batch^-1 (beyond averaging's -0.5).
    studies = batch("textbook", lr_exponent=1.0, large_gap=0.01, epoch_slope=1.0,
                    osc_exponent=1.0, curvature=0.15)
    found = verdicts(studies)
    assert {r: f.verdict for r, f in found.items()} == {
        "R2": "supported", "R3": "supported", "R4": "supported", "R9": "supported"}
    assert found["R9"].effect == pytest.approx(1.0, abs=0.1)
    assert found["R4"].parts[0].claim.endswith("(equal steps)")
    assert found["R2"].parts[0].effect == pytest.approx(-1.0, abs=0.1)
    assert [p.verdict for p in found["R2"].parts] == ["supported", "supported"]
    assert [p.verdict for p in found["R3"].parts] == ["supported", "supported"]
    assert found["R3"].decision["test"] == "slope"
    assert len(found["R4"].table) == 6  # every arm, plus the equal-steps arm


def test_contrary_world_contradicts_scaling_and_generalization():
    # Square-root LR scaling, large batches generalize better, loss noise only averaging's.
    studies = batch("contrary", with_steps=False, lr_exponent=0.5, large_gap=-0.01,
                    curvature=0.15, osc_exponent=0.5)
    found = verdicts(studies, rules=("R2", "R4", "R9"))
    assert found["R9"].verdict == "contradicted"
    assert found["R9"].decision["test"] == "value below"
    assert found["R9"].effect == pytest.approx(0.5, abs=0.1)
    assert found["R4"].verdict == "contradicted" and found["R4"].effect < 0
    assert found["R4"].parts[0].claim.endswith("(equal epochs)")  # no r4_steps: the fallback
    assert any("confounded" in c for c in found["R4"].caveats)
    # Oscillation as batch^-0.5 is what averaging gives: the "beyond" part is contradicted.
    assert found["R2"].parts[0].verdict == "contradicted"
    assert found["R2"].verdict == "contradicted"


def test_null_world_supports_nothing():
    # Batch size changes nothing: not the best LR, accuracy, noise, or speed of convergence.
    studies = batch("null", with_steps=False, lr_exponent=0.0, noise=0.001, curvature=0.15)
    found = verdicts(studies)
    assert all(f.verdict != "supported" for f in found.values())
    assert found["R4"].verdict == "contradicted" and found["R4"].decision["test"] == "tost"
    assert found["R9"].verdict == "contradicted"  # slope ~0, far from 1


def test_trends_count_arms_not_seeds():
    # 5 arms of 4 seeds: a trend has 3 degrees of freedom, not 18.
    studies = batch("df", lr_exponent=1.0, epoch_slope=1.0, curvature=0.15)
    (f,) = finalize([CHECKS["R3"].check(studies, None)])
    assert "df=3" in f.parts[0].test and f.parts[0].n == [4] * 5
    assert "lack of fit" in f.evidence


@pytest.mark.parametrize(("bonus", "verdict"), [(0.10, "supported"), (-0.10, "contradicted"),
                                                (0.0, "contradicted")])
def test_r1_separates_a_power_of_two_bonus_from_the_size_trend(bonus, verdict):
    (f,) = finalize([CHECKS["R1"].check({"r1_throughput": throughput(bonus)}, None)])
    assert f.verdict == verdict
    assert f.decision["test"] == ("tost" if bonus == 0 else "ols")
    assert f.effect == pytest.approx({0.1: 0.0953, -0.1: -0.105, 0.0: 0.0}[bonus], abs=0.02)
    # Without a bonus the raw ratios still favour the larger batch on average: the trend,
    # which the size-adjusted ratios remove.
    if bonus == 0:
        assert len(f.table) == 5
        assert sum(row["ratio"] for row in f.table) / 5 > 1.005
        assert abs(sum(row["size-adjusted ratio"] for row in f.table) / 5 - 1) < 0.01
    assert any("CPU" in c for c in f.caveats)
