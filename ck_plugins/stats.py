"""Statistics derived from raw samples (never stored in place of them)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NOISY_IQR_OVER_MEDIAN = 0.05  # a point whose per-iteration spread exceeds 5% of its median is flagged noisy


@dataclass(frozen=True)
class Summary:
    median_ms: float
    mean_ms: float
    std_ms: float
    iqr_ms: float
    ci95_low_ms: float  # bootstrap-free: normal approximation of the mean's 95% interval
    ci95_high_ms: float
    count: int

    @property
    def noisy(self) -> bool:
        return self.median_ms > 0 and self.iqr_ms / self.median_ms > NOISY_IQR_OVER_MEDIAN


def summarise(samples_ms) -> Summary:
    values = np.asarray(samples_ms, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("no samples to summarise")
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    half = 1.96 * std / math.sqrt(values.size)
    mean = float(values.mean())
    return Summary(float(median), mean, std, float(q3 - q1), mean - half, mean + half, int(values.size))
