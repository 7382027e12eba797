"""service.rulebook.stats against scipy, textbook values, hand computations and simulation."""

import math

import numpy as np
import pytest
from scipy import stats as st

from service.rulebook.stats import (
    TestResult,
    arm_trend,
    bootstrap_ci,
    bootstrap_diff_ci,
    holm,
    least_squares,
    paired,
    proportion_diff,
    ratio_ci,
    seeds_needed,
    seeds_to_decide,
    slope,
    stratified_trend,
    t_tail,
    tost,
    welch,
    wilcoxon_paired,
)

# Wikipedia "Welch's t-test", examples 1 and 3 (t, df, p rounded as published).
WELCH_1 = ([27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0,
            21.7, 21.4],
           [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9,
            20.5, 24.4])
WELCH_3 = ([19.8, 20.4, 19.6, 17.8, 18.5, 18.9, 18.3, 18.9, 19.5, 22.0],
           [28.2, 26.6, 20.1, 23.3, 25.2, 22.1, 17.7, 27.6, 20.6, 13.7, 23.2, 17.5, 20.6,
            18.0, 23.9, 21.6, 24.3, 20.4, 23.9, 13.3])


# ---------------------------------------------------------------- Welch


@pytest.mark.parametrize(("data", "t", "df", "p"),
                         [(WELCH_1, -2.46, 25.0, 0.021), (WELCH_3, -2.22, 24.5, 0.036)])
def test_welch_textbook(data: tuple[list[float], list[float]], t: float, df: float,
                        p: float) -> None:
    res = welch(*data)
    assert res.statistic == pytest.approx(t, abs=0.01)  # published to 2 places
    assert res.df == pytest.approx(df, abs=0.05)
    assert res.p_value == pytest.approx(p, abs=0.001)
    assert res.n == (len(data[0]), len(data[1]))


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_welch_matches_scipy(alternative: str) -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.0, 1.0, 7), rng.normal(0.8, 2.5, 11)
    res = welch(a, b, alternative=alternative)  # type: ignore[arg-type]
    ref = st.ttest_ind(a, b, equal_var=False, alternative=alternative)
    assert res.effect == pytest.approx(a.mean() - b.mean())
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-10)
    # ci is always the two-sided interval, whatever the alternative
    two = st.ttest_ind(a, b, equal_var=False).confidence_interval(0.9)
    assert welch(a, b, alternative=alternative, level=0.9).ci == pytest.approx(  # type: ignore[arg-type]
        (two.low, two.high), rel=1e-10)


def test_welch_ci_covers_true_difference_on_large_sample() -> None:
    rng = np.random.default_rng(7)
    res = welch(rng.normal(1.3, 1.0, 4000), rng.normal(1.0, 2.0, 3000))
    assert res.ci is not None
    assert res.ci[0] < 0.3 < res.ci[1]
    assert res.ci[1] - res.ci[0] < 0.2
    assert res.p_value is not None and res.p_value < 1e-6


def test_welch_guards() -> None:
    small = welch([1.0], [1.0, 2.0, 3.0])
    assert small.p_value is None and small.ci is None
    assert "needs at least 2" in small.method and small.effect == pytest.approx(-1.0)
    assert math.isnan(welch([], [1.0, 2.0]).effect)
    differ = welch([2.0, 2.0, 2.0], [1.0, 1.0])
    assert differ.p_value == 0.0 and differ.ci == (1.0, 1.0) and "zero variance" in differ.method
    assert welch([2.0, 2.0], [2.0, 2.0]).p_value == 1.0
    assert welch([2.0, 2.0], [1.0, 1.0], alternative="less").p_value == 1.0
    with pytest.raises(ValueError, match="alternative"):
        welch([1.0, 2.0], [1.0, 3.0], alternative="greter")  # type: ignore[arg-type]
    one_constant = welch([2.0, 2.0, 2.0], [1.0, 1.5, 0.5])  # one zero variance is fine
    assert one_constant.df == pytest.approx(2.0)
    with pytest.raises(ValueError, match="non-finite"):
        welch([1.0, float("nan")], [1.0, 2.0])


def test_welch_null_calibration() -> None:
    rng = np.random.default_rng(2024)
    ps = [welch(rng.normal(0, 1, 8), rng.normal(0, 1, 8)).p_value for _ in range(200)]
    rate = np.mean([p is not None and p < 0.05 for p in ps])
    assert 0.02 <= rate <= 0.09


# ---------------------------------------------------------------- paired, Wilcoxon, TOST


def test_paired_matches_ttest_rel() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(0.9, 0.02, 6)
    b = a - 0.01 + rng.normal(0, 0.005, 6)
    res = paired(a, b)
    ref = st.ttest_rel(a, b)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert res.ci == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert res.n == (6, 6) and res.df == 5


def test_paired_guards() -> None:
    assert paired([1.0], [2.0]).p_value is None
    assert paired([2.0, 3.0], [1.0, 2.0]).p_value == 0.0  # every difference exactly 1
    assert paired([1.0, 2.0], [1.0, 2.0]).p_value == 1.0
    with pytest.raises(ValueError, match="length"):
        paired([1.0, 2.0], [1.0])


def test_wilcoxon_paired() -> None:
    a = [0.91, 0.93, 0.90, 0.95, 0.92, 0.94, 0.96]
    b = [0.90, 0.90, 0.91, 0.92, 0.90, 0.91, 0.92]
    res = wilcoxon_paired(a, b)
    assert res.p_value == pytest.approx(st.wilcoxon(np.subtract(a, b)).pvalue)
    assert res.effect > 0 and res.ci is None
    assert wilcoxon_paired([1.0, 2.0], [1.0, 2.0]).p_value == 1.0
    assert wilcoxon_paired([1.0, 2.0], [0.0, 2.0]).p_value is None


def test_tost_equal_and_shifted() -> None:
    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 1, 200), rng.normal(0, 1, 200)
    same = tost(a, b, margin=0.5)
    assert same.equivalent is True and same.p_value is not None and same.p_value < 0.05
    assert same.ci is not None and -0.5 < same.ci[0] < same.ci[1] < 0.5
    shifted = tost(a + 1.0, b, margin=0.5)
    assert shifted.equivalent is False and shifted.p_value is not None
    assert shifted.p_value > 0.5
    # p is the larger of the two one-sided Welch tests
    lower = st.ttest_ind(a + 0.5, b, equal_var=False, alternative="greater").pvalue
    upper = st.ttest_ind(a - 0.5, b, equal_var=False, alternative="less").pvalue
    assert same.p_value == pytest.approx(max(lower, upper), rel=1e-9)


def test_tost_guards() -> None:
    assert tost([1.0, 1.0], [1.05, 1.05], margin=0.1).equivalent is True
    assert tost([1.0, 1.0], [1.5, 1.5], margin=0.1).equivalent is False
    small = tost([1.0], [1.0, 2.0], margin=0.1)
    assert small.p_value is None and small.equivalent is None
    with pytest.raises(ValueError):
        tost([1.0, 2.0], [1.0, 2.0], margin=0.0)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_deterministic_and_sensible() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 1.0, 40)
    first = bootstrap_ci(x, seed=1, n_resamples=2000)
    assert tuple(first) == tuple(bootstrap_ci(x, seed=1, n_resamples=2000))
    assert tuple(first) != tuple(bootstrap_ci(x, seed=2, n_resamples=2000))
    low, high = first
    assert low < x.mean() < high and "BCa" in first.method
    t_ci = st.ttest_1samp(x, 0).confidence_interval(0.95)
    assert low == pytest.approx(t_ci.low, abs=0.15) and high == pytest.approx(t_ci.high, abs=0.15)
    med = bootstrap_ci(x, stat=np.median, n_resamples=2000)
    assert med.estimate == pytest.approx(np.median(x))


def test_bootstrap_degenerate_inputs() -> None:
    const = bootstrap_ci([3.0, 3.0, 3.0, 3.0])
    assert tuple(const) == (3.0, 3.0) and "zero-width" in const.method
    single = bootstrap_ci([3.0])
    assert math.isnan(single.low) and single.estimate == 3.0
    two = bootstrap_ci([1.0, 2.0], n_resamples=1000)
    assert two.low >= 1.0 and two.high <= 2.0 and "percentile" in two.method
    assert tuple(bootstrap_diff_ci([2.0, 2.0], [1.0, 1.0, 1.0])) == (1.0, 1.0)


def test_bootstrap_diff_ci_covers_truth() -> None:
    rng = np.random.default_rng(8)
    iv = bootstrap_diff_ci(rng.normal(1.5, 1, 300), rng.normal(1.0, 1, 300), n_resamples=2000)
    assert iv.low < 0.5 < iv.high and iv.low > 0.2


def test_ratio_ci() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.normal(1100, 10, 10), rng.normal(1000, 10, 10)
    iv = ratio_ci(a, b, n_resamples=2000)
    assert iv.estimate == pytest.approx(a.mean() / b.mean())
    assert iv.low < iv.estimate < iv.high and 1.05 < iv.low and iv.high < 1.15
    with pytest.raises(ValueError):
        ratio_ci([1.0, 2.0], [0.0, 1.0])


# ---------------------------------------------------------------- slope


@pytest.mark.parametrize("true_slope", [1.0, 0.5])
def test_slope_recovers_truth(true_slope: float) -> None:
    rng = np.random.default_rng(int(true_slope * 10))
    batch = np.repeat([32.0, 64, 128, 256, 512, 1024, 2048], 3)
    lr = 0.1 * (batch / 32) ** true_slope * np.exp(rng.normal(0, 0.15, batch.size))
    res = slope(batch, lr, n_boot=2000)
    assert res.slope == pytest.approx(true_slope, abs=0.1)
    assert res.ci is not None and res.ci_t is not None
    assert res.ci[0] < true_slope < res.ci[1] and res.ci_t[0] < true_slope < res.ci_t[1]
    ref = st.linregress(np.log(batch), np.log(lr))
    assert res.slope == pytest.approx(ref.slope) and res.r2 == pytest.approx(ref.rvalue**2)
    assert res.n == batch.size
    other = 0.5 if true_slope == 1.0 else 1.0
    assert not res.ci[0] - 0.2 <= other <= res.ci[1] + 0.2  # the other rule is far outside


def test_slope_deterministic_and_guards() -> None:
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [1.1, 1.9, 3.2, 3.9, 5.1]
    assert slope(x, y, log=False, seed=3) == slope(x, y, log=False, seed=3)
    assert slope(x, y, log=False).slope == pytest.approx(st.linregress(x, y).slope)
    flat = slope([32.0, 64.0, 128.0], [0.1, 0.1, 0.1])
    assert flat.slope == 0.0 and flat.ci_t == (0.0, 0.0)
    two = slope([1.0, 2.0], [1.0, 2.0])
    assert two.ci is None and two.ci_t is None and two.slope == pytest.approx(1.0)
    assert math.isnan(slope([4.0, 4.0], [1.0, 2.0]).slope)
    with pytest.raises(ValueError, match="positive"):
        slope([1.0, -2.0], [1.0, 2.0])


# ---------------------------------------------------------------- Holm, proportions


def test_holm_hand_computed() -> None:
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> monotone .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_holm_none_passes_through() -> None:
    out = holm([None, 0.01, None, 0.04])
    assert out[0] is None and out[2] is None
    assert out[1] == pytest.approx(0.02) and out[3] == pytest.approx(0.04)  # m = 2
    with pytest.raises(ValueError):
        holm([float("nan"), 0.1])


def test_proportion_diff() -> None:
    res = proportion_diff(56, 70, 48, 80)  # Newcombe (1998) example: 0.0524 to 0.3339
    assert res.effect == pytest.approx(0.2)
    assert res.ci == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert res.p_value == pytest.approx(st.fisher_exact([[56, 14], [48, 32]]).pvalue)
    assert proportion_diff(9, 10, 3, 10).ci == pytest.approx((0.1705, 0.8090), abs=1e-4)
    greater = proportion_diff(5, 5, 0, 5, alternative="greater")
    assert greater.p_value == pytest.approx(
        st.fisher_exact([[5, 0], [0, 5]], alternative="greater").pvalue)
    zero = proportion_diff(0, 5, 0, 5)
    assert zero.effect == 0.0 and zero.p_value == 1.0 and zero.ci is not None
    assert zero.ci[0] < 0 < zero.ci[1]
    assert proportion_diff(0, 0, 1, 3).p_value is None
    with pytest.raises(ValueError):
        proportion_diff(4, 3, 1, 3)


def test_as_dict_is_json_ready() -> None:
    d = TestResult(float("nan"), None, None, (1, 3), "x").as_dict()
    assert d == {"effect": None, "ci": None, "p_value": None, "n": [1, 3], "method": "x"}


# ---------------------------------------------------------------- planning, verdicts


def test_seeds_needed() -> None:
    n = seeds_needed(1.0, 1.0, 1.0)  # normal formula 15.7 -> 16; exact t-test: 17
    assert n is not None and 16 <= n <= 17
    assert seeds_needed(0.5, 1.0, 1.0) == 64  # the textbook d = 0.5 value
    assert seeds_needed(-0.5, 1.0, 1.0) == 64
    assert seeds_needed(0.0, 1.0, 1.0) is None
    assert seeds_needed(float("nan"), 1.0, 1.0) is None
    assert seeds_needed(0.5, float("nan"), 1.0) is None  # an arm with one seed has no sd
    with pytest.raises(ValueError):
        seeds_needed(0.5, -1.0, 1.0)
    assert seeds_needed(0.1, 0.0, 0.0) == 2
    assert seeds_needed(1.0, 1.0, 1.0, power=0.9) > n  # type: ignore[operator]


def test_t_tail_against_a_threshold() -> None:
    assert t_tail(0.3, 0.1, 10, 0.0, "greater") == pytest.approx(st.t.sf(3.0, 10))
    assert t_tail(0.3, 0.1, 10, 0.5, "less") == pytest.approx(st.t.cdf(-2.0, 10))
    assert t_tail(0.3, 0.0, 10, 0.0, "greater") == 0.0  # exact effect
    assert t_tail(0.3, 0.0, 10, 0.5, "greater") == 1.0


def test_least_squares_matches_linregress() -> None:
    rng = np.random.default_rng(3)
    x = np.arange(10.0)
    y = 2.0 + 0.5 * x + rng.normal(0, 0.3, 10)
    fit = least_squares(np.column_stack([np.ones_like(x), x]), y)
    ref = st.linregress(x, y)
    assert fit.coef(1)[0] == pytest.approx(ref.slope) and fit.df == 8
    assert fit.coef(1)[1] == pytest.approx(ref.stderr)
    assert least_squares(np.ones((1, 1)), [1.0]) is None  # no residual df


def test_arm_trend_uses_arms_as_the_unit() -> None:
    # Three arms, many seeds each, arm means off the line by arm-level noise: the seeds
    # counted as independent would give df = 58 and a tiny p; the arms give df = 1.
    rng = np.random.default_rng(5)
    groups = [(x, list(m + rng.normal(0, 0.01, 20))) for x, m in ((4, 1.0), (6, 1.3),
                                                                   (8, 1.2))]
    trend = arm_trend(groups)
    assert trend is not None and trend.df == 1 and trend.n == (20, 20, 20)
    means = [np.mean(v) for _, v in groups]
    assert trend.slope == pytest.approx(st.linregress([4, 6, 8], means).slope)
    assert trend.se == pytest.approx(st.linregress([4, 6, 8], means).stderr)
    f, d1, d2, p = trend.lack_of_fit
    assert (d1, d2) == (1, 57) and p < 1e-6  # the arms scatter beyond seed noise
    assert arm_trend(groups[:2]) is None
    # Arm means exactly on a line: the se never falls below what the seeds' spread implies.
    exact = arm_trend([(x, [x - 0.1, x + 0.1]) for x in (1.0, 2.0, 3.0)])
    assert exact.se == pytest.approx(math.sqrt(0.02 / 2 / 2))


def test_stratified_trend_permutes_within_strata() -> None:
    falling = [[(1, True), (2, False), (3, False)], [(1, True), (2, True), (3, False)],
               [(1, True), (2, False), (3, False)], [(1, True), (2, True), (3, False)]]
    less, more = stratified_trend(falling, seed=1)
    # Exact: each stratum's arrangement is the most extreme of 3 (or 3) equally likely.
    assert less == pytest.approx((1 / 3) ** 4, rel=0.3) and more > 0.9
    assert stratified_trend([[(1, False), (2, False)]]) == (1.0, 1.0)  # no events at all
    assert stratified_trend(falling, seed=1) == (less, more)  # seeded


def test_seeds_to_decide_is_planned_for_the_margin() -> None:
    detect, equiv = seeds_to_decide(0.005, 0.004, 0.004, alpha=0.05 / 20)
    # Normal approximation for a one-sided test at alpha/20 and 80% power.
    z = st.norm.ppf(1 - 0.05 / 20) + st.norm.ppf(0.8)
    assert detect >= math.ceil(z**2 * 2 * 0.004**2 / 0.005**2)
    assert equiv > detect  # TOST at a true difference of 0 needs more
    assert seeds_to_decide(0.005, 0.004, 0.004, alpha=0.05)[0] < detect
    assert seeds_to_decide(0.0, 1, 1, alpha=0.05) is None
