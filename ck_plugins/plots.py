"""The notebook's plots, headless (matplotlib Agg), as PNG bytes. No torch."""
from __future__ import annotations

import functools
import io
import math
import threading

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import Collection, LineCollection  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .libnames import FAMILY_OF, is_harness  # noqa: E402


_DRAWING = threading.RLock()  # matplotlib is not thread-safe (the service draws in threads): one figure at a time


def _one_at_a_time(function):
    """A plot function run under the drawing lock: its figure is built, checked and saved by one thread at once."""
    @functools.wraps(function)
    def drawn(*args, **kwargs):
        with _DRAWING:
            return function(*args, **kwargs)
    return drawn


FAMILY_COLOURS = {"cpu": "Greys", "cublas": "Oranges", "cudnn": "Greens", "fp16": "Blues", "compile": "Purples",
                  "tensorrt": "Reds", "adaptive": "YlOrBr", "cudnn-graph": "RdPu", "null": "Greys", "other": "copper"}
MAX_LIBS_PER_AXES = 10  # more than this and the bars are split into one panel per lib family


def _png(fig) -> bytes:
    """The figure as PNG bytes, refused when a legend covers the data or anything drawn lies outside its axes."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.canvas.draw()
    overlaps = legend_overlaps(fig)
    if overlaps:
        plt.close(fig)
        raise AssertionError(f"a legend covers the data: {'; '.join(overlaps)}")
    outside = artists_outside(fig)
    if outside:
        plt.close(fig)
        raise AssertionError(f"drawn outside its axes: {'; '.join(outside[:5])}")
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


INSIDE_TOLERANCE_PX = 8  # a marker centred on the axes' edge pokes out by half its size


def artists_outside(fig) -> list[str]:
    """Every bar, line, error bar or text of a drawn figure that reaches outside the data area of its axes (a bar
    running off the axis, a point beyond the limits, a label past the edge): the reader would not see all of it."""
    found = []
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        for artist in [*ax.patches, *ax.lines, *ax.collections, *ax.texts]:
            if not artist.get_visible():
                continue
            corners = _extent(artist, renderer)
            if corners is None:
                continue  # an empty artist (a bar of height 0, an error bar without data) draws nothing
            extent = Bbox.from_extents(*corners)
            if not all(map(math.isfinite, corners)) or (
                    extent.x0 < box.x0 - INSIDE_TOLERANCE_PX or extent.x1 > box.x1 + INSIDE_TOLERANCE_PX
                    or extent.y0 < box.y0 - INSIDE_TOLERANCE_PX or extent.y1 > box.y1 + INSIDE_TOLERANCE_PX):
                label = str(artist.get_label())
                label = f"Text {artist.get_text()!r}" if hasattr(artist, "get_text") else (
                    label if label and not label.startswith("_") else type(artist).__name__)
                found.append(f"{label} in {ax.get_title()!r}")
    return found


def _extent(artist, renderer) -> tuple[float, float, float, float] | None:
    """The display-space box of what an artist draws; None where it draws nothing. A collection's own extent is
    empty under a non-linear (log) transform, so its points are transformed here."""
    if isinstance(artist, Collection):
        if isinstance(artist, LineCollection):
            segments = [s for s in artist.get_segments() if len(s)]
            points = artist.get_transform().transform(np.concatenate(segments)) if segments else np.empty((0, 2))
        else:
            points = artist.get_offset_transform().transform(artist.get_offsets())
        if not len(points):
            return None
        return (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()),
                float(points[:, 1].max()))
    extent = artist.get_window_extent(renderer)
    if extent.x0 > extent.x1 or (extent.width == 0 and extent.height == 0 and not hasattr(artist, "get_text")):
        return None
    return extent.x0, extent.y0, extent.x1, extent.y1


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
            colours[lib] = cmap(0.35 + 0.6 * index / max(1, len(members) - 1)) if len(members) > 1 else cmap(0.7)
    return colours


@_one_at_a_time
def time_per_image(stats: pd.DataFrame, platform: str, model: str, band: str = "95% interval") -> bytes:
    """Time per image (ms) against the batch size, one line per lib coloured by family, with the error bars of
    `band` (columns time_per_image_ms_low/_high, where present). Both axes are numeric; the time is logarithmic, the
    batch size too where it spans 16x (_batch_axis); one panel per lib family when there are more than MAX_LIBS_PER_AXES
    libs, all panels on the same scales. Harness libs (libnames.is_harness) are left out: they run no network."""
    part = stats.xs((platform, model), level=("platform", "model"))
    part = part[~part.index.get_level_values("lib").map(is_harness).astype(bool)]
    libs = list(dict.fromkeys(part.index.get_level_values("lib")))
    colours = lib_colours(libs)
    groups = [libs]
    if len(libs) > MAX_LIBS_PER_AXES:
        groups = [[lib for lib in libs if family(lib) == name] for name in dict.fromkeys(map(family, libs))]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 2.9 * len(groups) + 1.2), sharex=True, sharey=True,
                             squeeze=False)
    batches = sorted(set(part.index.get_level_values("batch_size")))
    head = f"{model} on {platform}: time per image (ms, log scale; error bars: {band})"
    for panel, (ax, members) in enumerate(zip(axes[:, 0], groups)):
        for index, lib in enumerate(members):
            _time_line(ax, part.xs(lib, level="lib").sort_index(), lib, colours[lib], MARKERS[index % len(MARKERS)])
        _batch_axis(ax, batches)
        _log_times(ax)
        ax.grid(True, alpha=0.4)
        title = f"{family(members[0])} libs" if len(groups) > 1 else ""
        ax.set(ylabel="ms per image (log)", title=_text(f"{head}\n{title}" if panel == 0 and title else
                                                        title if panel else head))
        _legend_outside(ax, members)
    axes[-1, 0].set_xlabel("batch size" + (" (log scale)" if axes[-1, 0].get_xscale() == "log" else ""))
    return _png(fig)


def _batch_axis(ax, batches: list[int]) -> None:
    """A numeric batch-size axis with a tick at every batch size measured: logarithmic (base 2) where they span
    16x or more (1 to 1024: every point visible), linear otherwise (2 to 16 step 2, the seed's sweep)."""
    if len(batches) > 1 and max(batches) >= 16 * min(batches):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, _spaced_labels(batches))
    else:
        ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()


def _spaced_labels(batches: list[int], gap: float = 0.4) -> list[str]:
    """Tick labels for batch sizes on a log2 axis: powers of two first, then any other batch size whose label
    clears every label already placed (8, 10, 12, 14, 16 would overlap). Every tick stays."""
    placed = [math.log2(b) for b in batches if b & (b - 1) == 0]
    for b in batches:
        if b & (b - 1) and all(abs(math.log2(b) - p) >= gap for p in placed):
            placed.append(math.log2(b))
    return [str(b) if math.log2(b) in placed else "" for b in batches]


def _log_times(ax) -> None:
    """A logarithmic time axis labelled in plain numbers (0.02, 0.05, 0.1, ...), at 1, 2 and 5 of each decade: no
    '3.3 x 10^1' labels where the times span less than a decade."""
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(plain)


MARKERS = "os^Dv<>PX*"  # libs of one family differ in shade and in marker


def _time_line(ax, series: pd.DataFrame, lib: str, colour, marker: str = "o") -> None:
    y = series["time_per_image_ms"].to_numpy(dtype=float)
    error = None
    if {"time_per_image_ms_low", "time_per_image_ms_high"} <= set(series.columns):
        low, high = (series[c].to_numpy(dtype=float) for c in ("time_per_image_ms_low", "time_per_image_ms_high"))
        usable = np.isfinite(low) & np.isfinite(high) & (low > 0)  # a log axis cannot show a bar reaching 0
        error = np.vstack([np.where(usable, y - np.minimum(low, y), 0.0), np.where(usable, np.maximum(high, y) - y, 0.0)])
    ax.errorbar(series.index.to_numpy(dtype=float), y, yerr=error, fmt=f"{marker}-", color=colour, label=lib,
                markersize=4, linewidth=1.2, capsize=2, elinewidth=0.8)


def _text(label) -> str:
    """A label is text, never mathtext: dollar signs are escaped."""
    return str(label).replace("$", r"\$")


def _legend_outside(ax, labels) -> None:
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles, [_text(x) for x in labels], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              ncol=1 + len(labels) // 18, frameon=False)


@_one_at_a_time
def layer_bars(table: pd.DataFrame, model: str) -> bytes:
    """Per-layer time per image, one horizontal bar group per layer (rows in the table's order, the slowest first;
    columns: lib, batch size), on a linear axis from zero."""
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.28 * len(table) * max(1, len(table.columns) / 2)))
    table.iloc[::-1].plot(kind="barh", ax=ax, width=0.85, colormap="tab10", grid=True)
    ax.set_xlim(0, float(table.max().max()) * 1.05)
    ax.set(title=_text(f"{model}: time per image per layer (ms)"), xlabel="ms per image", ylabel="")
    ax.set_yticks(ax.get_yticks(), [_text(x) for x in table.index[::-1]])
    _legend_outside(ax, [f"{lib}, batch {batch}" for lib, batch in table.columns])
    return _png(fig)


@_one_at_a_time
def ideal_stacked(summary: pd.DataFrame, libs: list[str]) -> bytes:
    """Stacked bars: the ideal adaptive solution's time in each lib, next to the best single lib's, each adaptive
    bar labelled with its ratio and 95% interval; the axis starts at zero and holds every bar and label."""
    rows, notes = {}, {}
    for (platform, model), row in summary.iterrows():
        name = f"{model} ({platform})"
        rows[f"{name} adaptive"] = row[libs].astype(float)
        single = pd.Series(0.0, index=libs)
        if row["best_single_lib"] in single.index:
            single[row["best_single_lib"]] = row["best_single_lib_layers_ms"]
        rows[f"{name} {row['best_single_lib']} only"] = single
        low, high = row.get("ratio_to_best_single_lib_ci_low"), row.get("ratio_to_best_single_lib_ci_high")
        notes[f"{name} adaptive"] = f"{row['ratio_to_best_single_lib']:.3g}x" + (
            f" ({low:.3g}-{high:.3g})" if pd.notna(low) and pd.notna(high) else "")
    frame = pd.DataFrame(rows).T
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.45 * len(frame)))
    frame.plot(kind="barh", stacked=True, ax=ax, colormap="tab20", grid=True, width=0.8)
    totals = frame.sum(axis=1)
    ax.set_xlim(0, float(totals.max()) * 1.45)  # room for the labels; pandas would end the axis at the longest bar
    for position, label in enumerate(frame.index):
        if label in notes:
            ax.text(float(totals[label]) + 0.01 * float(totals.max()), position, notes[label], va="center", fontsize=8)
    ax.set(title="Ideal adaptive solution vs the best single lib over the same layers (ms per image)",
           xlabel="ms per image")
    ax.set_yticks(ax.get_yticks(), [_text(x) for x in frame.index])
    _legend_outside(ax, frame.columns)
    return _png(fig)


@_one_at_a_time
def memory_time_curves(stats: pd.DataFrame, platform: str, model: str, lib: str) -> bytes:
    """Across batch sizes: the time per image (with its 95% interval) beside the peak memory per batch, each on its
    own axis from zero, so neither is flattened by the other's scale."""
    part = stats.xs((platform, model, lib), level=("platform", "model", "lib")).sort_index()
    batches = list(part.index)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    _time_line(left, part, "time per image", "tab:blue")
    left.set(ylabel="ms per image", title="time per image (error bars: 95% interval)", ylim=(0, None))
    right.plot(batches, part["memory_mbytes"], "^-", color="tab:green", label="memory per batch")
    right.set(ylabel="MB (peak)", title="memory per batch", ylim=(0, None))
    for ax in (left, right):
        _batch_axis(ax, batches)
        ax.set_xlabel("batch size" + (" (log scale)" if ax.get_xscale() == "log" else ""))
        ax.grid(True, alpha=0.4)
    fig.suptitle(_text(f"{model} with {lib} on {platform}"))
    return _png(fig)


@_one_at_a_time
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


@_one_at_a_time
def throughput_latency(latency: pd.DataFrame, front: pd.DataFrame, platform: str, model: str,
                       budget_ms: float | None = None, chosen: tuple[str, int] | None = None) -> bytes:
    """Images per second against p99 latency per batch, one marker per configuration coloured by lib, the Pareto
    front joined by a line; both axes logarithmic; the latency budget as a vertical line and the configuration
    chosen within it ringed, where given."""
    libs = list(dict.fromkeys(latency.index.get_level_values("lib")))
    colours = lib_colours(libs)
    fig, ax = plt.subplots(figsize=(10 + 2.5 * (len(libs) > 18), 5.2))
    for index, lib in enumerate(libs):
        part = latency.xs(lib, level="lib")
        ax.plot(part["latency_p99_ms"], part["images_per_second"], MARKERS[index % len(MARKERS)], color=colours[lib],
                markersize=5, label=lib, linestyle="none")
    ax.plot(front["latency_p99_ms"], front["images_per_second"], "-", color="black", linewidth=1,
            label="Pareto front", zorder=1)
    if budget_ms is not None:
        ax.axvline(budget_ms, color="tab:red", linestyle="--", linewidth=1, label=f"p99 budget {budget_ms:g} ms")
    if chosen is not None and chosen in latency.index:
        row = latency.loc[chosen]
        ax.plot([row["latency_p99_ms"]], [row["images_per_second"]], "o", markersize=13, markerfacecolor="none",
                markeredgecolor="tab:red", label=_text(f"chosen: {chosen[0]} at batch {chosen[1]}"))
    x = np.r_[latency["latency_p99_ms"].to_numpy(dtype=float), [budget_ms] if budget_ms else []]
    y = latency["images_per_second"].to_numpy(dtype=float)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x.min() / 1.4, x.max() * 1.4)
    ax.set_ylim(y.min() / 1.4, y.max() * 1.4)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
    ax.grid(True, which="major", alpha=0.4)
    ax.set(xlabel="p99 latency per batch (ms, log scale; steady state, not a queueing simulation)",
           ylabel="images per second (log)",
           title=_text(f"{model} on {platform}: throughput against p99 latency (each marker a lib at one batch size)"))
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [_text(x) for x in labels], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              ncol=1 + len(labels) // 18, frameon=False)
    return _png(fig)
