"""Bootstrap intervals: of a statistic, of a difference of means, of a ratio of means."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats as st

from service.rulebook.stats._core import NAN, Interval, _sample


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

