"""The seed notebook's tables, and more, from readpoints frames. Vectorised pandas; no torch.

Times are milliseconds: per batch (`time_ms`), per image (`time_per_image_ms`).
"""
from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pandas as pd

KEY = ["model", "lib", "batch_size"]
NOISY = 0.05  # IQR over median above this flags a point as noisy
GOOD_ENOUGH = 0.05  # a batch whose time per image is within 5% of the best is "good enough"


def time_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, 95% interval and noise per (model, lib, batch size), over successful repetitions."""
    ok = runs[runs["success"]]
    grouped = ok.groupby(level=KEY, observed=True)
    table = grouped["time_ms"].agg(["mean", "std", "count"]).rename(
        columns={"mean": "time_ms_mean", "std": "time_ms_std", "count": "repetitions"})
    table["time_ms_std"] = table["time_ms_std"].fillna(0.0)
    half = 1.96 * table["time_ms_std"] / np.sqrt(table["repetitions"])
    table["ci95_low_ms"], table["ci95_high_ms"] = table["time_ms_mean"] - half, table["time_ms_mean"] + half
    table["noisy"] = grouped["iqr_over_median"].max().reindex(table.index).fillna(0) > NOISY
    batch = table.index.get_level_values("batch_size").to_numpy()
    table["time_per_image_ms"] = table["time_ms_mean"] / batch
    table["time_per_image_ms_std"] = table["time_ms_std"] / batch
    table["images_per_second"] = 1e3 / table["time_per_image_ms"]
    table["memory_mbytes"] = grouped["memory_mbytes"].mean()
    table["memory_per_image_mbytes"] = table["memory_mbytes"] / batch
    table["peak_share"] = grouped["peak_share"].mean()
    return table


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    failed = runs[~runs["success"]].reset_index()
    return failed.groupby(["model", "lib", "batch_size"], observed=True)["error"].first().to_frame()


def mean_time_per_batch(stats: pd.DataFrame) -> pd.DataFrame:
    """The notebook's table: rows (model, lib), columns batch sizes, mean ms per batch."""
    return stats["time_ms_mean"].unstack("batch_size")


def mean_time_per_image(stats: pd.DataFrame) -> pd.DataFrame:
    return stats["time_per_image_ms"].unstack("batch_size")


def best_time_per_image(stats: pd.DataFrame) -> pd.DataFrame:
    """Per (model, lib): the least mean time per image, the batch size that gives it, and images per second."""
    per_image = stats["time_per_image_ms"]
    where = per_image.groupby(level=["model", "lib"], observed=True).idxmin()
    best = stats.loc[where.to_list(), ["time_per_image_ms", "time_per_image_ms_std", "noisy"]]
    best = best.reset_index("batch_size").rename(columns={"batch_size": "best_batch_size"})
    best["images_per_second"] = 1e3 / best["time_per_image_ms"]
    return best


def speedup(best: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per model (rows) and lib (columns): the baseline lib's best time per image over each lib's."""
    table = best["time_per_image_ms"].unstack("lib")
    if baseline not in table.columns:
        raise ValueError(f"baseline lib {baseline!r} is not in the data; expected one of {', '.join(table.columns)}")
    return table.rdiv(table[baseline], axis=0)


def layer_time_per_image(layers: pd.DataFrame, model: str, libs: list[str], batch_sizes: list[int],
                         lower: float = 0.0, upper: float = 1.0, direction: str = "forward") -> pd.DataFrame:
    """Rows: layers; columns: (lib, batch size); mean ms per image. Keeps layers whose share of a column's
    total lies within [lower, upper] in at least one column (the notebook's filter)."""
    part = layers[(layers["model"] == model) & layers["lib"].isin(libs) & layers["batch_size"].isin(batch_sizes)
                  & (layers["direction"] == direction)]
    mean = part.groupby(["label", "lib", "batch_size"], observed=True)["time_ms"].mean()
    mean = mean / mean.index.get_level_values("batch_size")
    table = mean.unstack(["lib", "batch_size"])
    share = table / table.sum()
    keep = ((share >= lower) & (share <= upper)).any(axis=1)
    return table[keep]


def trusted_layers(layers: pd.DataFrame, runs: pd.DataFrame, max_overhead: float = 0.2,
                   direction: str = "forward") -> tuple[pd.DataFrame, float]:
    """The per-layer rows of repetitions whose per-layer sum is within `max_overhead` of the timed pass, and the
    share of repetitions dropped. Where the GPU is launch-bound, timing every layer costs more than the layers,
    so such rows would make per-layer plans look worse than they are."""
    part = layers[layers["direction"] == direction]
    keys = ["model", "lib", "batch_size", "repetition"]
    sums = part.groupby(keys, observed=True)["time_ms"].sum()
    share = sums / runs["time_ms"].reindex(sums.index)
    good = share[share <= 1 + max_overhead].index
    kept = part.set_index(keys)
    kept = kept[kept.index.isin(good)].reset_index()
    return kept, (1 - len(good) / len(share)) if len(share) else 0.0


def ideal_adaptive(layers: pd.DataFrame, stats: pd.DataFrame, libs: list[str] | None = None,
                   direction: str = "forward") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The notebook's ideal adaptive solution: each layer on the lib with its least time per image.

    Per (model, layer, lib): the least mean-over-repetitions time per image over batch sizes (the notebook took
    the least repetition). Returns (summary: per model the time spent in each lib, the total, the best single
    lib and the ratio; choices: per (model, layer) the lib chosen and its time per image). Pass the rows of
    `trusted_layers` to leave out per-layer data the profiling pass distorted.
    """
    part = layers[layers["direction"] == direction]
    if libs is not None:
        part = part[part["lib"].isin(libs)]
    per_batch = part.groupby(["model", "label", "lib", "batch_size"], observed=True)["time_ms"].mean()
    per_image = (per_batch / per_batch.index.get_level_values("batch_size")).groupby(
        level=["model", "label", "lib"], observed=True).min()
    pick = per_image.groupby(level=["model", "label"], observed=True).idxmin()
    choices = per_image.loc[pick.to_list()].rename("time_per_image_ms").reset_index("lib")
    summary = choices.groupby(["model", "lib"], observed=True)["time_per_image_ms"].sum().unstack("lib").fillna(0.0)
    summary["total_ms"] = summary.sum(axis=1)
    best = best_time_per_image(stats)["time_per_image_ms"]
    used = set(part["lib"].unique())  # compare with the libs the solution could use: those with per-layer data
    best = best[best.index.get_level_values("lib").isin(used)]
    single = best.groupby(level="model", observed=True)
    summary["best_single_lib"] = single.idxmin().map(lambda key: key[1]).reindex(summary.index)
    summary["best_single_lib_ms"] = single.min().reindex(summary.index)
    summary["ratio_to_best_single_lib"] = summary["total_ms"] / summary["best_single_lib_ms"]
    return summary.sort_values("total_ms"), choices


def good_enough_batch(stats: pd.DataFrame, tolerance: float = GOOD_ENOUGH) -> pd.DataFrame:
    """Per (model, lib): the smallest batch whose time per image is within `tolerance` of the best, with memory."""
    per_image = stats["time_per_image_ms"]
    best = per_image.groupby(level=["model", "lib"], observed=True).transform("min")
    ok = stats[per_image <= best * (1 + tolerance)].reset_index()
    first = ok.sort_values("batch_size").groupby(["model", "lib"], observed=True).first()
    return first[["batch_size", "time_per_image_ms", "memory_mbytes", "memory_per_image_mbytes"]].rename(
        columns={"batch_size": "good_enough_batch_size"})


def compare_models(best: pd.DataFrame, stats: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Per lib: best time per image and mean memory of two models, and their ratios (second / first)."""
    time = best["time_per_image_ms"].unstack("model")[[first, second]]
    memory = stats["memory_mbytes"].groupby(level=["model", "lib"], observed=True).mean().unstack("model")
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
    frame["gpu"] = "NVIDIA H200"
    return frame


def nearest_anchors(stats: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Our images/s next to the anchor of the same GPU, model, configuration and nearest batch size."""
    ours = stats[["images_per_second"]].join(runs["gpu"].groupby(level=KEY, observed=True).first()).reset_index()
    ours["variant"] = ours["lib"].map(ANCHOR_VARIANT)
    ours["anchor_model"] = ours["model"].map(lambda m: ANCHOR_MODEL.get(m, m))
    table = anchors().rename(columns={"model": "anchor_model", "bs": "anchor_batch_size",
                                      "img_per_s": "anchor_images_per_second"})
    both = ours.merge(table[["anchor_model", "variant", "gpu", "anchor_batch_size", "anchor_images_per_second"]],
                      on=["anchor_model", "variant", "gpu"])
    both["distance"] = (both["anchor_batch_size"] - both["batch_size"]).abs()
    nearest = both.loc[both.groupby(KEY, observed=True)["distance"].idxmin()]
    nearest = nearest.assign(ratio=nearest["images_per_second"] / nearest["anchor_images_per_second"])
    return nearest[KEY + ["images_per_second", "variant", "anchor_batch_size", "anchor_images_per_second",
                          "ratio"]].set_index(KEY)
