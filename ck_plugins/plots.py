"""The notebook's plots, headless (matplotlib Agg), as PNG bytes. No torch."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def time_per_image_bars(stats: pd.DataFrame, model: str) -> bytes:
    """Mean time per image (ms) per batch size, one bar per lib, with std error bars."""
    part = stats.xs(model, level="model")
    mean = part["time_per_image_ms"].unstack("lib")
    std = part["time_per_image_ms_std"].unstack("lib")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    mean.plot(kind="bar", yerr=std, ax=ax, logy=True, rot=0, width=0.85, colormap="tab20", grid=True)
    ax.set(title=f"{model}: execution time per image (ms, log scale)", xlabel="batch size", ylabel="ms per image")
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def layer_bars(table: pd.DataFrame, model: str) -> bytes:
    """Per-layer time per image, one bar group per layer (columns: lib, batch size)."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    table.plot(kind="bar", ax=ax, width=0.85, colormap="tab10", grid=True)
    ax.set(title=f"{model}: time per image per layer (ms)", xlabel="", ylabel="ms per image")
    ax.legend(fontsize=7)
    return _png(fig)


def ideal_stacked(summary: pd.DataFrame) -> bytes:
    """Stacked bars: the ideal adaptive solution's time in each lib, next to the best single lib."""
    libs = [c for c in summary.columns if c not in ("total_ms", "best_single_lib", "best_single_lib_ms",
                                                    "ratio_to_best_single_lib")]
    rows = {}
    for model, row in summary.iterrows():
        rows[f"{model} adaptive"] = row[libs].astype(float)
        single = pd.Series(0.0, index=libs)
        if row["best_single_lib"] in single.index:
            single[row["best_single_lib"]] = row["best_single_lib_ms"]
        rows[f"{model} {row['best_single_lib']} only"] = single
    frame = pd.DataFrame(rows).T
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.45 * len(frame)))
    frame.plot(kind="barh", stacked=True, ax=ax, colormap="tab20", grid=True, width=0.8)
    ax.set(title="Ideal adaptive solution vs the best single lib (ms per image)", xlabel="ms per image")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def memory_time_curves(stats: pd.DataFrame, model: str, lib: str) -> bytes:
    """Time per batch and per image, memory per batch and per image, across batch sizes."""
    part = stats.xs((model, lib), level=("model", "lib"))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(part.index, part["time_ms_mean"], "o-", label="time per batch (ms)")
    ax.plot(part.index, part["time_per_image_ms"], "s-", label="time per image (ms)")
    ax.set(xlabel="batch size", ylabel="ms", title=f"{model} with {lib}", ylim=(0, None))
    ax.grid(True)
    right = ax.twinx()
    right.plot(part.index, part["memory_mbytes"], "^--", color="tab:green", label="memory (MB)")
    right.plot(part.index, part["memory_per_image_mbytes"], "v--", color="tab:olive", label="memory per image (MB)")
    right.set(ylabel="MB", ylim=(0, None))
    ax.legend(loc="upper left", fontsize=8)
    right.legend(loc="upper right", fontsize=8)
    return _png(fig)


def adaptive_built(built: pd.DataFrame) -> bytes:
    """Per run (model, batch, graph, per-layer method): predicted, planned and measured adaptive time, each over
    the best single lib of the same run (1.0 = as fast; below 1 = faster)."""
    frame = built.assign(run=built["model"] + " b" + built["batch_size"].astype(str)
                         + built["cuda_graph"].map({True: " graph", False: ""}) + " " + built["per_layer_method"])
    ratios = pd.DataFrame({name: frame[column] / frame["best_single_lib_ms"] for name, column in
                           (("predicted (greedy)", "predicted_ms"), ("greedy + conversions", "greedy_ms"),
                            ("planned", "planned_ms"), ("measured", "measured_ms"))}).set_index(frame["run"])
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.32 * len(ratios)))
    ratios.plot(kind="barh", ax=ax, width=0.85, grid=True, colormap="tab10")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set(title="Adaptive solution over the best single lib of the same run (1 = as fast)", xlabel="ratio", ylabel="")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)
