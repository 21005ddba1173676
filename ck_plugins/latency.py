"""Latency percentiles of each configuration, the fastest configuration within a latency budget, and the
throughput-latency Pareto front. Reading only (never imports torch).

The percentiles are of the per-batch latency of the timed iterations of every successful repetition, pooled: they
are steady-state timings of back-to-back batches, not a queueing simulation (no arrival process, no waiting for a
batch to fill), so a p99 here is a lower bound on what a server with that batch size would see.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats
from .readpoints import KEY, Loaded

PERCENTILES = (50, 90, 99)
COLUMNS = ["images_per_second", *(f"latency_p{q}_ms" for q in PERCENTILES), "iterations"]
STEADY_STATE = ("steady-state timings of back-to-back batches (every timed iteration of every repetition), not a "
                "queueing simulation")


def table(loaded: Loaded) -> pd.DataFrame:
    """Per configuration (KEY): images per second (from the point's time) and p50/p90/p99 of the per-batch latency
    in ms, from every timed iteration kept (nan where the points kept none: legacy CK-Caffe data)."""
    runs = loaded.successful()
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS, index=pd.MultiIndex.from_tuples([], names=KEY))
    keys = pd.MultiIndex.from_frame(runs[KEY])
    codes, uniques = pd.factorize(keys)
    rids = runs["rid"] if "rid" in runs else [None] * len(runs)  # frames built without row ids keep no samples
    kept = [(code, loaded.samples.get(rid)) for code, rid in zip(codes, rids)]
    kept = [(code, s) for code, s in kept if s is not None and len(s)]
    times = stats.point_times_ms(runs["time_ms"].groupby(codes)).to_numpy()  # each configuration's one time
    batch = np.asarray([k[KEY.index("batch_size")] for k in uniques], dtype=float)
    frame = pd.DataFrame({"images_per_second": 1e3 * batch / times}, index=pd.MultiIndex.from_tuples(list(uniques),
                                                                                                     names=KEY))
    percentiles = np.full((len(uniques), len(PERCENTILES)), np.nan)
    iterations = np.zeros(len(uniques), dtype=int)
    if kept:
        which = np.concatenate([np.full(len(s), code) for code, s in kept])
        values = np.concatenate([s for _, s in kept])
        order = np.lexsort((values, which))
        which, values = which[order], values[order]
        starts = np.searchsorted(which, np.arange(len(uniques)))
        ends = np.searchsorted(which, np.arange(len(uniques)), side="right")
        for code in np.flatnonzero(ends > starts):
            percentiles[code] = np.percentile(values[starts[code]:ends[code]], PERCENTILES)
            iterations[code] = ends[code] - starts[code]
    for index, q in enumerate(PERCENTILES):
        frame[f"latency_p{q}_ms"] = percentiles[:, index]
    frame["iterations"] = iterations
    return frame.sort_index()


def within_budget(latency: pd.DataFrame, budget_ms: float) -> pd.DataFrame:
    """Per (platform, model): the configuration with the most images per second whose p99 latency is within
    `budget_ms`; where none is, the lowest p99 measured and `within_budget` False."""
    rows = []
    for (platform, model), part in latency.groupby(level=["platform", "model"], observed=True):
        part = part[part["latency_p99_ms"].notna()]
        if part.empty:
            continue
        inside = part[part["latency_p99_ms"] <= budget_ms]
        choice = inside["images_per_second"].idxmax() if len(inside) else part["latency_p99_ms"].idxmin()
        row = part.loc[choice]
        rows.append({"platform": platform, "model": model, "lib": choice[2], "batch_size": int(choice[3]),
                     "images_per_second": float(row["images_per_second"]),
                     **{f"latency_p{q}_ms": float(row[f"latency_p{q}_ms"]) for q in PERCENTILES},
                     "within_budget": bool(len(inside)), "configurations_within": int(len(inside)),
                     "configurations": int(len(part))})
    return pd.DataFrame(rows)


def pareto(part: pd.DataFrame) -> pd.DataFrame:
    """The configurations no other beats on both counts (more images per second at no more p99 latency), by p99."""
    part = part[part["latency_p99_ms"].notna()].sort_values(["latency_p99_ms", "images_per_second"],
                                                             ascending=[True, False])
    rates = part["images_per_second"].to_numpy()
    before = np.maximum.accumulate(np.r_[-np.inf, rates[:-1]]) if len(rates) else rates
    front = rates > before  # faster than every configuration of lower (or equal) p99
    return part[front]


def summary(latency: pd.DataFrame, budget_ms: float | None) -> dict:
    """For summary.json: what the percentiles are, and the budget's answer where one was given."""
    out = {"latency_percentiles": "p50, p90 and p99 of the per-batch latency: " + STEADY_STATE}
    if budget_ms is not None:
        chosen = within_budget(latency, budget_ms)
        out["latency_budget_ms"] = budget_ms
        out["latency_budget"] = [{k: (stats_round(v) if isinstance(v, float) else v) for k, v in row.items()}
                                 for row in chosen.to_dict("records")]
    return out


def stats_round(value: float) -> float:
    return float(f"{value:.6g}")


def budget_text(row: dict, budget_ms: float) -> str:
    """One console line for a (platform, model) under a budget."""
    figures = (f"{row['images_per_second']:,.0f} img/s, p50 {row['latency_p50_ms']:.3g} ms, p99 "
               f"{row['latency_p99_ms']:.3g} ms")
    if row["within_budget"]:
        return (f"{row['model']} on {row['platform']} within p99 {budget_ms:g} ms: {row['lib']} at batch "
                f"{row['batch_size']} ({figures}; {row['configurations_within']} of {row['configurations']} "
                "configurations fit)")
    return (f"{row['model']} on {row['platform']}: no configuration has p99 within {budget_ms:g} ms; the lowest is "
            f"{row['lib']} at batch {row['batch_size']} ({figures})")
