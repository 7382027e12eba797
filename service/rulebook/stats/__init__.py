"""The statistics of findings: tests, intervals, lines, multiplicity and planning (RULES.md).

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
- `arm_trend`: arm means that scatter independently about a straight line; the seeds of an
  arm share its tuned configuration, so the arm, not the seed, is the unit.
- `stratified_trend`: within a stratum (one LR), events exchangeable across x under the null.
- `holm`: nothing about dependence between the tests; it controls the family-wise error.

Verdicts are not decided here: `service.rulebook.decision` builds each claim's hypotheses
from these tests and decides them together under Holm's correction.

Modules: `two_sample` (Welch, TOST, paired, Wilcoxon, proportions), `intervals` (bootstrap),
`regression` (slopes, least squares, arm trends), `planning` (Holm, one-sided tails, seeds).
"""

from service.rulebook.stats._core import Alternative, Interval, SlopeResult, TestResult
from service.rulebook.stats.intervals import bootstrap_ci, bootstrap_diff_ci, ratio_ci
from service.rulebook.stats.planning import holm, seeds_needed, seeds_to_decide, t_tail
from service.rulebook.stats.regression import (
    ArmTrend,
    LeastSquares,
    arm_trend,
    least_squares,
    slope,
    stratified_trend,
)
from service.rulebook.stats.two_sample import (
    paired,
    proportion_diff,
    tost,
    welch,
    welch_se_df,
    wilcoxon_paired,
)

__all__ = ["Alternative", "ArmTrend", "Interval", "LeastSquares", "SlopeResult", "TestResult",
           "arm_trend", "bootstrap_ci", "bootstrap_diff_ci", "holm", "least_squares", "paired",
           "proportion_diff", "ratio_ci", "seeds_needed", "seeds_to_decide", "slope",
           "stratified_trend", "t_tail", "tost", "welch", "welch_se_df", "wilcoxon_paired"]

