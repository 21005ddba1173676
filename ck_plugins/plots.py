"""The notebook's plots, headless (matplotlib Agg), as PNG bytes. No torch."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .libnames import FAMILY_OF  # noqa: E402


FAMILY_COLOURS = {"cpu": "Greys", "cublas": "Oranges", "cudnn": "Greens", "fp16": "Blues", "compile": "Purples",
                  "tensorrt": "Reds", "adaptive": "YlOrBr", "cudnn-graph": "RdPu", "null": "Greys", "other": "copper"}
MAX_LIBS_PER_AXES = 10  # more than this and the bars are split into one panel per lib family


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.canvas.draw()
    overlaps = legend_overlaps(fig)
    if overlaps:
        raise AssertionError(f"a legend covers the data: {'; '.join(overlaps)}")
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")  # the legend beside the axes included
    plt.close(fig)
    return buffer.getvalue()


def legend_overlaps(fig) -> list[str]:
    """Every legend of a drawn figure that overlaps the data area of any of its axes (by their bounding boxes)."""
    found = []
    renderer = fig.canvas.get_renderer()
    legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None]
    for owner, legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if box.overlaps(ax.get_window_extent(renderer)):
                found.append(f"the legend of {owner.get_title()!r} over the axes {ax.get_title()!r}")
    return found


def family(lib: str) -> str:
    """The lib's family for colours and panels (our libs by name; legacy Caffe libs by their words)."""
    base = lib.split("+")[0]
    if base in FAMILY_OF:
        return FAMILY_OF[base]
    for word, name in (("tensorrt", "tensorrt"), ("fp16", "fp16"), ("cudnn", "cudnn"), ("cuda", "cublas"),
                       ("cpu", "cpu"), ("openblas", "cpu")):
        if word in base:
            return name
    return "other"


def lib_colours(libs) -> dict[str, tuple]:
    """Libs of one family in shades of one colour map: families stay apart however many libs there are."""
    by_family: dict[str, list[str]] = {}
    for lib in libs:
        by_family.setdefault(family(lib), []).append(lib)
    colours = {}
    for name, members in by_family.items():
        cmap = matplotlib.colormaps[FAMILY_COLOURS.get(name, "copper")]
        for index, lib in enumerate(members):
            colours[lib] = cmap(0.45 + 0.5 * index / max(1, len(members) - 1)) if len(members) > 1 else cmap(0.7)
    return colours


def time_per_image_bars(stats: pd.DataFrame, platform: str, model: str) -> bytes:
    """Time per image (ms) per batch size, one bar per lib coloured by family, the repetitions' std as error bars;
    one panel per lib family when there are more than MAX_LIBS_PER_AXES libs."""
    part = stats.xs((platform, model), level=("platform", "model"))
    mean = part["time_per_image_ms"].unstack("lib")
    std = part["time_per_image_ms_std"].unstack("lib")
    colours = lib_colours(mean.columns)
    groups = [list(mean.columns)]
    if len(mean.columns) > MAX_LIBS_PER_AXES:
        groups = [[lib for lib in mean.columns if family(lib) == name]
                  for name in dict.fromkeys(family(lib) for lib in mean.columns)]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 3.2 * len(groups) + 1.0), sharex=True, squeeze=False)
    head = f"{model} on {platform}: execution time per image (ms, log scale)"
    for index, (ax, libs) in enumerate(zip(axes[:, 0], groups)):
        mean[libs].plot(kind="bar", yerr=std[libs], ax=ax, logy=True, rot=0, width=0.85, grid=True,
                        color=[colours[lib] for lib in libs])
        panel = f"{family(libs[0])} libs" if len(groups) > 1 else ""
        ax.set(ylabel="ms per image", xlabel="batch size",
               title=_text(f"{head}\n{panel}" if index == 0 and panel else panel if index else head))
        _legend_outside(ax, libs)
    return _png(fig)


def _text(label) -> str:
    """A label is text, never mathtext: dollar signs are escaped."""
    return str(label).replace("$", r"\$")


def _legend_outside(ax, labels) -> None:
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles, [_text(x) for x in labels], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              ncol=1 + len(labels) // 18, frameon=False)


def layer_bars(table: pd.DataFrame, model: str) -> bytes:
    """Per-layer time per image, one bar group per layer (columns: lib, batch size)."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    table.plot(kind="bar", ax=ax, width=0.85, colormap="tab10", grid=True)
    ax.set(title=_text(f"{model}: time per image per layer (ms)"), xlabel="", ylabel="ms per image")
    _legend_outside(ax, [f"{lib}, batch {batch}" for lib, batch in table.columns])
    return _png(fig)


def ideal_stacked(summary: pd.DataFrame, libs: list[str]) -> bytes:
    """Stacked bars: the ideal adaptive solution's time in each lib, next to the best single lib's."""
    rows = {}
    for (platform, model), row in summary.iterrows():
        rows[f"{model} ({platform}) adaptive"] = row[libs].astype(float)
        single = pd.Series(0.0, index=libs)
        if row["best_single_lib"] in single.index:
            single[row["best_single_lib"]] = row["best_single_lib_layers_ms"]
        rows[f"{model} ({platform}) {row['best_single_lib']} only"] = single
    frame = pd.DataFrame(rows).T
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.45 * len(frame)))
    frame.plot(kind="barh", stacked=True, ax=ax, colormap="tab20", grid=True, width=0.8)
    ax.set(title="Ideal adaptive solution vs the best single lib over the same layers (ms per image)",
           xlabel="ms per image")
    ax.set_yticks(ax.get_yticks(), [_text(x) for x in frame.index])
    _legend_outside(ax, frame.columns)
    return _png(fig)


def memory_time_curves(stats: pd.DataFrame, platform: str, model: str, lib: str) -> bytes:
    """Time per batch and per image, memory per batch and per image, across batch sizes."""
    part = stats.xs((platform, model, lib), level=("platform", "model", "lib"))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(part.index, part["time_ms"], "o-", label="time per batch (ms)")
    ax.plot(part.index, part["time_per_image_ms"], "s-", label="time per image (ms)")
    ax.set(xlabel="batch size", ylabel="ms", title=_text(f"{model} with {lib} on {platform}"), ylim=(0, None))
    if len(part) > 1 and part.index.max() >= 16 * part.index.min():
        ax.set_xscale("log", base=2)  # batch sizes in powers of two: every point visible
    ax.grid(True)
    right = ax.twinx()
    right.plot(part.index, part["memory_mbytes"], "^--", color="tab:green", label="memory (MB)")
    right.plot(part.index, part["memory_per_image_mbytes"], "v--", color="tab:olive", label="memory per image (MB)")
    right.set(ylabel="MB", ylim=(0, None))
    lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper left", bbox_to_anchor=(1.12, 1.0),
              frameon=False)
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
    _legend_outside(ax, ratios.columns)
    return _png(fig)
