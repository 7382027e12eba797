"""Lines: a slope with intervals, least squares with coefficient standard errors, a trend
across arms with the arms as the unit (and its lack of fit), and a stratified permutation test
for a trend in a rate."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

from service.rulebook.stats._core import NAN, SlopeResult, _sample, _t_ci


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


@dataclass(frozen=True)
class LeastSquares:
    """An OLS fit: coefficients, their covariance (residual variance times (X'X)^-1), df."""

    beta: np.ndarray
    cov: np.ndarray
    df: int
    resid_sd: float

    def coef(self, i: int) -> tuple[float, float]:
        """(estimate, standard error) of coefficient `i`."""
        return float(self.beta[i]), float(math.sqrt(max(0.0, self.cov[i, i])))


def least_squares(design: np.ndarray, y: Sequence[float]) -> LeastSquares | None:
    """OLS of `y` on the columns of `design`; None without a residual degree of freedom."""
    x, v = np.asarray(design, dtype=float), _sample(y, "y")
    df = len(v) - np.linalg.matrix_rank(x)
    if df < 1:
        return None
    beta, *_ = np.linalg.lstsq(x, v, rcond=None)
    resid_sd = float(np.sqrt(np.sum((v - x @ beta) ** 2) / df))
    return LeastSquares(beta, resid_sd**2 * np.linalg.pinv(x.T @ x), int(df), resid_sd)


@dataclass(frozen=True)
class ArmTrend:
    """A slope through arm means: each arm (one tuned configuration) is one observation.

    ``se`` uses the arms' scatter about the line (df = arms - 2), but never less than the
    seeds' own spread implies (the arm means cannot be more precise than their seeds).
    ``lack_of_fit`` is the F-test of the arm means' scatter about the line against the
    within-arm (seed) variance: a small p says the arms differ by more than a line and seed
    noise explain (tuning luck, curvature), which is why the arms, not the seeds, are the unit.
    """

    slope: float
    intercept: float
    se: float
    df: int
    x: tuple[float, ...]
    means: tuple[float, ...]
    sems: tuple[float | None, ...]
    n: tuple[int, ...]
    lack_of_fit: tuple[float, int, int, float] | None  # F, df1, df2, p
    method: str

    def ci(self, level: float = 0.95) -> tuple[float, float] | None:
        if self.df < 1:
            return None
        return _t_ci(self.slope, self.se, self.df, level)


def arm_trend(groups: Sequence[tuple[float, Sequence[float]]]) -> ArmTrend | None:
    """OLS slope of the arm means on x, for (x, seed values) per arm; None below 3 arms with
    values at 3 distinct x (a line through 2 means has no residual to test it with)."""
    arms = [(float(x), _sample(v, "values")) for x, v in groups if len(v)]
    if len({x for x, _ in arms}) < 3:
        return None
    x = np.array([a[0] for a in arms])
    means = np.array([float(v.mean()) for _, v in arms])
    n = np.array([len(v) for _, v in arms])
    k, xc = len(arms), x - x.mean()
    sxx = float((xc**2).sum())
    slope_ = float((xc * (means - means.mean())).sum() / sxx)
    intercept = float(means.mean() - slope_ * x.mean())
    resid = means - (intercept + slope_ * x)
    ms_arms = float((resid**2).sum() / (k - 2))
    within = [(len(v) - 1, float(v.var(ddof=1))) for _, v in arms if len(v) > 1]
    dfw = sum(d for d, _ in within)
    s2w = sum(d * s for d, s in within) / dfw if dfw else NAN
    n_h = float(k / np.sum(1.0 / n))  # harmonic mean of seeds per arm
    floor = s2w / n_h if math.isfinite(s2w) else 0.0
    se = math.sqrt(max(ms_arms, floor) / sxx)
    lof = None
    if dfw and s2w > 0:
        f = ms_arms * n_h / s2w
        lof = (f, k - 2, dfw, float(st.f.sf(f, k - 2, dfw)))
    sems = tuple(float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
                 for _, v in arms)
    return ArmTrend(slope_, intercept, se, k - 2, tuple(map(float, x)), tuple(map(float, means)),
                    sems, tuple(map(int, n)), lof,
                    f"OLS through {k} arm means (arms are the unit), t with df={k - 2}")


def stratified_trend(strata: Sequence[Sequence[tuple[float, bool]]], n_perm: int = 20_000,
                     seed: int = 0) -> tuple[float, float]:
    """(p that events fall with x, p that they rise with x): a permutation test of the
    statistic sum(x * event), permuting the events among the x values within each stratum.

    A stratum is, e.g., one learning rate tried at every batch size: under the null that x
    does not matter, a stratum's events are exchangeable across its x values, whatever the
    stratum's own rate. Monte Carlo with `n_perm` seeded draws and the +1 correction; strata
    with one value or no variation contribute nothing. No events at all: (1, 1).
    """
    rng = np.random.default_rng(seed)
    observed, draws = 0.0, np.zeros(n_perm)
    for stratum in strata:
        x = np.array([float(a) for a, _ in stratum])
        e = np.array([bool(b) for _, b in stratum], dtype=float)
        observed += float((x * e).sum())
        if len(x) < 2 or e.min() == e.max():
            draws += float((x * e).sum())
            continue
        perms = rng.permuted(np.tile(e, (n_perm, 1)), axis=1)
        draws += perms @ x
    tol = 1e-9 * max(1.0, abs(observed))
    less = (1 + np.sum(draws <= observed + tol)) / (1 + n_perm)
    greater = (1 + np.sum(draws >= observed - tol)) / (1 + n_perm)
    return float(min(1.0, less)), float(min(1.0, greater))
