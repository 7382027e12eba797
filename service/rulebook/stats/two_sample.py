"""Two-sample tests: Welch, TOST, paired t, Wilcoxon signed-rank, two proportions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as st

from service.rulebook.stats._core import (
    NAN,
    Alternative,
    TestResult,
    _exact_p,
    _mean_diff,
    _sample,
    _t_ci,
    _t_p,
    _welch_se_df,
)


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




def welch_se_df(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """(standard error of mean(a) - mean(b), Welch-Satterthwaite df); None below 2 per group.
    se 0 (both groups constant) comes with df NaN: the difference is then exact."""
    x, y = _sample(a, "a"), _sample(b, "b")
    if min(len(x), len(y)) < 2:
        return None
    return _welch_se_df(x, y)
