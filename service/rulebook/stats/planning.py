"""Multiplicity and planning: Holm's step-down adjustment, one-sided t tails against a
threshold (the bricks of difference, non-inferiority, equivalence and value tests), and the
seeds per arm a comparison needs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats as st

from service.rulebook.stats._core import _t_p


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    ``None`` (a test that could not run) passes through and does not count toward m.
    """
    given: list[tuple[float, int]] = []
    for i, p in enumerate(p_values):
        if p is None:
            continue
        if not 0 <= p <= 1:  # NaN fails too
            raise ValueError(f"p-value {p!r} at position {i} is not in [0, 1]")
        given.append((float(p), i))
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(given)):
        running = max(running, min(1.0, (len(given) - rank) * p))
        adjusted[i] = running
    return adjusted


def t_tail(effect: float, se: float, df: float, threshold: float, side: str) -> float:
    """One-sided p for "effect > threshold" (side "greater") or "< threshold" ("less"), with
    a t statistic (effect - threshold) / se on `df`. se 0: the effect is exact, p is 0 or 1."""
    if se == 0 or not math.isfinite(se):
        holds = effect > threshold if side == "greater" else effect < threshold
        return 0.0 if holds else 1.0
    return _t_p((effect - threshold) / se, df, side)  # type: ignore[arg-type]


def _t_power(n: int, effect: float, var_a: float, var_b: float, alpha: float) -> float:
    """Power of a two-sided Welch test, n per group (noncentral t, Welch df)."""
    df = (n - 1) * (var_a + var_b) ** 2 / (var_a**2 + var_b**2)
    nc = abs(effect) / math.sqrt((var_a + var_b) / n)
    crit = st.t.ppf(1 - alpha / 2, df)
    return float(st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc))


def seeds_needed(effect: float, sd_a: float, sd_b: float, alpha: float = 0.05,
                 power: float = 0.8) -> int | None:
    """Seeds per arm for a two-sided two-sample t-test to detect ``effect`` with ``power``.

    Starts from the normal approximation n = (z_{1-alpha/2} + z_power)^2 (sd_a^2 + sd_b^2)
    / effect^2, rounded up, then steps up until the noncentral-t power is reached (the
    normal formula is 1-2 seeds short at small n: 16 vs the exact 17 for a 1-sd effect).
    None when the effect is 0 or an input is not finite (an sd from one seed); 2 when both
    sds are 0.
    """
    if not all(math.isfinite(v) for v in (effect, sd_a, sd_b)) or effect == 0:
        return None
    if sd_a < 0 or sd_b < 0:
        raise ValueError("standard deviations must be non-negative")
    var_a, var_b = sd_a**2, sd_b**2
    if var_a + var_b == 0:
        return 2
    z = float(st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power))
    n = max(2, math.ceil(z**2 * (var_a + var_b) / effect**2))
    while n < 100_000 and _t_power(n, effect, var_a, var_b, alpha) < power:
        n += 1
    return n


def _one_sided_power(n: int, shift: float, var_a: float, var_b: float, alpha: float) -> float:
    df = (n - 1) * (var_a + var_b) ** 2 / (var_a**2 + var_b**2)
    nc = shift / math.sqrt((var_a + var_b) / n)
    return float(st.nct.sf(st.t.ppf(1 - alpha, df), df, nc))


def seeds_to_decide(margin: float, sd_a: float, sd_b: float, alpha: float,
                    power: float = 0.8) -> tuple[int, int] | None:
    """Prospective seeds per arm for a comparison with equivalence margin `margin` at level
    `alpha` (pass the Holm-level alpha, e.g. alpha / family size): (n for a one-sided Welch
    test to detect a true difference of `margin`, n for TOST to show equivalence when the
    true difference is 0). Planned for the margin, not for an observed effect. None when an
    sd is not finite or the margin is not positive."""
    if not (margin > 0 and math.isfinite(sd_a) and math.isfinite(sd_b)):
        return None
    var_a, var_b = sd_a**2, sd_b**2
    if var_a + var_b == 0:
        return 2, 2
    z_a = float(st.norm.ppf(1 - alpha))

    def search(shift: float, z_b: float, ok) -> int:
        n = max(2, math.ceil((z_a + z_b) ** 2 * (var_a + var_b) / shift**2))
        while n < 100_000 and not ok(n):
            n += 1
        return n

    detect = search(margin, float(st.norm.ppf(power)),
                    lambda n: _one_sided_power(n, margin, var_a, var_b, alpha) >= power)
    # TOST at true difference 0: each one-sided test needs power (1 + power) / 2.
    half = (1 + power) / 2
    equiv = search(margin, float(st.norm.ppf(half)),
                   lambda n: _one_sided_power(n, margin, var_a, var_b, alpha) >= half)
    return detect, equiv
