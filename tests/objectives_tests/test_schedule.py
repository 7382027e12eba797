from __future__ import annotations

import itertools
import math

import pytest

from objectives.schedule import DECAYS, lr_factor

STEPS_PER_EPOCH = 10
EPOCHS = 5
TOTAL = STEPS_PER_EPOCH * EPOCHS  # 50 steps
WARMUPS = (0.0, 0.5 * STEPS_PER_EPOCH, 2.0 * STEPS_PER_EPOCH)  # 0, half an epoch, two epochs


def reference(step: int, total: int, warmup: float, decay: str) -> float:
    """The schedule module's documented formulas, written out independently."""
    if step + 1 < warmup:
        return (step + 1) / warmup
    p = min(max((step - warmup) / (total - warmup), 0.0), 1.0)
    return {
        "constant": 1.0,
        "step": 1.0 if p < 0.5 else (0.1 if p < 0.75 else 0.01),
        "linear": 1.0 - p,
        "cosine": 0.5 * (1.0 + math.cos(math.pi * p)),
        "exponential": 0.01**p,
    }[decay]


@pytest.mark.parametrize(("warmup", "decay"), itertools.product(WARMUPS, DECAYS))
def test_every_step_matches_the_formulas(warmup: float, decay: str) -> None:
    for step in range(TOTAL):
        assert lr_factor(step, TOTAL, warmup, decay) == pytest.approx(
            reference(step, TOTAL, warmup, decay), abs=1e-12
        )


@pytest.mark.parametrize(("warmup", "decay"), itertools.product(WARMUPS, DECAYS))
def test_rises_during_warmup_then_never_rises(warmup: float, decay: str) -> None:
    factors = [lr_factor(step, TOTAL, warmup, decay) for step in range(TOTAL)]
    end_of_warmup = max(math.ceil(warmup) - 1, 0)
    rising, falling = factors[: end_of_warmup + 1], factors[end_of_warmup:]
    assert all(a < b for a, b in itertools.pairwise(rising))
    assert all(a >= b for a, b in itertools.pairwise(falling))
    assert all(0.0 < f <= 1.0 for f in factors)


@pytest.mark.parametrize(("warmup", "decay"), itertools.product(WARMUPS, DECAYS))
def test_warmup_reaches_exactly_one_at_its_last_step(warmup: float, decay: str) -> None:
    end_of_warmup = max(math.ceil(warmup) - 1, 0)
    assert lr_factor(end_of_warmup, TOTAL, warmup, decay) == 1.0
    if warmup >= 2:
        assert lr_factor(end_of_warmup - 1, TOTAL, warmup, decay) < 1.0


@pytest.mark.parametrize("warmup", WARMUPS)
def test_end_of_run(warmup: float) -> None:
    last = TOTAL - 1
    assert lr_factor(last, TOTAL, warmup, "constant") == 1.0
    assert lr_factor(last, TOTAL, warmup, "step") == 0.01
    assert lr_factor(last, TOTAL, warmup, "linear") < 0.05
    assert lr_factor(last, TOTAL, warmup, "cosine") < 0.01
    assert lr_factor(last, TOTAL, warmup, "exponential") == pytest.approx(0.01, rel=0.2)


def test_hand_computed_values_without_warmup() -> None:
    assert lr_factor(0, 50, 0, "cosine") == 1.0
    assert lr_factor(25, 50, 0, "cosine") == pytest.approx(0.5)
    assert lr_factor(25, 50, 0, "linear") == pytest.approx(0.5)
    assert lr_factor(25, 50, 0, "exponential") == pytest.approx(0.1)
    assert lr_factor(49, 50, 0, "linear") == pytest.approx(0.02)
    assert lr_factor(24, 50, 0, "step") == 1.0
    assert lr_factor(25, 50, 0, "step") == 0.1
    assert lr_factor(37, 50, 0, "step") == 0.1
    assert lr_factor(38, 50, 0, "step") == 0.01


def test_hand_computed_values_with_two_epochs_of_warmup() -> None:
    # 20 warmup steps, then 30 decay steps.
    assert lr_factor(0, 50, 20, "cosine") == pytest.approx(0.05)
    assert lr_factor(9, 50, 20, "cosine") == pytest.approx(0.5)
    assert lr_factor(18, 50, 20, "constant") == pytest.approx(0.95)
    assert lr_factor(19, 50, 20, "cosine") == 1.0
    assert lr_factor(20, 50, 20, "cosine") == 1.0
    assert lr_factor(35, 50, 20, "cosine") == pytest.approx(0.5)  # p = 15/30
    assert lr_factor(35, 50, 20, "linear") == pytest.approx(0.5)
    assert lr_factor(35, 50, 20, "exponential") == pytest.approx(0.1)
    assert lr_factor(34, 50, 20, "step") == 1.0  # p = 14/30
    assert lr_factor(35, 50, 20, "step") == 0.1
    assert lr_factor(42, 50, 20, "step") == 0.1  # p = 22/30
    assert lr_factor(43, 50, 20, "step") == 0.01  # p = 23/30
    assert lr_factor(49, 50, 20, "linear") == pytest.approx(1 / 30)
    cosine_at_29_of_30 = 0.5 * (1 + math.cos(math.pi * 29 / 30))
    assert lr_factor(49, 50, 20, "cosine") == pytest.approx(cosine_at_29_of_30)


def test_half_epoch_and_fractional_warmup() -> None:
    # Half an epoch of 10 steps: 5 warmup steps.
    assert [lr_factor(s, 50, 5, "constant") for s in range(6)] == pytest.approx(
        [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    )
    # 0.75 epoch = 7.5 steps: 1/7.5 per step, the peak at step 7.
    assert lr_factor(0, 50, 7.5, "cosine") == pytest.approx(1 / 7.5)
    assert lr_factor(6, 50, 7.5, "cosine") == pytest.approx(7 / 7.5)
    assert lr_factor(7, 50, 7.5, "cosine") == 1.0
    # Warmup shorter than one step is no warmup at all.
    assert lr_factor(0, 50, 0.5, "cosine") == 1.0


def test_warmup_spanning_the_whole_run() -> None:
    factors = [lr_factor(s, 10, 10, "cosine") for s in range(10)]
    assert factors == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr_factor(5, 10, 20, "linear") == pytest.approx(6 / 20)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="unknown decay 'polynomial'.*cosine"):
        lr_factor(0, 10, 0, "polynomial")
    with pytest.raises(ValueError, match="total_steps"):
        lr_factor(0, 0, 0, "cosine")
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_factor(0, 10, -1, "cosine")
