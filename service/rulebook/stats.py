"""The statistics of findings: tests, intervals, multiplicity and verdicts (RULES.md).

Every function takes plain sequences of floats and returns a small frozen dataclass (or a
verdict string). Tuning studies give small, messy samples, so the guards never crash on
them: too few observations give ``p_value=None`` / ``ci=None`` and a ``method`` that says
why. Non-finite inputs (NaN from a diverged run) are refused with ValueError: whether a
diverged run is a missing value or an outcome (a divergence rate, `proportion_diff`) is the
caller's decision, not something to drop silently here.

What each procedure assumes:

- `welch`, `tost`: two independent samples whose means are roughly normal; variances may
  differ. With 3-5 seeds per arm normality is an assumption about the metric, not the CLT.
- `paired`: independent pairs whose differences are roughly normal.
- `wilcoxon_paired`: differences symmetric about their median; no normality.
- `bootstrap_ci`, `bootstrap_diff_ci`, `ratio_ci`: the sample stands for its population;
  below ~10 observations bootstrap intervals cover less often than their nominal level.
- `slope`: a straight line (on log-log axes by default) with independent errors; the
  t-interval also assumes normal, equal-variance errors, the pairs bootstrap does not.
- `proportion_diff`: independent Bernoulli trials (e.g. one divergence flag per seed).
- `holm`: nothing about dependence between the tests; it controls the family-wise error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as st

Alternative = Literal["two-sided", "less", "greater"]
Verdict = Literal["supported", "contradicted", "inconclusive"]
NAN = float("nan")


# ---------------------------------------------------------------- results


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
    if alternative == "two-sided":
        return float(min(1.0, 2 * st.t.sf(abs(t), df)))
    if alternative == "greater":
        return float(st.t.sf(t, df))
    if alternative == "less":
        return float(st.t.cdf(t, df))
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
    half = float(st.t.ppf((1 + level) / 2, df)) * se
    return (effect - half, effect + half)


# ---------------------------------------------------------------- bootstrap


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable[..., Any], level: float,
               n_resamples: int, seed: int) -> Interval:
    """BCa where it is defined, else percentile; always the same answer for the same seed."""
    if min(len(d) for d in data) < 2:
        est = float(statistic(*data, axis=-1)) if min(len(d) for d in data) else NAN
        return Interval(NAN, NAN, est, "no bootstrap interval: fewer than 2 observations")
    estimate = float(statistic(*data, axis=-1))
    if all(np.ptp(d) == 0 for d in data):  # every resample is the sample itself
        return Interval(estimate, estimate, estimate, "constant sample: zero-width interval")
    # BCa's acceleration needs a few jackknife values; with 2 points it is mostly noise.
    methods = ("BCa", "percentile") if min(len(d) for d in data) >= 3 else ("percentile",)
    for method in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("error", st.DegenerateDataWarning)
            try:
                res = st.bootstrap(data, statistic, n_resamples=n_resamples,
                                   confidence_level=level, method=method,
                                   rng=np.random.default_rng(seed))
            except st.DegenerateDataWarning:
                continue
        low, high = (float(v) for v in res.confidence_interval)
        if math.isfinite(low) and math.isfinite(high):
            return Interval(low, high, estimate,
                            f"{method} bootstrap, {n_resamples} resamples, seed {seed}")
    return Interval(NAN, NAN, estimate, "no bootstrap interval: degenerate resamples")


def bootstrap_ci(x: Sequence[float], stat: Callable[..., Any] = np.mean, level: float = 0.95,
                 n_resamples: int = 10_000, seed: int = 0) -> Interval:
    """Bootstrap interval for ``stat(x)``; ``stat`` is a numpy reduction taking ``axis``."""
    return _bootstrap((_sample(x, "x"),), stat, level, n_resamples, seed)


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95,
                      n_resamples: int = 10_000, seed: int = 0) -> Interval:
    """Bootstrap interval for mean(a) - mean(b), a and b resampled independently."""
    def diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)
    return _bootstrap((_sample(a, "a"), _sample(b, "b")), diff, level, n_resamples, seed)


def ratio_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95,
             n_resamples: int = 10_000, seed: int = 0) -> Interval:
    """Bootstrap interval for mean(a) / mean(b) (e.g. samples/s of 2^k over its neighbour).

    ``b`` must be positive, as throughputs are. BCa respects transformations, so the
    interval for the ratio is as good as one for the log-ratio.
    """
    y = _sample(b, "b")
    if np.any(y <= 0):
        raise ValueError("ratio_ci needs a positive denominator sample b")

    def ratio(x: np.ndarray, z: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(x, axis=axis) / np.mean(z, axis=axis)
    return _bootstrap((_sample(a, "a"), y), ratio, level, n_resamples, seed)


# ---------------------------------------------------------------- two-sample tests


def welch(a: Sequence[float], b: Sequence[float], alternative: Alternative = "two-sided",
          level: float = 0.95) -> TestResult:
    """Welch's t-test of mean(a) - mean(b) (Satterthwaite df; equals scipy's ttest_ind).

    Fewer than 2 observations in a group: no test (p and ci None). Zero variance in both
    groups: the means are exact, so p = 0 if they differ in the tested direction, else 1,
    with a zero-width ci.
    """
    x, y = _sample(a, "a"), _sample(b, "b")
    n = (len(x), len(y))
    effect = _mean_diff(x, y)
    if min(n) < 2:
        return TestResult(effect, None, None, n,
                          f"Welch t-test not possible: n={n}, needs at least 2 per group")
    se, df = _welch_se_df(x, y)
    if se == 0:
        return TestResult(effect, (effect, effect), _exact_p(effect, alternative), n,
                          "Welch t-test: zero variance in both groups, means compared exactly")
    t = effect / se
    return TestResult(effect, _t_ci(effect, se, df, level), _t_p(t, df, alternative), n,
                      f"Welch t-test ({alternative}), df={df:.1f}", statistic=t, df=df)


def tost(a: Sequence[float], b: Sequence[float], margin: float,
         alpha: float = 0.05) -> TestResult:
    """Equivalence of means within ±margin: two one-sided Welch tests (TOST).

    H0: |mean(a) - mean(b)| >= margin. p is the larger of the one-sided p-values for
    "diff > -margin" and "diff < +margin"; ``equivalent`` is p < alpha, which is the same
    as the (1 - 2 alpha) Welch interval, returned as ``ci``, lying inside ±margin.
    Zero variance in both groups: equivalent iff |diff| < margin exactly.
    """
    if not margin > 0:
        raise ValueError("tost needs a positive margin")
    x, y = _sample(a, "a"), _sample(b, "b")
    n = (len(x), len(y))
    effect = _mean_diff(x, y)
    name = f"TOST (two one-sided Welch tests), margin ±{margin:g}"
    if min(n) < 2:
        return TestResult(effect, None, None, n, f"{name} not possible: n={n}")
    se, df = _welch_se_df(x, y)
    if se == 0:
        p = 0.0 if abs(effect) < margin else 1.0
        return TestResult(effect, (effect, effect), p, n,
                          f"{name}: zero variance in both groups, compared exactly",
                          equivalent=p < alpha)
    p = max(_t_p((effect + margin) / se, df, "greater"), _t_p((effect - margin) / se, df, "less"))
    return TestResult(effect, _t_ci(effect, se, df, 1 - 2 * alpha), p, n, f"{name}, df={df:.1f}",
                      df=df, equivalent=p < alpha)


def _pairs(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x, y = _sample(a, "a"), _sample(b, "b")
    if len(x) != len(y):
        raise ValueError(f"paired samples differ in length: {len(x)} vs {len(y)}")
    return x - y


def paired(a: Sequence[float], b: Sequence[float], alternative: Alternative = "two-sided",
           level: float = 0.95) -> TestResult:
    """Paired t-test on d = a - b (e.g. arms run with the same seeds); equals ttest_rel.

    Guards as `welch`: fewer than 2 pairs gives no test; differences all equal give p = 0
    (if their mean differs from 0 in the tested direction) or 1.
    """
    d = _pairs(a, b)
    n = (len(d), len(d))
    effect = float(d.mean()) if len(d) else NAN
    if len(d) < 2:
        return TestResult(effect, None, None, n, "paired t-test not possible: fewer than 2 pairs")
    if np.ptp(d) == 0:
        return TestResult(effect, (effect, effect), _exact_p(effect, alternative), n,
                          "paired t-test: differences constant, compared exactly")
    se, df = float(d.std(ddof=1)) / math.sqrt(len(d)), len(d) - 1
    t = effect / se
    return TestResult(effect, _t_ci(effect, se, df, level), _t_p(t, df, alternative), n,
                      f"paired t-test ({alternative}), df={df}", statistic=t, df=df)


def wilcoxon_paired(a: Sequence[float], b: Sequence[float],
                    alternative: Alternative = "two-sided") -> TestResult:
    """Wilcoxon signed-rank test on d = a - b; effect is the Hodges-Lehmann estimate.

    Zero differences are dropped (Wilcoxon's convention). With few pairs the exact test has
    a floor: 5 pairs cannot reach p < 0.0625 two-sided. No interval is given (ci None).
    """
    d = _pairs(a, b)
    n = (len(d), len(d))
    if len(d) == 0:
        return TestResult(NAN, None, None, n, "Wilcoxon signed-rank not possible: no pairs")
    walsh = (d[:, None] + d[None, :])[np.triu_indices(len(d))] / 2
    effect = float(np.median(walsh))
    if np.all(d == 0):
        return TestResult(effect, None, 1.0, n, "Wilcoxon signed-rank: all differences zero")
    if np.count_nonzero(d) < 2:
        return TestResult(effect, None, None, n,
                          "Wilcoxon signed-rank not possible: fewer than 2 non-zero differences")
    res = st.wilcoxon(d, alternative=alternative)
    return TestResult(effect, None, float(res.pvalue), n,
                      f"Wilcoxon signed-rank ({alternative}), Hodges-Lehmann effect",
                      statistic=float(res.statistic))


# ---------------------------------------------------------------- regression


def slope(x: Sequence[float], y: Sequence[float], log: bool = True, level: float = 0.95,
          n_boot: int = 5000, seed: int = 0) -> SlopeResult:
    """OLS slope of y on x (of log y on log x when ``log``), e.g. R9's log best LR vs log batch.

    Reports a t-interval from `scipy.stats.linregress` (``ci_t``) and a percentile
    pairs-bootstrap interval (``ci``). Resamples with a single distinct x have no slope and
    are discarded. With ~5 points the bootstrap sees few distinct configurations and is
    rough; read it next to ``ci_t``. Best LRs from a grid are discretized, which widens both.
    """
    u, v = _sample(x, "x"), _sample(y, "y")
    if len(u) != len(v):
        raise ValueError(f"x and y differ in length: {len(u)} vs {len(v)}")
    if log:
        if np.any(u <= 0) or np.any(v <= 0):
            raise ValueError("log slope needs positive x and y")
        u, v = np.log(u), np.log(v)
    n = len(u)
    kind = "log-log OLS" if log else "OLS"
    if n < 2 or np.ptp(u) == 0:
        return SlopeResult(NAN, NAN, NAN, n, None, None,
                           f"{kind} not possible: needs at least 2 distinct x values")
    with warnings.catch_warnings():  # constant y: r is 0/0, reported as NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = st.linregress(u, v)
    r2 = float(fit.rvalue) ** 2
    stderr = 0.0 if np.ptp(v) == 0 else float(fit.stderr)  # constant y: an exact flat line
    if n < 3:
        return SlopeResult(float(fit.slope), float(fit.intercept), r2, n, None, None,
                           f"{kind} through 2 points: exact fit, no interval")
    ci_t = _t_ci(float(fit.slope), stderr, n - 2, level)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    ub, vb = u[idx], v[idx]
    uc = ub - ub.mean(axis=1, keepdims=True)
    sxx = (uc**2).sum(axis=1)
    ok = sxx > 1e-12 * float(((u - u.mean()) ** 2).sum())
    boots = (uc * (vb - vb.mean(axis=1, keepdims=True))).sum(axis=1)[ok] / sxx[ok]
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return SlopeResult(float(fit.slope), float(fit.intercept), r2, n, (float(lo), float(hi)),
                       ci_t, f"{kind}; ci: pairs bootstrap ({int(ok.sum())} of {n_boot} "
                       f"resamples usable, seed {seed}); ci_t: t-interval, df={n - 2}")


# ---------------------------------------------------------------- multiplicity, proportions


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


def proportion_diff(k1: int, n1: int, k2: int, n2: int, level: float = 0.95,
                    alternative: Alternative = "two-sided") -> TestResult:
    """k1/n1 - k2/n2 (e.g. divergence rates) with Newcombe's hybrid Wilson-score interval
    (Newcombe 1998, method 10) and Fisher's exact p-value (conditional on the margins).
    """
    for k, m in ((k1, n1), (k2, n2)):
        if not 0 <= k <= m:
            raise ValueError(f"need 0 <= k <= n, got k={k}, n={m}")
    if n1 == 0 or n2 == 0:
        return TestResult(NAN, None, None, (n1, n2), "proportion difference: an empty group")
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = st.binomtest(k1, n1).proportion_ci(level, method="wilson")
    l2, u2 = st.binomtest(k2, n2).proportion_ci(level, method="wilson")
    d = p1 - p2
    ci = (d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2))
    res = st.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative=alternative)
    return TestResult(d, ci, float(res.pvalue), (n1, n2),
                      f"Newcombe-Wilson interval, Fisher exact test ({alternative})")


# ---------------------------------------------------------------- planning and verdicts


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


def verdict(effect: float, ci: tuple[float, float] | None, p_adjusted: float | None,
            claimed_sign: int, alpha: float = 0.05, equivalent: bool = False) -> Verdict:
    """The verdict of RULES.md for a rule that claims a difference of sign ``claimed_sign``.

    contradicted: ``equivalent`` (a TOST within the stated margin), or significant
    (p_adjusted < alpha, Holm-corrected) with the opposite sign. supported: significant with
    the claimed sign. Otherwise inconclusive, including when ``ci`` still covers zero (only
    possible when p and ci come from different procedures) or p is missing. For a
    one-sided p, pass the matching (1 - 2 alpha) two-sided interval, or ``ci=None``.
    """
    if claimed_sign not in (-1, 1):
        raise ValueError("claimed_sign must be +1 or -1")
    if equivalent:
        return "contradicted"
    if p_adjusted is None or not math.isfinite(p_adjusted) or p_adjusted >= alpha:
        return "inconclusive"
    if not math.isfinite(effect) or effect == 0:
        return "inconclusive"
    if ci is not None and ci[0] <= 0 <= ci[1]:
        return "inconclusive"
    return "supported" if (1 if effect > 0 else -1) == claimed_sign else "contradicted"


def value_verdict(ci: tuple[float, float] | None, target: float, margin: float) -> Verdict:
    """Verdict on a claimed value (R9: slope 1) with a practical margin around it.

    supported: the whole ci inside [target - margin, target + margin]; contradicted: the
    whole ci outside it; else inconclusive. A wide ci that merely contains the target
    supports nothing.
    """
    if margin < 0:
        raise ValueError("margin must be non-negative")
    if ci is None or not all(math.isfinite(c) for c in ci):
        return "inconclusive"
    lo, hi = sorted(ci)
    if target - margin <= lo and hi <= target + margin:
        return "supported"
    if hi < target - margin or lo > target + margin:
        return "contradicted"
    return "inconclusive"
