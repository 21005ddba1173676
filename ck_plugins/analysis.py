"""The seed notebook's tables, and more, from readpoints frames. Vectorised pandas; no torch.

Every table is keyed by (platform, model, lib, batch size): points of two GPUs are never pooled. A point's time
is `stats.point_times_ms` (the median of its repetitions); times are milliseconds per batch (`time_ms`) and per
image (`time_per_image_ms`).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import pandas as pd

from . import latency
from . import stats as statistics
from .libnames import describe, is_harness
from .readpoints import INDEX, KEY, Loaded

CONFIG = ["platform", "model", "lib"]
MODEL = ["platform", "model"]
GOOD_ENOUGH = 0.05  # a batch whose time per image is within 5% of the best is "good enough"
LAYER_STATISTICS = ("median", "min", "mean")  # over repetitions: ours (the point's time), the seed notebook's, mean
MATCHING_LAYERS = 0.9  # a lib joins the ideal solution when the layers it shares with the reference hold 90% of the time


def time_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the point's time, the repetitions' mean, std and 95% interval, the noise flag."""
    ok = runs[runs["success"]]
    grouped = ok.groupby(level=KEY, observed=True)
    times = grouped["time_ms"]
    table = pd.DataFrame({"time_ms": statistics.point_times_ms(times), "time_ms_mean": times.mean(),
                          "time_ms_std": times.std().fillna(0.0), "repetitions": times.count()})
    table["spread"] = (times.max() - times.min()) / table["time_ms"]
    table["iqr_over_median"] = grouped["iqr_over_median"].max()
    table["noisy"] = statistics.noisy(table["spread"].to_numpy(), table["iqr_over_median"].to_numpy())
    table["ci95_low_ms"], table["ci95_high_ms"] = statistics.mean_interval(
        table["time_ms_mean"], table["time_ms_std"], table["repetitions"])
    batch = table.index.get_level_values("batch_size").to_numpy()
    table["time_per_image_ms"] = table["time_ms"] / batch
    table["time_per_image_ms_mean"] = table["time_ms_mean"] / batch
    table["time_per_image_ms_low"], table["time_per_image_ms_high"] = (table["ci95_low_ms"] / batch,
                                                                       table["ci95_high_ms"] / batch)
    table["time_per_image_ms_std"] = table["time_ms_std"] / batch
    table["images_per_second"] = 1e3 / table["time_per_image_ms"]
    table["memory_mbytes"] = grouped["memory_mbytes"].mean()
    table["memory_per_image_mbytes"] = table["memory_mbytes"] / batch
    table["peak_share"] = grouped["peak_share"].mean()
    # GPU energy over the timed repetitions (NVML), one figure per point; images/J = images per second per watt
    table["joules_per_image"] = (pd.to_numeric(grouped["joules_per_image"].mean(), errors="coerce")
                                 if "joules_per_image" in ok.columns else np.nan)  # runs frames built elsewhere
    table["images_per_joule"] = 1.0 / table["joules_per_image"]
    return table


def accuracy(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration that recorded one: the output's relative logit error against fp32 and, where the network
    held real weights, the share of images whose top-1 class agrees with fp32; what the weights were."""
    if "relative_error" not in runs.columns:
        return pd.DataFrame()
    ok = runs[runs["success"] & runs["relative_error"].notna()]
    grouped = ok.groupby(level=KEY, observed=True)
    return pd.DataFrame({"relative_error": grouped["relative_error"].median(),
                         "top1_agreement": grouped["top1_agreement"].median(), "weights": grouped["weights"].first()})


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    failed = runs[~runs["success"]].reset_index()
    return failed.groupby(KEY, observed=True)["error"].first().to_frame()


def time_per_batch(stats: pd.DataFrame) -> pd.DataFrame:
    """Rows (platform, model, lib), columns batch sizes: the point's time, ms per batch."""
    return stats["time_ms"].unstack("batch_size")


def time_per_image(stats: pd.DataFrame) -> pd.DataFrame:
    return stats["time_per_image_ms"].unstack("batch_size")


def best_time_per_image(stats: pd.DataFrame) -> pd.DataFrame:
    """Per (platform, model, lib): the least time per image, the batch size that gives it, and images per second
    with its 95% interval (from the repetitions' mean interval; one repetition gives none)."""
    where = stats["time_per_image_ms"].groupby(level=CONFIG, observed=True).idxmin()
    best = stats.loc[where.to_list(), ["time_per_image_ms", "time_per_image_ms_mean", "time_per_image_ms_std",
                                       "repetitions", "spread", "noisy"]]
    best = best.reset_index("batch_size").rename(columns={"batch_size": "best_batch_size"})
    best["images_per_second"] = 1e3 / best["time_per_image_ms"]
    best["images_per_second_ci_low"], best["images_per_second_ci_high"] = statistics.throughput_interval(
        best["time_per_image_ms_mean"], best["time_per_image_ms_std"], best["repetitions"], 1, best["images_per_second"])
    return best


def speedup(best: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per (platform, model) (rows) and lib (columns): the baseline lib's best time per image over each lib's, on
    the same platform."""
    return _per_lib(best, baseline, "time_per_image_ms").rdiv(_per_lib(best, baseline, "time_per_image_ms")[baseline],
                                                              axis=0)


def speedup_interval(best: pd.DataFrame, baseline: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 95% interval of every `speedup` (stats.ratio_interval over the two points' repetitions): (low, high)
    tables of the same shape."""
    mean, std, n = (_per_lib(best, baseline, c) for c in ("time_per_image_ms_mean", "time_per_image_ms_std",
                                                          "repetitions"))
    ratio = speedup(best, baseline)
    column = lambda t: np.broadcast_to(t[[baseline]].to_numpy(), t.shape)  # noqa: E731
    low, high = statistics.ratio_interval(column(mean), column(std), column(n), mean.to_numpy(), std.to_numpy(),
                                          n.to_numpy(), ratio.to_numpy())
    return (pd.DataFrame(low, index=ratio.index, columns=ratio.columns),
            pd.DataFrame(high, index=ratio.index, columns=ratio.columns))


def _per_lib(best: pd.DataFrame, baseline: str, column: str) -> pd.DataFrame:
    table = best[column].unstack("lib").astype(float)
    if baseline not in table.columns:
        raise ValueError(f"baseline lib {baseline!r} is not in the data; expected one of {', '.join(table.columns)}")
    return table


def layer_time_per_image(layers: pd.DataFrame, platform: str, model: str, libs: list[str], batch_sizes: list[int],
                         lower: float = 0.0, upper: float = 1.0, direction: str = "forward",
                         statistic: str = "median") -> pd.DataFrame:
    """Rows: layers; columns: (lib, batch size); ms per image (`statistic` over repetitions). Keeps layers whose
    share of a column's total lies within [lower, upper] in at least one column (the notebook's filter)."""
    part = layers[(layers["platform"] == platform) & (layers["model"] == model) & layers["lib"].isin(libs)
                  & layers["batch_size"].isin(batch_sizes) & (layers["direction"] == direction)]
    per = part.groupby(["label", "lib", "batch_size"], observed=True)["time_ms"].agg(statistic)
    per = per / per.index.get_level_values("batch_size")
    table = per.unstack(["lib", "batch_size"])
    share = table / table.sum()
    keep = ((share >= lower) & (share <= upper)).any(axis=1)
    return table[keep]


def top_layers(table: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The `n` layers with the most time in any column, in decreasing order, and one row "others (K layers)" with
    the sum of the rest: every layer's time is in the table, and a plot of it stays readable."""
    order = table.max(axis=1).sort_values(ascending=False).index
    top = table.loc[order[:n]]
    if len(order) > n:
        top = pd.concat([top, table.loc[order[n:]].sum().to_frame(f"others ({len(order) - n} layers)").T])
    return top


def trusted_layers(layers: pd.DataFrame, runs: pd.DataFrame, max_overhead: float = 0.2,
                   direction: str = "forward") -> tuple[pd.DataFrame, float]:
    """The per-layer rows of repetitions whose per-layer sum is within `max_overhead` of the timed pass, and the
    share of repetitions dropped. Where the GPU is launch-bound, timing every layer costs more than the layers,
    so such rows would make per-layer plans look worse than they are."""
    part = layers[layers["direction"] == direction]
    sums = part.groupby(INDEX, observed=True)["time_ms"].sum()
    share = sums / runs["time_ms"].reindex(sums.index)
    good = share[share <= 1 + max_overhead].index
    kept = part.set_index(INDEX)
    kept = kept[kept.index.isin(good)].reset_index()
    return kept, (1 - len(good) / len(share)) if len(share) else 0.0


# -------------------------------------------------------------------------------------- ideal adaptive solution
@dataclass
class Ideal:
    summary: pd.DataFrame  # per (platform, model): ms per image spent in each lib, the total, the best single lib
    choices: pd.DataFrame  # per (platform, model, layer): the lib chosen, its batch size and ms per image
    excluded: pd.DataFrame  # (platform, model, lib, reason): libs whose layers cannot be matched by name
    absent: dict = field(default_factory=dict)  # (platform, model) -> why there is no ideal solution


IDEAL_VERSUS = ("same-layers", "timed-total")  # ours (the default), the seed notebook's


def ideal_adaptive(layers: pd.DataFrame, stats: pd.DataFrame, libs: list[str] | None = None,
                   direction: str = "forward", statistic: str = "median", versus: str = "same-layers") -> Ideal:
    """The notebook's ideal adaptive solution: each layer on the lib with its least time per image (at that lib's
    best batch size for the layer; `statistic` over repetitions, "min" being the notebook's). Layers are matched by
    name; libs whose layer names do not match (fused engines) are left out and named. Per (platform, model) it
    needs two libs. `versus` says what it is compared with: "same-layers", the best single lib's per-layer sum over
    the layers all libs have (which the ideal can never exceed), or "timed-total", the seed notebook's: every layer
    any lib has, over the best lib's timed time per image (the mean of its repetitions at the batch size whose mean
    is least). The ratio comes with its 95% interval (stats.fieller over the repetitions' per-layer sums).
    Pass the rows of `trusted_layers` to leave out per-layer data the profiling pass distorted."""
    if statistic not in LAYER_STATISTICS:
        raise ValueError(f"layer statistic {statistic!r}; expected one of {', '.join(LAYER_STATISTICS)}")
    if versus not in IDEAL_VERSUS:
        raise ValueError(f"ideal versus {versus!r}; expected one of {', '.join(IDEAL_VERSUS)}")
    part = layers[layers["direction"] == direction]
    if libs is not None:
        part = part[part["lib"].isin(libs)]
    grouped = part.groupby(MODEL + ["label", "lib", "batch_size"], observed=True)["time_ms"]
    per_batch = grouped.agg(statistic)
    frame = (per_batch / per_batch.index.get_level_values("batch_size")).rename("time_per_image_ms").reset_index()
    frame["spread"] = ((grouped.max() - grouped.min()) / statistics.point_times_ms(grouped)).to_numpy()
    frame = frame.loc[frame.groupby(MODEL + ["label", "lib"], observed=True)["time_per_image_ms"].idxmin()]
    rows, picks, excluded, absent, wanted = [], [], [], {}, []
    for (platform, model), group in frame.groupby(MODEL, observed=True):
        compatible, left_out = _compatible_libs(group)
        excluded += [{"platform": platform, "model": model, "lib": lib, "reason": why} for lib, why in left_out]
        if len(compatible) < 2:
            absent[platform, model] = ("not enough per-layer data: needs trustworthy per-layer times of two libs whose "
                                       f"layers match by name; has {len(compatible)} ({', '.join(compatible) or 'none'})")
            continue
        row, pick, selected = _ideal_of(group, compatible, stats, versus)
        rows.append(row)
        picks.append(pick)
        wanted += selected
    sums = _selected_sums(part, grouped, per_batch.index, wanted)
    for row in rows:
        row["ratio_to_best_single_lib_ci_low"], row["ratio_to_best_single_lib_ci_high"] = _ideal_interval(
            row, sums, _timed_best(stats, row["platform"], row["model"], [row["best_single_lib"]]))
    summary = pd.DataFrame(rows).set_index(MODEL) if rows else pd.DataFrame()
    choices = pd.concat(picks).set_index(MODEL + ["label"]) if picks else pd.DataFrame()
    return Ideal(summary.fillna({c: 0.0 for c in summary.columns if c not in IDEAL_COLUMNS}) if rows else summary,
                 choices, pd.DataFrame(excluded, columns=["platform", "model", "lib", "reason"]), absent)


IDEAL_COLUMNS = ("total_ms", "best_single_lib", "best_single_lib_layers_ms", "ratio_to_best_single_lib",
                 "ratio_to_best_single_lib_ci_low", "ratio_to_best_single_lib_ci_high", "versus",
                 "best_single_lib_timed_ms", "spread", "noisy", "layers_compared", "layers_not_compared")


def _compatible_libs(group: pd.DataFrame) -> tuple[list[str], list[tuple[str, str]]]:
    """Libs whose layers match the most common layer list of the model by name, and the others with the reason.
    A lib matches when the layers both have hold 90% of its time and of the reference's (an input layer one lib does
    not report costs nothing). A fused engine ("conv1 + relu1") reports merged layers and never matches."""
    times = {str(lib): dict(zip(part["label"], part["time_per_image_ms"]))
             for lib, part in group.groupby("lib", observed=True)}
    left_out = [(lib, f"fused engine: its layers merge the model's (e.g. {next(x for x in n if ' + ' in x)!r}), so "
                      "they cannot be matched by name") for lib, n in times.items() if any(" + " in x for x in n)]
    rest = {lib: n for lib, n in times.items() if lib not in dict(left_out)}
    if not rest:
        return [], left_out
    counts = Counter(frozenset(n) for n in rest.values())
    reference = max(counts, key=lambda s: (counts[s], len(s)))
    reference_lib = next(lib for lib, n in rest.items() if frozenset(n) == reference)
    compatible = []
    for lib, n in rest.items():
        common = reference & set(n)
        own = sum(n[x] for x in common) / max(sum(n.values()), 1e-300)
        theirs = sum(rest[reference_lib][x] for x in common) / max(sum(rest[reference_lib].values()), 1e-300)
        if min(own, theirs) >= MATCHING_LAYERS:
            compatible.append(lib)
        else:
            left_out.append((lib, f"its layers differ from {reference_lib}'s: the {len(common)} layers both have hold "
                                  f"{own:.0%} of its time and {theirs:.0%} of {reference_lib}'s"))
    return compatible, left_out


def _ideal_of(group: pd.DataFrame, compatible: list[str], stats: pd.DataFrame,
              versus: str) -> tuple[dict, pd.DataFrame, list[pd.DataFrame]]:
    """The ideal's row (its interval follows once every model's repetitions are gathered), its picks, and the layers
    whose repetitions the interval needs (role "a": the ideal's picks; "b": the best single lib's same layers)."""
    platform, model = group["platform"].iloc[0], group["model"].iloc[0]
    sets = [frozenset(group.loc[group["lib"] == lib, "label"]) for lib in compatible]
    common, every = frozenset.intersection(*sets), frozenset.union(*sets)
    part = group[group["lib"].isin(compatible) & group["label"].isin(common if versus == "same-layers" else every)]
    pick = part.loc[part.groupby("label", observed=True)["time_per_image_ms"].idxmin()]
    per_lib = pick.groupby("lib", observed=True)["time_per_image_ms"].sum()
    single = part[part["label"].isin(common)].groupby("lib", observed=True)["time_per_image_ms"].sum()
    total, best_lib = float(per_lib.sum()), str(single.idxmin())
    if versus == "same-layers" and total > single.min() * (1 + 1e-9):
        raise AssertionError(f"ideal adaptive solution of {model} on {platform} ({total} ms) is slower than the best "
                             f"single lib it may use ({best_lib}, {single.min()} ms): the per-layer choice is broken")
    spread = float((pick["spread"].fillna(0.0) * pick["time_per_image_ms"]).sum() / total) if total > 0 else 0.0
    timed = _timed_best(stats, platform, model, compatible)
    selected = [pick.assign(role="a")]
    if versus == "same-layers":
        selected.append(part[(part["lib"] == best_lib) & part["label"].isin(common)].assign(role="b"))
        against = float(single.min())
    else:
        best_lib, against = str(timed["lib"]), float(timed["time_per_image_ms_mean"])
    row = {"platform": platform, "model": model, **{str(k): float(v) for k, v in per_lib.items()}, "total_ms": total,
           "best_single_lib": best_lib, "best_single_lib_layers_ms": float(single.min()),
           "ratio_to_best_single_lib": total / against, "versus": versus,
           "best_single_lib_timed_ms": float(timed["time_per_image_ms_mean"]) if timed is not None else np.nan,
           "spread": spread, "noisy": bool(statistics.noisy(spread, np.nan)), "layers_compared": int(part["label"].nunique()),
           "layers_not_compared": int(len(every) - part["label"].nunique())}
    return row, pick.assign(platform=platform, model=model)[MODEL + ["label", "lib", "batch_size", "time_per_image_ms",
                                                                     "spread"]], selected


def _timed_best(stats: pd.DataFrame, platform, model, libs: list[str]) -> pd.Series | None:
    """The seed notebook's best single lib: the least mean time per image over repetitions (at the batch size whose
    mean is least) among `libs`, with its repetitions' spread."""
    timed = stats.xs((platform, model), level=MODEL)
    timed = timed[timed.index.get_level_values("lib").isin(libs)]
    if timed.empty:
        return None
    best = timed["time_per_image_ms_mean"].idxmin()
    return pd.concat([timed.loc[best], pd.Series({"lib": best[0]})])


def _selected_sums(part: pd.DataFrame, grouped, keys: pd.MultiIndex, selected: list[pd.DataFrame]) -> pd.Series:
    """Per (platform, model, role, lib, batch size, repetition): the ms per image of the selected layers. The rows
    are found by their group number (`keys` is in the groups' order), an integer lookup over every model at once."""
    if not selected:
        return pd.Series(dtype=float)
    wanted = pd.concat(selected, ignore_index=True)
    wanted["code"] = keys.get_indexer(pd.MultiIndex.from_frame(wanted[MODEL + ["label", "lib", "batch_size"]]))
    group = grouped.ngroup().to_numpy()
    mask = np.isin(group, wanted["code"].to_numpy())
    rows = part.loc[mask, MODEL + ["lib", "batch_size", "repetition", "time_ms"]].assign(code=group[mask])
    rows = rows.merge(wanted[["code", "role"]], on="code")  # a layer both roles chose counts in each
    rows["per_image"] = rows["time_ms"] / rows["batch_size"]
    keys = [rows[c].astype(str) if c in ("platform", "model", "lib") else rows[c]
            for c in MODEL + ["role", "lib", "batch_size", "repetition"]]
    return rows["per_image"].groupby(keys).sum()


def _ideal_interval(row: dict, sums: pd.Series, timed: pd.Series | None) -> tuple[float, float]:
    """The 95% interval of the ideal's ratio. Numerator and (same-layers) denominator are sums over the groups of
    repetitions they draw from (lib, batch size); a group's repetitions are independent of another's, and inside a
    group the two sums share repetitions (their covariance counts). A timed denominator is another measurement."""
    mine = sums.xs((str(row["platform"]), str(row["model"])), level=[0, 1]) if len(sums) else sums
    roles = set(mine.index.get_level_values(0)) if len(mine) else set()
    numerator = mine.xs("a", level=0) if "a" in roles else pd.Series(dtype=float)
    same = row["versus"] == "same-layers"
    both = pd.concat({"a": numerator, "b": mine.xs("b", level=0) if same and "b" in roles else numerator * 0.0},
                     axis=1).fillna(0.0)
    by = both.groupby(level=[0, 1])
    n = by.size().astype(float)
    centred = both - by.transform("mean")
    var_a, var_b = by["a"].var(), by["b"].var()
    cov = (centred["a"] * centred["b"]).groupby(level=[0, 1]).sum() / (n - 1)
    a, b = float(by["a"].mean().sum()), float(by["b"].mean().sum())
    va, vb, c = float((var_a / n).sum()), float((var_b / n).sum()), float((cov / n).sum())
    parts, dfs = ((var_a + var_b) / n).to_numpy(), (n - 1).to_numpy()
    if not same:
        if timed is None:
            return np.nan, np.nan
        reps = float(timed["repetitions"])
        b, vb = float(timed["time_per_image_ms_mean"]), float(timed["time_per_image_ms_std"]) ** 2 / reps
        parts, dfs = np.append(parts, vb), np.append(dfs, reps - 1)
    if not len(dfs):
        return np.nan, np.nan
    df = float(statistics.satterthwaite_df(parts, dfs))
    low, high = statistics.holding(*statistics.fieller(a, b, va, vb, df, c), row["ratio_to_best_single_lib"])
    return float(low), float(high)


# ------------------------------------------------------------------------------------------- other tables
def good_enough_batch(stats: pd.DataFrame, tolerance: float = GOOD_ENOUGH) -> pd.DataFrame:
    """Per (platform, model, lib): the smallest batch whose time per image is within `tolerance` of the best."""
    per_image = stats["time_per_image_ms"]
    best = per_image.groupby(level=CONFIG, observed=True).transform("min")
    ok = stats[per_image <= best * (1 + tolerance)].reset_index()
    first = ok.sort_values("batch_size").groupby(CONFIG, observed=True).first()
    return first[["batch_size", "time_per_image_ms", "memory_mbytes", "memory_per_image_mbytes"]].rename(
        columns={"batch_size": "good_enough_batch_size"})


def compare_models(best: pd.DataFrame, stats: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Per (platform, lib): best time per image and mean memory of two models, and their ratios (second / first)."""
    time = best["time_per_image_ms"].unstack("model")[[first, second]]
    memory = stats["memory_mbytes"].groupby(level=CONFIG, observed=True).mean().unstack("model")
    table = pd.DataFrame({f"{first}_ms": time[first], f"{second}_ms": time[second],
                          "time_ratio": time[second] / time[first],
                          f"{first}_mbytes": memory.get(first), f"{second}_mbytes": memory.get(second)})
    table["memory_ratio"] = table[f"{second}_mbytes"] / table[f"{first}_mbytes"]
    return table.dropna(how="all")


# ------------------------------------------------------------------------------------------------ anchors
ANCHOR_VARIANT = {  # our lib label -> the plain-PyTorch anchor variant of the same configuration
    "torch-cublas-fp32": "cublas-fp32", "torch-cublas-fp16": "cublas-fp16", "torch-cudnn-fp32": "cudnn-fp32",
    "torch-cudnn-tf32": "cudnn-tf32-bench", "torch-cudnn-fp16": "fp16-cl-bench", "torch-cudnn-bf16": "bf16-cl-bench",
    "torch-amp+nchw": "seed-amp-O1", "torch-cudnn-fp16+graph": "cudagraph-fp16-cl",
    "torch-compile-fp16": "compile-fp16-cl",
}
ANCHOR_MODEL = {"squeezenet-1.0": "squeezenet1_0", "squeezenet-1.1": "squeezenet1_1"}


def anchors() -> pd.DataFrame:
    text = resources.files("ck_plugins").joinpath("data/anchors/plain-pytorch-h200-2026-11-21.jsonl").read_text()
    frame = pd.DataFrame([json.loads(line) for line in text.splitlines() if line.strip()])
    frame["platform"] = "NVIDIA H200"
    return frame


def nearest_anchors(stats: pd.DataFrame) -> pd.DataFrame:
    """Our images/s next to the anchor of the same GPU, model, configuration and nearest batch size."""
    ours = stats[["images_per_second"]].reset_index()
    ours["variant"] = ours["lib"].map(ANCHOR_VARIANT)
    ours["anchor_model"] = ours["model"].map(lambda m: ANCHOR_MODEL.get(m, m))
    table = anchors().rename(columns={"model": "anchor_model", "bs": "anchor_batch_size",
                                      "img_per_s": "anchor_images_per_second"})
    both = ours.merge(table[["anchor_model", "variant", "platform", "anchor_batch_size", "anchor_images_per_second"]],
                      on=["anchor_model", "variant", "platform"])
    if both.empty:
        return pd.DataFrame()
    both["distance"] = (both["anchor_batch_size"] - both["batch_size"]).abs()
    nearest = both.loc[both.groupby(KEY, observed=True)["distance"].idxmin()]
    nearest = nearest.assign(ratio=nearest["images_per_second"] / nearest["anchor_images_per_second"])
    return nearest[KEY + ["images_per_second", "variant", "anchor_batch_size", "anchor_images_per_second",
                          "ratio"]].set_index(KEY)


# ------------------------------------------------------------------------------------- the result, computed once
@dataclass
class Result:
    """Everything the report, the notebook and the dashboard show, computed once from one selection of points."""
    loaded: Loaded
    stats: pd.DataFrame
    best: pd.DataFrame
    baseline: str
    speedups: pd.DataFrame
    speedups_ci: tuple[pd.DataFrame, pd.DataFrame]  # (low, high), each shaped like speedups
    ideal: Ideal
    per_layer_repetitions_dropped: float
    layer_statistic: str
    headline: dict
    harness: pd.DataFrame = field(default_factory=pd.DataFrame)  # time_stats of the harness libs (null), apart
    latency: pd.DataFrame = field(default_factory=pd.DataFrame)  # latency.table of the libs (harness apart)


def default_baseline(libs: list[str]) -> str:
    for name in ("cpu", "torch-cpu", "torch-cudnn-fp32", "nvidia-cudnn"):
        if name in libs:
            return name
    return libs[0]


def analyse(loaded: Loaded, baseline: str | None = None, adaptive_libs: list[str] | None = None,
            layer_statistic: str = "median", ideal_versus: str = "same-layers") -> Result:
    """Every table from one selection. Raises ValueError when nothing can be analysed, saying how much was skipped."""
    if loaded.runs.empty or not loaded.runs["success"].any():
        raise ValueError(no_point_message(loaded))
    stats = time_stats(loaded.runs)
    harness = stats[stats.index.get_level_values("lib").map(is_harness).astype(bool)]
    stats = stats.drop(harness.index)  # the harness is reported apart, never ranked beside the libs
    if stats.empty:
        raise ValueError(f"only harness checks ({', '.join(sorted(set(harness.index.get_level_values('lib'))))}) "
                         "measured: no lib that runs a network to analyse")
    best = best_time_per_image(stats)
    libs = sorted(best.index.get_level_values("lib").unique())
    baseline = baseline or default_baseline(libs)
    speedups, speedups_ci = speedup(best, baseline), speedup_interval(best, baseline)
    trusted, dropped = trusted_layers(loaded.layers, loaded.runs)
    ideal = ideal_adaptive(trusted, stats, adaptive_libs, statistic=layer_statistic, versus=ideal_versus)
    delays = latency.table(loaded)
    delays = delays[~delays.index.get_level_values("lib").map(is_harness).astype(bool)]
    result = Result(loaded, stats, best, baseline, speedups, speedups_ci, ideal, dropped, layer_statistic, {}, harness,
                    delays)
    result.headline = headline(result)
    return result


def no_point_message(loaded: Loaded) -> str:
    failed = int((~loaded.runs["success"]).sum()) if len(loaded.runs) else 0
    message = f"no successful point to analyse ({failed} failed repetitions read)"
    if loaded.skipped:
        first = "; ".join(s[:200] for s in loaded.skipped[:3])
        message += f": {len(loaded.skipped)} files skipped (first 3: {first}); all are listed in the report"
    return message


def headline(r: Result) -> dict:
    """The figures a reader wants first, per (platform, model): the fastest lib and how it compares."""
    models = []
    for (platform, model), part in r.best.groupby(level=MODEL, observed=True):
        part = part.droplevel(MODEL)
        measured = part[~part.index.map(is_harness).astype(bool)]
        if measured.empty:
            continue
        fastest = measured["time_per_image_ms"].idxmin()
        key = (platform, model)
        speed, low, high = (_row(t, key) for t in (r.speedups, *r.speedups_ci))
        shown = [lib for lib, v in speed.items() if _f(v) is not None]
        models.append({
            "platform": platform, "model": model, "fastest_lib": fastest,
            "best_batch_size": int(part.loc[fastest, "best_batch_size"]),
            "time_per_image_ms": float(part.loc[fastest, "time_per_image_ms"]),
            "images_per_second": float(part.loc[fastest, "images_per_second"]),
            "images_per_second_ci": interval(part.loc[fastest, "images_per_second_ci_low"],
                                             part.loc[fastest, "images_per_second_ci_high"]),
            "noisy": bool(part.loc[fastest, "noisy"]), "spread": _f(part.loc[fastest, "spread"]),
            "speedup_over_baseline": {lib: _f(speed[lib]) for lib in shown},
            "speedup_over_baseline_ci": {lib: interval(low.get(lib), high.get(lib)) for lib in shown},
            "fastest_configuration": describe(fastest), "fp16_versus_fp32": fp16_versus_fp32(r, platform, model),
            "images_per_second_by_lib": _rates(r.stats, platform, model),
            **_ideal_headline(r.ideal, platform, model)})
    runs = r.loaded.runs
    return {"baseline": r.baseline, "points": int(len(r.stats)), "repetitions": int(len(runs)),
            "failed_repetitions": int((~runs["success"]).sum()), "noisy_points": int(r.stats["noisy"].sum()),
            "platforms": sorted(r.stats.index.get_level_values("platform").unique()),
            "dimensions": r.loaded.dimensions, "layer_statistic": r.layer_statistic,
            "per_layer_repetitions_dropped": r.per_layer_repetitions_dropped,
            "skipped_count": len(r.loaded.skipped), "skipped": r.loaded.skipped, "models": models,
            "harness": [{"platform": p, "model": m, "lib": lib, "batch_size": int(b), "time_ms": float(t)}
                        for (p, m, lib, b), t in r.harness["time_ms"].items()] if len(r.harness) else []}


# the seed's question, is fp16 faster than fp32 here: cuDNN in fp16 and fp32, ours first, then CK-Caffe's
FP16_FP32_PAIRS = (("torch-cudnn-fp16", "torch-cudnn-fp32"), ("nvidia-fp16-cudnn", "nvidia-cudnn"))
LAUNCH_BOUND_GROWTH = 1.25  # time per batch grows less than this from the smallest batch to twice it: launch-bound
LAUNCH_BOUND_MS = 20.0  # ... and a batch takes less than this: kernel launches (microseconds each) can set the pace


def fp16_versus_fp32(r: Result, platform, model) -> list[dict]:
    """fp16 against fp32 (cuDNN; each lib's plainest label, its usual layout where measured) at the smallest batch
    both measured and at fp16's best
    batch: the speed-up with its interval, and the measured reason in one sentence (the points' own diagnosis
    where they recorded one, else what the times show)."""
    try:
        labels = set(r.stats.xs((platform, model), level=MODEL).index.get_level_values("lib"))
    except KeyError:
        return []
    plainest = lambda lib: min((x for x in labels if x.split("+")[0] == lib), key=len, default=None)  # noqa: E731
    chosen = next(([plainest(h), plainest(f)] for h, f in FP16_FP32_PAIRS if plainest(h) and plainest(f)), None)
    if chosen is None:
        return []
    half, full = (r.stats.xs((platform, model, lib), level=CONFIG) for lib in chosen)
    common = sorted(set(half.index) & set(full.index))
    if not common:
        return []
    best = int(half["time_per_image_ms"].idxmin())
    batches = list(dict.fromkeys([common[0], best if best in common else common[-1]]))
    out = []
    for batch in batches:
        h, f = half.loc[batch], full.loc[batch]
        ratio = float(f["time_ms"] / h["time_ms"])
        low, high = statistics.ratio_interval(f["time_ms_mean"], f["time_ms_std"], f["repetitions"], h["time_ms_mean"],
                                              h["time_ms_std"], h["repetitions"], ratio)
        out.append({"batch_size": int(batch), "fp16_lib": chosen[0], "fp32_lib": chosen[1],
                    "fp16_images_per_second": float(1e3 * batch / h["time_ms"]),
                    "fp32_images_per_second": float(1e3 * batch / f["time_ms"]), "ratio": ratio,
                    "ratio_ci": interval(low, high), "reason": _reason(r, platform, model, chosen[0], half, batch, ratio)})
    return out


def _reason(r: Result, platform, model, lib: str, half: pd.DataFrame, batch: int, ratio: float) -> str:
    runs = r.loaded.runs
    if "reasons" in runs.columns:
        key = (platform, model, lib, batch)
        recorded = runs.loc[key, "reasons"].dropna() if key in runs.index.droplevel("repetition") else pd.Series()
        if len(recorded):
            return str(recorded.iloc[0])
    larger, smaller = [b for b in half.index if b >= 2 * batch], [b for b in half.index if 2 * b <= batch]
    if not larger and not smaller:
        return "one batch size measured, and no kernel profile recorded: nothing says why"
    low, high = (batch, larger[0]) if larger else (smaller[-1], batch)
    growth = half.loc[high, "time_ms"] / half.loc[low, "time_ms"]
    if half.loc[low, "time_ms"] >= LAUNCH_BOUND_MS:
        growth = max(growth, LAUNCH_BOUND_GROWTH)  # tens of milliseconds a batch: the launches cannot be the pace
    measured = (f"a batch of {high} takes {half.loc[high, 'time_ms']:.3g} ms against {half.loc[low, 'time_ms']:.3g} ms "
                f"at {low}")
    if growth < LAUNCH_BOUND_GROWTH and ratio > 1 + statistics.NOISY * 3:
        return (f"launch-bound in fp16 ({measured}): its kernels are fast enough that the host sets the pace, while "
                "fp32's slower ones still keep the GPU busy")
    if growth < LAUNCH_BOUND_GROWTH:
        return f"launch-bound: {measured}, so the GPU waits for the host and faster kernels cannot help"
    if ratio > 1:
        return f"not launch-bound ({measured}): the GPU does the work, where fp16's tensor cores and halved traffic count"
    return (f"not launch-bound ({measured}), yet slower: its kernels themselves are slower here (no kernel profile was "
            "recorded to say which)")


def _ideal_headline(ideal: Ideal, platform: str, model: str) -> dict:
    if (platform, model) not in ideal.summary.index:
        why = ideal.absent.get((platform, model), "not enough per-layer data")
        return {"ideal_adaptive_ms": None, "ideal_adaptive_ratio_to_best_single_lib": None,
                "ideal_adaptive_ratio_to_best_single_lib_ci": None, "ideal_adaptive": why}
    row = ideal.summary.loc[(platform, model)]
    ratio = float(row["ratio_to_best_single_lib"])
    ci = interval(row["ratio_to_best_single_lib_ci_low"], row["ratio_to_best_single_lib_ci_high"])
    against = (f"over the same {int(row['layers_compared'])} layers" if row["versus"] == "same-layers" else
               f"timed (all {int(row['layers_compared'])} layers against its timed total)")
    text = f"{ratio_text(ratio, ci)} {row['best_single_lib']} {against}"
    if row["noisy"]:  # annotated, never withheld
        text += f"; noisy: the per-layer times it chooses spread by {row['spread']:.0%} over their repetitions"
    text += _left_out(ideal, platform, model)
    return {"ideal_adaptive_ms": float(row["total_ms"]), "ideal_adaptive_ratio_to_best_single_lib": ratio,
            "ideal_adaptive_ratio_to_best_single_lib_ci": ci, "ideal_adaptive": text}


def _rates(stats: pd.DataFrame, platform, model) -> dict[str, dict[str, float]]:
    """{lib: {batch size: images per second}} of one model on one platform (every point's one time), for the docs."""
    part = stats.xs((platform, model), level=MODEL)["images_per_second"]
    out: dict[str, dict[str, float]] = {}
    for (lib, batch), value in part.items():
        out.setdefault(str(lib), {})[str(int(batch))] = round(float(value), 1)
    return out


def _left_out(ideal: Ideal, platform: str, model: str) -> str:
    """The libs the ideal could not use, briefly: fused engines by name, the others counted."""
    if ideal.excluded.empty:
        return ""
    mine = ideal.excluded[(ideal.excluded["platform"] == platform) & (ideal.excluded["model"] == model)]
    fused = sorted(mine.loc[mine["reason"].str.startswith("fused"), "lib"])
    other = sorted(set(mine["lib"]) - set(fused))
    named = lambda libs: ", ".join(libs[:3]) + (f" and {len(libs) - 3} more" if len(libs) > 3 else "")  # noqa: E731
    parts = ([f"{named(fused)} (fused: their layers merge the model's)"] if fused else []) + (
        [f"{named(other)} (their layers do not match the others' by name)"] if other else [])
    return f"; left out: {'; '.join(parts)}" if parts else ""


def interval(low, high) -> list[float] | None:
    """A 95% interval as summary.json holds it: [low, high], None where there is none (one repetition)."""
    low, high = _f(low), _f(high)
    return None if low is None or high is None else [low, high]


def ratio_text(ratio: float, ci: list[float] | None) -> str:
    """'0.931x (95% CI 0.904-0.962)' (three significant digits), with 'no significant difference' where the interval holds 1."""
    if ci is None:
        return f"{ratio:.3g}x (no interval: one repetition)"
    same = ci[0] <= 1 <= ci[1]
    return f"{ratio:.3g}x (95% CI {ci[0]:.3g}-{ci[1]:.3g}{': no significant difference' if same else ''})"


def images_per_second_text(f: dict) -> str:
    """'33383 img/s (95% CI 33100-33650)' of a headline model, with 'noisy' where its repetitions spread."""
    ci = f.get("images_per_second_ci")
    text = f"{f['images_per_second']:.0f} img/s" + (f" (95% CI {ci[0]:.0f}-{ci[1]:.0f})" if ci else " (no interval)")
    return text + (", noisy" if f["noisy"] else "")


def _row(table: pd.DataFrame, key) -> pd.Series:
    return table.loc[key] if key in table.index else pd.Series(dtype=float)


def _f(value) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)
