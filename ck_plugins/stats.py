"""Statistics derived from raw samples (never stored in place of them), and the one definition of a point's time.

A point's time is the median of its repetitions' times; a repetition's time is the median of its timed iterations
(a legacy CK-Caffe repetition stores one time, its own average, and that is its time). The uncertainty is the
spread of the repetitions. A point is noisy when its repetitions disagree by more than 5% of its time, or when the
iterations inside one repetition spread (interquartile range) by more than 5% of their median.
Every consumer (the programs' tables, tmp-ck-timer.json, the analysis, the service, the adaptive planner) uses
`point_time` or, on a pandas groupby of repetition times, `point_times_ms`: the same median.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NOISY = 0.05  # relative spread above which a point is flagged noisy


def repetition_time_ms(samples_ms) -> float:
    """One repetition's time: the median of its per-iteration times."""
    values = np.asarray(samples_ms, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("a repetition without timed iterations has no time")
    return float(np.median(values))


def point_time_ms(repetition_times_ms) -> float:
    """THE time of a point: the median of its repetitions' times."""
    values = np.asarray(repetition_times_ms, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("a point without a successful repetition has no time")
    return float(np.median(values))


def point_times_ms(grouped_repetition_times):
    """`point_time_ms` for every group of a pandas groupby over repetition times (vectorised, same median)."""
    return grouped_repetition_times.median()


def relative_iqr(samples_ms) -> float:
    """Interquartile range over median of one repetition's iterations (nan with fewer than 4)."""
    values = np.asarray(samples_ms, dtype=float).ravel()
    if values.size < 4:
        return math.nan
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float((q3 - q1) / median) if median > 0 else math.nan


def noisy(repetition_spread, iqr_over_median):
    """The one noise flag: repetitions disagree, or iterations inside a repetition spread, by more than 5% (scalars
    or numpy arrays; nan, for what was not measured, never flags)."""
    spread = np.nan_to_num(np.asarray(repetition_spread, dtype=float), nan=0.0)
    iqr = np.nan_to_num(np.asarray(iqr_over_median, dtype=float), nan=0.0)
    return (spread > NOISY) | (iqr > NOISY)


@dataclass(frozen=True)
class PointTime:
    time_ms: float  # the point's time (median of repetition times)
    repetition_ms: tuple[float, ...]  # each repetition's time
    spread: float  # (max - min) of the repetition times over the point's time: the uncertainty
    iqr_over_median: float  # the largest within-repetition IQR over median (nan without per-iteration samples)
    mean_ms: float  # mean and standard deviation of the repetition times (the seed notebook's mean/std)
    std_ms: float

    @property
    def noisy(self) -> bool:
        return bool(noisy(self.spread, self.iqr_over_median))


def point_time(samples_per_repetition) -> PointTime:
    """From raw samples, [repetition][iteration] in ms."""
    repetitions = [repetition_time_ms(s) for s in samples_per_repetition]
    iqrs = [relative_iqr(s) for s in samples_per_repetition]
    return from_repetitions(repetitions, max((v for v in iqrs if not math.isnan(v)), default=math.nan))


def from_repetitions(repetition_ms, iqr_over_median: float = math.nan) -> PointTime:
    """From the repetitions' times alone (legacy points keep no per-iteration samples)."""
    values = np.asarray(repetition_ms, dtype=float)
    time_ms = point_time_ms(values)
    spread = float((values.max() - values.min()) / time_ms) if time_ms > 0 else math.nan
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return PointTime(time_ms, tuple(map(float, values)), spread, iqr_over_median, float(values.mean()), std)


# ============================================================================================ intervals
# Ratios of times carry a 95% confidence interval from the repetitions (a repetition is the independent unit; the
# iterations inside one are not). The interval is Fieller's for a ratio of means, as Kalibera & Jones ("Rigorous
# benchmarking in reasonable time", ISMM 2013) give it, with Student's t at Welch-Satterthwaite's degrees of freedom;
# with a covariance term where numerator and denominator share repetitions (the ideal adaptive solution). The ratio
# shown stays the ratio of point times (medians); where medians and means disagree so much that it falls outside
# the interval, the interval is widened to hold it. One repetition gives no interval (nan).
LEVEL = 0.95


def t_quantile(df, level: float = LEVEL):
    """Two-sided Student's t quantile (nan where df is not positive)."""
    from scipy.stats import t

    df = np.asarray(df, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(df > 0, t.ppf(0.5 + level / 2, np.where(df > 0, df, 1.0)), np.nan)


def satterthwaite_df(variances, dfs):
    """Welch-Satterthwaite degrees of freedom of a sum of independent estimates, from each one's variance (of the
    estimate) and degrees of freedom (stacked along the first axis; arrays broadcast): inf where nothing varies,
    nan where an estimate has no degree of freedom (one repetition)."""
    v, d = np.asarray(variances, dtype=float), np.asarray(dfs, dtype=float)
    total = v.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = total ** 2 / (v ** 2 / d).sum(axis=0)
    # identical repetitions everywhere: no spread, the interval is the ratio itself
    return np.where(~(d > 0).all(axis=0), np.nan, np.where(total == 0, np.inf, df))


def welch_df(var_a, n_a, var_b, n_b):
    """Welch-Satterthwaite degrees of freedom of a sum of two means' variances (var: of the samples)."""
    n_a, n_b = np.asarray(n_a, dtype=float), np.asarray(n_b, dtype=float)
    return satterthwaite_df([np.asarray(var_a, dtype=float) / n_a, np.asarray(var_b, dtype=float) / n_b],
                            [n_a - 1, n_b - 1])


def fieller(a, b, var_a, var_b, df, cov=0.0, level: float = LEVEL):
    """The interval of a/b from estimates a and b, their variances (of the estimates, not of the samples), their
    covariance and the degrees of freedom. Arrays broadcast; (low, high), nan where df is undefined and
    (nan, nan) where the denominator's interval holds zero (the ratio is unbounded)."""
    a, b, var_a, var_b, cov = (np.asarray(x, dtype=float) for x in (a, b, var_a, var_b, cov))
    t = np.where(np.isinf(np.asarray(df, dtype=float)), 0.0, t_quantile(np.where(np.isinf(df), 1.0, df), level))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = a / b
        g = t ** 2 * var_b / b ** 2
        disc = var_a - 2 * ratio * cov + ratio ** 2 * var_b - g * (var_a - np.where(var_b > 0, cov ** 2 / var_b, 0.0))
        centre = ratio - np.where(var_b > 0, g * cov / var_b, 0.0)
        half = t / np.abs(b) * np.sqrt(np.maximum(disc, 0.0))
        low, high = (centre - half) / (1 - g), (centre + half) / (1 - g)
    bad = ~(g < 1)
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def ratio_interval(mean_a, std_a, n_a, mean_b, std_b, n_b, ratio=None, level: float = LEVEL):
    """Interval of (time a)/(time b) for two independent points, from their repetitions' mean, standard deviation
    and count (arrays broadcast). `ratio`, the figure shown (of point times), is held inside the interval."""
    var_a, var_b = np.square(np.asarray(std_a, dtype=float)), np.square(np.asarray(std_b, dtype=float))
    df = welch_df(var_a, n_a, var_b, n_b)
    low, high = fieller(mean_a, mean_b, var_a / np.asarray(n_a, dtype=float), var_b / np.asarray(n_b, dtype=float),
                        df, level=level)
    return holding(low, high, ratio)


def holding(low, high, ratio):
    """The interval widened where needed to hold the figure shown (nan stays nan)."""
    if ratio is None:
        return low, high
    ratio = np.asarray(ratio, dtype=float)
    return np.fmin(low, np.where(np.isnan(low), np.nan, ratio)), np.fmax(high, np.where(np.isnan(high), np.nan, ratio))


def mean_interval(mean, std, n, level: float = LEVEL):
    """Student's t interval of a mean of n repetitions (nan with one)."""
    n = np.asarray(n, dtype=float)
    half = t_quantile(n - 1, level) * np.asarray(std, dtype=float) / np.sqrt(n)
    return np.asarray(mean, dtype=float) - half, np.asarray(mean, dtype=float) + half


def throughput_interval(mean_ms, std_ms, n, images, shown):
    """The interval of images per second from a time's repetitions (mean, standard deviation, count of a time for
    `images` images): the reciprocal of the mean's interval, held around the figure `shown`; nan with one repetition
    and, for its upper end, where the time's interval reaches zero (unbounded)."""
    low_ms, high_ms = mean_interval(mean_ms, std_ms, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = 1e3 * np.asarray(images, dtype=float)
        low, high = holding(rate / np.where(high_ms > 0, high_ms, np.nan), rate / low_ms, shown)
    return low, np.where(low_ms > 0, high, np.nan)


def significance(low, high) -> np.ndarray:
    """Per interval of a ratio: 'faster'/'slower' is not said here; 'significant' when the interval excludes 1,
    'no significant difference' when it holds 1, 'no interval' without one."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return np.where(np.isnan(low) | np.isnan(high), "no interval",
                    np.where((low <= 1) & (high >= 1), "no significant difference", "significant"))
