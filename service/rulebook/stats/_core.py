"""Result types and the small t-distribution helpers every test in the package shares."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import special

Alternative = Literal["two-sided", "less", "greater"]
NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval around ``estimate``; unpacks as ``low, high``.

    ``low``/``high`` are NaN when no interval exists (fewer than two observations).
    """

    low: float
    high: float
    estimate: float
    method: str

    def __iter__(self) -> Iterator[float]:
        return iter((self.low, self.high))


@dataclass(frozen=True)
class TestResult:
    """One comparison. ``effect`` is in the metric's units (a minus b, or k1/n1 - k2/n2).

    ``ci`` is always the two-sided interval for ``effect`` (for `tost`, at level 1 - 2 alpha),
    whatever the test's alternative, so it can be shown next to any p-value.
    """

    __test__ = False  # not a pytest class

    effect: float
    ci: tuple[float, float] | None
    p_value: float | None
    n: tuple[int, ...]
    method: str
    statistic: float | None = None
    df: float | None = None
    equivalent: bool | None = None  # set by `tost` only

    def as_dict(self) -> dict[str, Any]:
        """The findings-JSON fields (◆ contract): NaN becomes null."""
        return {"effect": _json_num(self.effect),
                "ci": None if self.ci is None else [_json_num(c) for c in self.ci],
                "p_value": self.p_value, "n": list(self.n), "method": self.method}


@dataclass(frozen=True)
class SlopeResult:
    """A fitted line. ``ci`` is the pairs-bootstrap interval, ``ci_t`` the t-interval."""

    slope: float
    intercept: float
    r2: float
    n: int
    ci: tuple[float, float] | None
    ci_t: tuple[float, float] | None
    method: str


def _json_num(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _sample(x: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite values; decide what a diverged run means "
                         "before testing (drop it, or count it with proportion_diff)")
    return arr


def _mean_diff(x: np.ndarray, y: np.ndarray) -> float:
    return float(x.mean() - y.mean()) if len(x) and len(y) else NAN


def _t_p(t: float, df: float, alternative: Alternative) -> float:
    # scipy.special's Student t CDF: the same numbers as st.t, without the distribution
    # machinery's argument checks (40x faster, which the verdict simulations need).
    if alternative == "two-sided":
        return float(min(1.0, 2 * special.stdtr(df, -abs(t))))
    if alternative == "greater":
        return float(special.stdtr(df, -t))
    if alternative == "less":
        return float(special.stdtr(df, t))
    raise ValueError(f"alternative must be two-sided, less or greater, not {alternative!r}")


def _exact_p(effect: float, alternative: Alternative) -> float:
    """p for two zero-variance samples: the means are known exactly, so 0 or 1."""
    differs = {"two-sided": effect != 0, "greater": effect > 0, "less": effect < 0}
    if alternative not in differs:
        raise ValueError(f"alternative must be two-sided, less or greater, not {alternative!r}")
    return 0.0 if differs[alternative] else 1.0


def _welch_se_df(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Standard error of mean(x) - mean(y) and Welch-Satterthwaite df (se 0: df NaN)."""
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    if va + vb == 0:
        return 0.0, NAN
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    return float(math.sqrt(va + vb)), float(df)


def _t_ci(effect: float, se: float, df: float, level: float) -> tuple[float, float]:
    half = t_quantile((1 + level) / 2, df) * se
    return (effect - half, effect + half)


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t on `df` degrees of freedom."""
    return float(special.stdtrit(df, q))

