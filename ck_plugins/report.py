"""One self-contained HTML page (tables and plots) and a JSON summary of the headline figures. No torch."""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis, plots
from .ckrepo import write_json_atomic
from .readpoints import Loaded

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px} table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} h2{border-bottom:2px solid #444}
img{max-width:100%;border:1px solid #ddd;margin:4px 0} .skipped{color:#a00}"""


@dataclass
class Report:
    html_path: Path
    summary_path: Path
    summary: dict


def default_baseline(libs: list[str]) -> str:
    for name in ("cpu", "torch-cpu", "torch-cudnn-fp32", "nvidia-cudnn"):
        if name in libs:
            return name
    return libs[0]


def headline(loaded: Loaded, stats: pd.DataFrame, best: pd.DataFrame, baseline: str, ideal: pd.DataFrame) -> dict:
    """The figures a reader wants first, per model: the fastest lib and how it compares."""
    speed = analysis.speedup(best, baseline)
    models = {}
    for model, part in best.groupby(level="model", observed=True):
        part = part.droplevel("model")
        fastest = part["time_per_image_ms"].idxmin()
        models[model] = {
            "fastest_lib": fastest, "best_batch_size": int(part.loc[fastest, "best_batch_size"]),
            "time_per_image_ms": float(part.loc[fastest, "time_per_image_ms"]),
            "images_per_second": float(part.loc[fastest, "images_per_second"]),
            "speedup_over_baseline": {lib: _f(v) for lib, v in speed.loc[model].items()},
            "ideal_adaptive_ms": _f(ideal["total_ms"].get(model)),
            "ideal_adaptive_ratio_to_best_single_lib": _f(ideal["ratio_to_best_single_lib"].get(model)),
        }
    runs = loaded.runs
    return {"baseline": baseline, "points": int(len(stats)), "repetitions": int(len(runs)),
            "failed_repetitions": int((~runs["success"]).sum()), "noisy_points": int(stats["noisy"].sum()),
            "skipped": loaded.skipped, "models": models}


def _f(value) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def build(loaded: Loaded, out_dir: Path, baseline: str | None = None, title: str = "ck-precision-bench report",
          adaptive_libs: list[str] | None = None) -> Report:
    built = loaded.adaptive
    loaded = _without_adaptive(loaded)  # built adaptive models get their own section, beside what they predicted
    if loaded.runs.empty or not loaded.runs["success"].any():
        raise ValueError("no successful point to analyse" + (f" (skipped: {loaded.skipped})" if loaded.skipped else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = analysis.time_stats(loaded.runs)
    best = analysis.best_time_per_image(stats)
    libs = sorted(best.index.get_level_values("lib").unique())
    baseline = baseline or default_baseline(libs)
    trusted, dropped = analysis.trusted_layers(loaded.layers, loaded.runs)
    ideal, choices = analysis.ideal_adaptive(trusted, stats, adaptive_libs)
    summary = headline(loaded, stats, best, baseline, ideal)
    summary["per_layer_repetitions_dropped"] = dropped
    summary["adaptive_built"] = _adaptive_summary(built)
    sections = _sections(loaded, stats, best, summary, ideal, choices, out_dir)
    sections.insert(sections.index(_ADAPTIVE_ANCHOR), _adaptive_section(built, out_dir))
    sections.remove(_ADAPTIVE_ANCHOR)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>" + "".join(sections) + "</body></html>")
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    summary_path = write_json_atomic(out_dir / "summary.json", summary)
    return Report(html_path, summary_path, summary)


def _sections(loaded, stats, best, summary, ideal, choices, out_dir: Path) -> list[str]:
    baseline = summary["baseline"]
    s = [_headline_html(summary)]
    for model in best.index.get_level_values("model").unique():
        s.append(_img(plots.time_per_image_bars(stats, model), out_dir / f"time-per-image-{model}.png"))
    s.append(_table("Mean execution time per batch (ms)", analysis.mean_time_per_batch(stats)))
    s.append(_table("Mean execution time per image (ms)", analysis.mean_time_per_image(stats)))
    s.append(_table("Best mean time per image, and the batch size that gives it", best))
    s.append(_table(f"Speed-up over {baseline} (best time per image)", analysis.speedup(best, baseline)))
    s.append(_table("Memory per batch (MB)", stats["memory_mbytes"].unstack("batch_size")))
    s.append(_table("Good-enough batch size (within 5% of the best time per image) and its memory",
                    analysis.good_enough_batch(stats)))
    s.append(f"<h2>Ideal adaptive solution</h2><p>From the repetitions whose per-layer sum is within 20% of the "
             f"timed pass; {summary['per_layer_repetitions_dropped']:.0%} of repetitions left out (launch-bound runs, where timing each layer costs "
             "more than the layer).</p>")
    s.append(_table("Ideal adaptive solution: ms per image spent in each lib", ideal))
    if not ideal.empty:
        s.append(_img(plots.ideal_stacked(ideal), out_dir / "ideal-adaptive.png"))
    s.append(_table("Ideal adaptive solution: the lib each layer picks", choices))
    s.append(_ADAPTIVE_ANCHOR)
    s += _per_layer(loaded, best, out_dir)
    s += _memory_curves(stats, best, out_dir)
    models = list(best.index.get_level_values("model").unique())
    if len(models) >= 2:
        s.append(_table(f"Compare {models[0]} and {models[1]}", analysis.compare_models(best, stats, *models[:2])))
    if stats["peak_share"].notna().any():
        s.append(_table("Share of the GPU's peak FLOP/s", stats["peak_share"].unstack("batch_size")))
    anchors = analysis.nearest_anchors(stats, loaded.runs)
    if not anchors.empty:
        s.append(_table("Nearest published/anchor figures (same GPU, model and configuration)", anchors))
    noisy = stats[stats["noisy"]][["time_ms_mean", "time_ms_std", "ci95_low_ms", "ci95_high_ms"]]
    s.append(_table("Noisy points (IQR over median > 5%), with 95% intervals", noisy))
    s.append(_table("Failed points", analysis.failures(loaded.runs)))
    skipped = "".join(f"<li class='skipped'>{html.escape(x)}</li>" for x in loaded.skipped) or "<li>none</li>"
    s.append(f"<h2>Skipped input</h2><ul>{skipped}</ul>")
    return s


_ADAPTIVE_ANCHOR = "<!-- adaptive built -->"


def _without_adaptive(loaded: Loaded) -> Loaded:
    keep = ~loaded.runs.index.get_level_values("lib").str.startswith("adaptive")
    layers = loaded.layers[~loaded.layers["lib"].astype(str).str.startswith("adaptive")] if len(loaded.layers) else loaded.layers
    return Loaded(loaded.runs[keep], layers, loaded.skipped, loaded.adaptive)


def _adaptive_summary(built: pd.DataFrame) -> list[dict]:
    if built.empty:
        return []
    columns = ["model", "batch_size", "cuda_graph", "per_layer_method", "best_single_lib", "best_single_lib_ms",
               "predicted_ms", "greedy_ms", "planned_ms", "measured_ms", "measured_over_best", "configs_used"]
    return json.loads(built[columns].to_json(orient="records"))


def _adaptive_section(built: pd.DataFrame, out_dir: Path) -> str:
    head = ("<h2>Adaptive solution, built and measured</h2><p>Each row: the candidate libs measured layer by layer in "
            "one run, the greedy per-layer choice (<b>predicted</b>: the notebook's ideal, conversions ignored), the "
            "same plan with its measured casts and relayouts (<b>greedy_ms</b>), the planner's plan with conversions "
            "(<b>planned</b>), and the <b>measured</b> time of the model built from the plan (the <code>adaptive</code> "
            "lib), against the best single lib of the same run, all in ms per batch. The adaptive model takes fp32 NCHW "
            "images and returns fp32 logits inside its timed pass; single libs convert their input outside it. "
            "per_layer_method <i>hooks</i> times layers inside the running model (launch gaps included); "
            "<i>isolated</i> replays each layer alone in a CUDA graph.</p>")
    if built.empty:
        return head + "<p>No adaptive point yet: <code>python -m ck_plugins adaptive</code> makes them.</p>"
    shown = built.drop(columns=["run"]).set_index(["model", "batch_size", "cuda_graph", "per_layer_method"])
    plot = _img(plots.adaptive_built(built), out_dir / "adaptive-built.png")
    return head + plot + shown.to_html(float_format=lambda v: f"{v:.4g}", na_rep="")


def _headline_html(summary: dict) -> str:
    rows = []
    for model, f in summary["models"].items():
        ratio = f["ideal_adaptive_ratio_to_best_single_lib"]
        rows.append(f"<li><b>{html.escape(model)}</b>: fastest lib <b>{html.escape(f['fastest_lib'])}</b>, "
                    f"{f['time_per_image_ms']:.3f} ms per image at batch {f['best_batch_size']} "
                    f"({f['images_per_second']:.0f} img/s); the ideal adaptive solution would take "
                    f"{'n/a' if ratio is None else f'{ratio:.2f}x'} the best single lib's time</li>")
    return (f"<h2>Headline</h2><p>{summary['repetitions']} repetitions read; baseline "
            f"{html.escape(summary['baseline'])}.</p><ul>{''.join(rows)}</ul>")


def _per_layer(loaded, best, out_dir: Path) -> list[str]:
    out = []
    for model, part in best.groupby(level="model", observed=True):
        ranked = part.droplevel("model")["time_per_image_ms"].sort_values().index[:2].tolist()
        batch = int(part.droplevel("model").loc[ranked[0], "best_batch_size"])
        table = analysis.layer_time_per_image(loaded.layers, model, ranked, [batch], lower=0.05)
        if table.empty:
            continue
        out.append(_table(f"{model}: time per image per layer (ms), layers over 5% of the total, batch {batch}", table))
        out.append(_img(plots.layer_bars(table, model), out_dir / f"per-layer-{model}.png"))
    return out


def _memory_curves(stats, best, out_dir: Path) -> list[str]:
    out = []
    for model, part in best.groupby(level="model", observed=True):
        lib = part.droplevel("model")["time_per_image_ms"].idxmin()
        if stats.xs((model, lib), level=("model", "lib")).shape[0] > 1:
            out.append(f"<h2>{html.escape(model)} with {html.escape(lib)}: time and memory across batch sizes</h2>")
            out.append(_img(plots.memory_time_curves(stats, model, lib), out_dir / f"memory-time-{model}.png"))
    return out


def _table(title: str, frame: pd.DataFrame) -> str:
    body = frame.to_html(float_format=lambda v: f"{v:.4g}", na_rep="") if not frame.empty else "<p>none</p>"
    return f"<h2>{html.escape(title)}</h2>{body}"


def _img(png: bytes, path: Path) -> str:
    path.write_bytes(png)
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
