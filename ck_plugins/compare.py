"""Two runs side by side, and steps across software versions: for each configuration, NEW over OLD with its 95%
interval, a Mann-Whitney U test and a verdict. Reading only (never imports torch).

A verdict of "slower" (or "faster") needs all three: the ratio of point times at least THRESHOLD away from 1
(1.05 or 0.95), its 95% interval (Kalibera & Jones, over the repetitions, as everywhere in the analysis) excluding 1,
and Mann-Whitney's two-sided p below ALPHA. The test runs on the timed iterations where both sides stored them
(asv tests raw samples too: with three repetitions a side, the exact test on repetition times can never go below
p = 0.1), else on the repetition times; the interval, from repetitions, is what keeps correlated iterations honest.
Anything else is "no significant change", or "too few repetitions" where a side has one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import stats
from .readpoints import CLOCKS, KEY, VERSIONS, Loaded

THRESHOLD = 0.05  # a change under 5% is never called one
ALPHA = 0.01  # Mann-Whitney's p under which a difference is significant
SLOWER, FASTER, SAME, TOO_FEW = "slower", "faster", "no significant change", "too few repetitions"


@dataclass(frozen=True)
class Side:
    """One side of a comparison: the repetition times of a configuration and its timed iterations."""
    repetitions_ms: np.ndarray
    samples_ms: np.ndarray | None  # every timed iteration of every repetition; None where a repetition kept none

    @property
    def time_ms(self) -> float:
        return stats.point_time_ms(self.repetitions_ms)


@dataclass(frozen=True)
class Change:
    ratio: float  # NEW time over OLD time: above 1 is slower
    low: float  # its 95% interval (nan with one repetition on a side)
    high: float
    p_value: float  # Mann-Whitney U, two-sided
    tested: str  # "iterations" or "repetitions"
    verdict: str


def change(old: Side, new: Side, threshold: float = THRESHOLD, alpha: float = ALPHA) -> Change:
    """NEW against OLD."""
    from scipy.stats import mannwhitneyu

    ratio = new.time_ms / old.time_ms
    a, b = new.repetitions_ms, old.repetitions_ms
    if min(a.size, b.size) < 2:
        return Change(ratio, math.nan, math.nan, math.nan, "repetitions", TOO_FEW)
    low, high = stats.ratio_interval(a.mean(), a.std(ddof=1), a.size, b.mean(), b.std(ddof=1), b.size, ratio)
    both = new.samples_ms is not None and old.samples_ms is not None
    tested = "iterations" if both else "repetitions"
    p = float(mannwhitneyu(new.samples_ms, old.samples_ms).pvalue if both else mannwhitneyu(a, b).pvalue)
    significant = p < alpha
    verdict = SAME
    if significant and ratio >= 1 + threshold and low > 1:
        verdict = SLOWER
    elif significant and ratio <= 1 - threshold and high < 1:
        verdict = FASTER
    return Change(float(ratio), float(low), float(high), p, tested, verdict)


def sides(loaded: Loaded) -> dict[tuple, Side]:
    """Every configuration's successful repetitions (and their iterations where every one kept them)."""
    runs = loaded.successful()
    out = {}
    for key, group in runs.groupby(KEY, observed=True, sort=True):
        out[key] = _side(group, loaded.samples)
    return out


def _side(group: pd.DataFrame, samples: dict) -> Side:
    kept = [samples.get(rid) for rid in group["rid"]] if "rid" in group else [None]
    iterations = np.concatenate(kept) if kept and all(k is not None for k in kept) else None
    return Side(group["time_ms"].to_numpy(dtype=float), iterations)


def compare(old: Loaded, new: Loaded, threshold: float = THRESHOLD, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per configuration present on both sides: times, ratio, interval, p, verdict; slowest first."""
    before, after = sides(old), sides(new)
    rows = []
    for key in sorted(set(before) & set(after), key=lambda k: tuple(map(str, k))):
        found = change(before[key], after[key], threshold, alpha)
        rows.append({**dict(zip(KEY, key)), "old_ms": before[key].time_ms, "new_ms": after[key].time_ms,
                     "old_repetitions": before[key].repetitions_ms.size,
                     "new_repetitions": after[key].repetitions_ms.size, **found.__dict__})
    frame = pd.DataFrame(rows, columns=[*KEY, "old_ms", "new_ms", "old_repetitions", "new_repetitions",
                                        *Change.__dataclass_fields__])
    return frame.sort_values("ratio", ascending=False, kind="stable").reset_index(drop=True)


def only_in(old: Loaded, new: Loaded) -> tuple[int, int]:
    """How many configurations only OLD has, and only NEW."""
    before, after = set(sides(old)), set(sides(new))
    return len(before - after), len(after - before)


def differences(old: Loaded, new: Loaded) -> dict[str, tuple[list[str], list[str]]]:
    """The software versions and clocks whose values differ between the sides: name -> (OLD's, NEW's)."""
    out = {}
    for name in (*VERSIONS, *CLOCKS):
        values = [known_versions(side.runs[name]) if name in side.runs else [] for side in (old, new)]
        if values[0] != values[1]:
            out[name] = (values[0], values[1])
    return out


def known_versions(values) -> list[str]:
    """The distinct versions recorded in a column (points that record none left out), in release order."""
    return sorted({str(v) for v in values} - {"", "nan", "None"}, key=version_key)


def version_key(value: str):
    """Versions in release order (2.9 before 2.10; cuDNN's 91900 as a number), others after, in text order."""
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(str(value)), "")
    except InvalidVersion:
        return (1, Version("0"), str(value))


# ============================================================================================== regressions
def regressions(loaded: Loaded, threshold: float = THRESHOLD, alpha: float = ALPHA) -> pd.DataFrame:
    """For each (platform, model, lib, batch size) measured under several versions of one piece of software (torch,
    cuDNN, CUDA, the driver): each step between adjacent versions with its verdict, and the other software that
    changed in the same step (a step there cannot be told apart from this one)."""
    runs = loaded.successful()
    rows = []
    for key, group in runs.groupby(KEY, observed=True, sort=True):
        for name in VERSIONS:
            values = group[name].astype(str)
            known = known_versions(values)
            for before, after in zip(known, known[1:]):
                a, b = group[values == before], group[values == after]
                found = change(_side(a, loaded.samples), _side(b, loaded.samples), threshold, alpha)
                rows.append({**dict(zip(KEY, key)), "software": name, "before": before, "after": after,
                             "points_before": a["source"].nunique(), "points_after": b["source"].nunique(),
                             "also_changed": _also_changed(a, b, name), **found.__dict__})
    columns = [*KEY, "software", "before", "after", "points_before", "points_after", "also_changed",
               *Change.__dataclass_fields__]
    return pd.DataFrame(rows, columns=columns)


def _also_changed(a: pd.DataFrame, b: pd.DataFrame, name: str) -> str:
    moved = []
    for other in VERSIONS:
        if other == name:
            continue
        old, new = (known_versions(x[other]) for x in (a, b))
        if old != new:
            moved.append(f"{other} {'/'.join(old) or '?'} -> {'/'.join(new) or '?'}")
    return "; ".join(moved)


def steps(table: pd.DataFrame) -> pd.DataFrame:
    """The significant steps only (slower first, then faster), biggest first."""
    found = table[table["verdict"].isin([SLOWER, FASTER])]
    return found.assign(_effect=np.abs(np.log(found["ratio"]))).sort_values(
        ["verdict", "_effect"], ascending=[False, False], kind="stable").drop(columns="_effect").reset_index(drop=True)


def ratio_text(row) -> str:
    interval = "" if math.isnan(row["low"]) else f" ({row['low']:.3f}-{row['high']:.3f})"
    return f"{row['ratio']:.3f}x{interval}"


def console(table: pd.DataFrame, differences: dict, only: tuple[int, int], threshold: float = THRESHOLD,
            alpha: float = ALPHA) -> str:
    """What `compare` prints: what differs between the sides, then one line per configuration, slowest first."""
    lines = [f"{name}: {', '.join(old) or 'not recorded'} -> {', '.join(new) or 'not recorded'}"
             for name, (old, new) in differences.items()] or ["software versions and clocks: the same on both sides"]
    counts = table["verdict"].value_counts()
    lines.append(f"{len(table)} configurations in both ({only[0]} only in OLD, {only[1]} only in NEW): "
                 + ", ".join(f"{counts.get(v, 0)} {v}" for v in (SLOWER, FASTER, SAME, TOO_FEW) if counts.get(v, 0)))
    lines.append(f"ratio: NEW time over OLD time (above 1: slower), 95% interval; a verdict needs at least "
                 f"{threshold:.0%}, an interval excluding 1 and Mann-Whitney p < {alpha:g}")
    shown = pd.DataFrame({
        "verdict": table["verdict"], "ratio (95% interval)": [ratio_text(r) for r in table.to_dict("records")],
        "p": table["p_value"].map(lambda p: "n/a" if math.isnan(p) else f"{p:.2g}"), "on": table["tested"],
        "old ms": table["old_ms"].map("{:.4g}".format), "new ms": table["new_ms"].map("{:.4g}".format),
        "configuration": table["model"] + " " + table["lib"] + " batch " + table["batch_size"].astype(str)
        + " on " + table["platform"]})
    return "\n".join(lines) + "\n" + shown.to_string(index=False)
