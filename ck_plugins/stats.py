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
