"""One self-contained HTML page (tables and plots) and a JSON summary of the headline figures, rendered from one
`analysis.Result`. No torch."""
from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from . import analysis, compare, latency, plots
from .files import write_json_atomic
from .readpoints import Loaded

STYLE = """body{font-family:sans-serif;margin:1.5em 2em;max-width:1250px} table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} h2{border-bottom:2px solid #444}
img{max-width:100%;border:1px solid #ddd;margin:4px 0} .skipped{color:#a00}
table.glance td{text-align:left;vertical-align:top;font-size:13px} table.glance th{text-align:left;background:#f3f3f3}
.why{color:#555;font-size:11px;display:block;max-width:26em} .big{font-weight:bold}"""


ADAPTIVE_DIMENSIONS = ("CK_ADAPTIVE_PLAN",)  # what tells adaptive points apart: shown by what each plan mixes
LAYERS_SHOWN = 20  # per-layer tables and plots: the slowest layers, then the rest summed


@dataclass
class Report:
    html_path: Path
    summary_path: Path
    summary: dict


def summarise(loaded: Loaded, baseline: str | None = None, adaptive_libs: list[str] | None = None,
              layer_statistic: str = "median", ideal_versus: str = "same-layers",
              latency_budget_ms: float | None = None) -> tuple[analysis.Result, dict]:
    """The analysis and the JSON summary (summary.json) of the headline figures, without rendering anything."""
    result = analysis.analyse(_without_adaptive(loaded), baseline, adaptive_libs, layer_statistic, ideal_versus)
    steps = compare.steps(compare.regressions(result.loaded))
    return result, dict(result.headline, adaptive_built=_adaptive_summary(loaded.adaptive),
                        **latency.summary(result.latency, latency_budget_ms),
                        regressions=json.loads(steps.to_json(orient="records")))


def build(loaded: Loaded, out_dir: Path, baseline: str | None = None, title: str = "ck-precision-bench report",
          adaptive_libs: list[str] | None = None, layer_statistic: str = "median",
          ideal_versus: str = "same-layers", latency_budget_ms: float | None = None) -> Report:
    built = loaded.adaptive
    result, summary = summarise(loaded, baseline, adaptive_libs, layer_statistic, ideal_versus, latency_budget_ms)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = (_sections(result, out_dir) + [_adaptive_section(built, out_dir)]
                + [_latency_section(result, summary, out_dir), _regressions_section(result, summary)] + _tail(result))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>" + "".join(sections) + "</body></html>")
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    summary_path = write_json_atomic(out_dir / "summary.json", summary)
    return Report(html_path, summary_path, summary)


def _sections(r: analysis.Result, out_dir: Path) -> list[str]:
    s = [_headline_html(r.headline), _dimensions_html(r.headline)]
    for platform, model in r.best.reset_index()[analysis.MODEL].drop_duplicates().itertuples(index=False):
        png = plots.time_per_image(r.stats, platform, model)
        s.append(_img(png, out_dir / f"time-per-image-{_file(platform, model)}.png"))
    s.append(_table("Execution time per batch (ms): each point's time, the median of its repetitions",
                    analysis.time_per_batch(r.stats)))
    s.append(_table("Execution time per image (ms)", analysis.time_per_image(r.stats)))
    s.append(_table("Best time per image, and the batch size that gives it", r.best))
    s.append(_table(f"Speed-up over {r.baseline} on the same platform (best time per image), with its 95% interval "
                    "(Fieller's, over the repetitions; '=' where the interval holds 1: no significant difference)",
                    _with_interval(r.speedups, *r.speedups_ci)))
    s.append(_table("Repetitions: mean, standard deviation and 95% interval of the mean (ms per batch)",
                    r.stats[["repetitions", "time_ms", "time_ms_mean", "time_ms_std", "ci95_low_ms", "ci95_high_ms",
                             "spread", "noisy"]]))
    s.append(_table("Memory per batch (MB)", r.stats["memory_mbytes"].unstack("batch_size")))
    s.append(_table("Good-enough batch size (within 5% of the best time per image) and its memory",
                    analysis.good_enough_batch(r.stats)))
    s += _ideal_sections(r, out_dir)
    return s


def _tail(r: analysis.Result) -> list[str]:
    s = []
    models = list(r.best.index.get_level_values("model").unique())
    if len(models) >= 2:
        s.append(_table(f"Compare {models[0]} and {models[1]}", analysis.compare_models(r.best, r.stats, *models[:2])))
    if r.stats["peak_share"].notna().any():
        s.append(_table("Share of the GPU's peak FLOP/s", r.stats["peak_share"].unstack("batch_size")))
    if r.stats["joules_per_image"].notna().any():
        energy = r.stats[r.stats["joules_per_image"].notna()]
        s.append(_table("GPU energy per image (mJ, NVML, over the timed repetitions)",
                        (1e3 * energy["joules_per_image"]).unstack("batch_size")))
        s.append(_table("Images per second per watt (images per joule)", energy["images_per_joule"].unstack("batch_size")))
    anchors = analysis.nearest_anchors(r.stats)
    if not anchors.empty:
        s.append(_table("Nearest published/anchor figures (same GPU, model and configuration)", anchors))
    s.append(_accuracy_section(r))
    s.append(_harness_html(r))
    noisy = r.stats[r.stats["noisy"]][["time_ms", "spread", "iqr_over_median", "ci95_low_ms", "ci95_high_ms"]]
    s.append(_table("Noisy points (repetitions or iterations spread by more than 5%)", noisy))
    s.append(_table("Failed points", analysis.failures(r.loaded.runs)))
    skipped = "".join(f"<li class='skipped'>{html.escape(x)}</li>" for x in r.loaded.skipped) or "<li>none</li>"
    s.append(f"<h2>Skipped input ({len(r.loaded.skipped)})</h2><ul>{skipped}</ul>")
    return s


def differences(expected, actual, path: str = "") -> list[str]:
    """Every figure of a summary that differs from an expected one ('<path>: old -> new'), floats to 1e-9."""
    import math

    if isinstance(expected, dict) and isinstance(actual, dict):
        keys = sorted(set(expected) | set(actual))
        return [d for k in keys for d in (differences(expected.get(k), actual.get(k), f"{path}/{k}")
                                           if k in expected and k in actual else [f"{path}/{k}: only in one"])]
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(expected)} items, now {len(actual)}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(e, a, f"{path}/{i}")]
    if isinstance(expected, float) and isinstance(actual, (int, float)):
        return [] if math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {expected} -> {actual}"]
    return [] if expected == actual else [f"{path}: {expected!r} -> {actual!r}"]


def _latency_section(r: analysis.Result, summary: dict, out_dir: Path) -> str:
    """Throughput against p99 latency per (platform, model), the Pareto front, and the budget's answer if asked."""
    table = r.latency[r.latency["latency_p99_ms"].notna()]
    if table.empty:
        return ("<h2>Latency</h2><p>No point kept its timed iterations (legacy CK data keeps one time per repetition): "
                "no percentiles.</p>")
    budget = summary.get("latency_budget_ms")
    parts = [f"<h2>Latency: throughput against p99</h2><p>p50, p90 and p99 of the per-batch latency: "
             f"{html.escape(latency.STEADY_STATE)}.</p>"]
    fronts, chosen = [], pd.DataFrame()
    if budget is not None:
        chosen = pd.DataFrame(summary["latency_budget"]).set_index(["platform", "model"])
        parts.append(_table(f"The most images per second with p99 within {budget:g} ms", chosen))
    for (platform, model), part in table.groupby(level=["platform", "model"], observed=True):
        front = latency.pareto(part)
        fronts.append(front)
        choice = chosen.loc[(platform, model)] if budget is not None and (platform, model) in chosen.index else None
        ring = (choice["lib"], int(choice["batch_size"])) if choice is not None and choice["within_budget"] else None
        png = plots.throughput_latency(part.droplevel(["platform", "model"]), front, platform, model, budget, ring)
        parts.append(_img(png, out_dir / f"throughput-latency-{_file(platform, model)}.png"))
    parts.append(_table("The Pareto front: no other configuration has more images per second at no more p99 "
                        "latency", pd.concat(fronts).drop(columns="iterations")))
    return "".join(parts)


def _regressions_section(r: analysis.Result, summary: dict) -> str:
    """Steps in time between adjacent software versions (compare.regressions), significant ones only."""
    steps = pd.DataFrame(summary["regressions"])
    versions = {name: compare.known_versions(r.loaded.runs[name]) for name in compare.VERSIONS}
    seen = "; ".join(f"{name} {', '.join(values) or 'not recorded'}" for name, values in versions.items())
    head = (f"<h2>Regressions across software versions</h2><p>Versions in these points: {html.escape(seen)}. A step "
            f"is named where a configuration's time between adjacent versions moved by at least "
            f"{compare.THRESHOLD:.0%}, its 95% interval excludes 1 and Mann-Whitney's p &lt; {compare.ALPHA}.</p>")
    if steps.empty:
        return head + "<p>No significant step.</p>"
    return head + _table("Significant steps (ratio: the later version's time over the earlier one's)",
                         steps.set_index(["platform", "model", "lib", "batch_size"]))


def _accuracy_section(r: analysis.Result) -> str:
    table = analysis.accuracy(r.loaded.runs)
    if table.empty:
        return ""
    random = not table["top1_agreement"].notna().any()
    note = ("Every point here ran with random weights, so only the logit error is shown: a network with random "
            "weights gives nearly the same class for every input, and top-1 agreement would hold trivially. Points "
            "measured with <code>--weights FILE</code> or <code>CK_PRETRAINED=true</code> (and <code>--images "
            "DIR</code>) show it." if random else
            "Top-1 agreement is shown only for points whose network held real weights (a state_dict file or the "
            "zoo's); with random weights it would hold trivially.")
    shown = table.drop(columns="top1_agreement") if random else table
    return (f"<h2>Accuracy against fp32 (TF32 off, same images)</h2><p>{note}</p>"
            + shown.to_html(float_format=lambda v: f"{v:.3g}", na_rep=""))


def _ideal_sections(r: analysis.Result, out_dir: Path) -> list[str]:
    ideal = r.ideal
    s = [f"<h2>Ideal adaptive solution</h2><p>Each layer on the lib with its least time per image (layers matched "
         f"by name; per-layer statistic over repetitions: <b>{html.escape(r.layer_statistic)}</b>), compared with the "
         "best single lib over the same layers, which it can never exceed. From the repetitions whose per-layer sum is "
         f"within 20% of the timed pass; {r.per_layer_repetitions_dropped:.0%} of repetitions left out (launch-bound "
         "runs, where timing each layer costs more than the layer).</p>"]
    s.append(_table("Ideal adaptive solution: ms per image spent in each lib", ideal.summary))
    if not ideal.summary.empty:
        libs = [c for c in ideal.summary.columns if c not in analysis.IDEAL_COLUMNS]
        s.append(_img(plots.ideal_stacked(ideal.summary, libs), out_dir / "ideal-adaptive.png"))
    s.append(_table("Libs left out of the ideal solution, and why", ideal.excluded.set_index(analysis.MODEL + ["lib"])
                    if not ideal.excluded.empty else ideal.excluded))
    absent = pd.DataFrame([{"platform": p, "model": m, "why": why} for (p, m), why in ideal.absent.items()])
    s.append(_table("No ideal solution", absent.set_index(analysis.MODEL) if not absent.empty else absent))
    s.append(_table("Ideal adaptive solution: the lib each layer picks", ideal.choices))
    s += _per_layer(r, out_dir)
    s += _memory_curves(r, out_dir)
    return s


def _without_adaptive(loaded: Loaded) -> Loaded:
    keep = ~loaded.runs.index.get_level_values("lib").str.startswith("adaptive")
    layers = loaded.layers[~loaded.layers["lib"].astype(str).str.startswith("adaptive")]
    dimensions = {k: v for k, v in loaded.dimensions.items() if k not in ADAPTIVE_DIMENSIONS}
    return replace(loaded, runs=loaded.runs[keep], layers=layers, dimensions=dimensions)


def _adaptive_summary(built: pd.DataFrame) -> list[dict]:
    if built.empty:
        return []
    columns = ["platform", "model", "batch_size", "cuda_graph", "per_layer_method", "best_single_lib",
               "best_single_lib_ms", "predicted_ms", "greedy_ms", "planned_ms", "measured_ms", "measured_over_best",
               "configs_used"]
    records = json.loads(built[columns].to_json(orient="records"))
    for record, low, high in zip(records, built["measured_over_best_ci_low"], built["measured_over_best_ci_high"]):
        record["measured_over_best_ci"] = analysis.interval(low, high)
    return records


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
    shown = built.drop(columns=["run"]).set_index(["platform", "model", "batch_size", "cuda_graph", "per_layer_method"])
    plot = _img(plots.adaptive_built(built), out_dir / "adaptive-built.png")
    return head + plot + shown.to_html(float_format=lambda v: f"{v:.4g}", na_rep="")


def _headline_html(summary: dict) -> str:
    """The first screen: per platform, one row per model saying what is fastest, how fp16 compares with fp32 and
    why, and what a per-layer mix would give; every ratio with its interval."""
    by_platform: dict[str, list[dict]] = {}
    for f in summary["models"]:
        by_platform.setdefault(f["platform"], []).append(f)
    head = (f"<p>{summary['points']} points ({summary['repetitions']} repetitions) on "
            f"{html.escape(', '.join(summary['platforms']))}; ratios with their 95% interval (\"no significant "
            f"difference\" where it holds 1); speed-ups in the tables below are over "
            f"{html.escape(summary['baseline'])}. {len(summary['harness'])} harness checks apart, "
            f"{summary['failed_repetitions']} failed repetitions, {summary['skipped_count']} files skipped (listed at "
            "the end).</p>")
    tables = "".join(f"<h3>{html.escape(platform)}</h3><table class='glance'><tr><th>model</th><th>fastest "
                     "configuration</th><th>fp16 against fp32 (cuDNN), and why</th><th>ideal per-layer mix of libs"
                     "</th></tr>" + "".join(_glance_row(f) for f in rows) + "</table>"
                     for platform, rows in by_platform.items())
    return f"<h2>At a glance</h2>{head}{tables}"


def _glance_row(f: dict) -> str:
    fastest = (f"<span class='big'>{html.escape(analysis.images_per_second_text(f))}</span><br>"
               f"{html.escape(f['fastest_lib'])} at batch {f['best_batch_size']}"
               + (f"<span class='why'>{html.escape(f['fastest_configuration'])}</span>"
                  if f.get("fastest_configuration") else ""))
    versus = "<br>".join(
        f"batch {v['batch_size']}: <b>{html.escape(analysis.ratio_text(v['ratio'], v['ratio_ci']))}</b>"
        f"<span class='why'>{html.escape(v['reason'])}</span>" for v in f.get("fp16_versus_fp32", [])) or \
        "not measured (needs cuDNN in fp16 and fp32 at a common batch size)"
    return (f"<tr><td><b>{html.escape(f['model'])}</b></td><td>{fastest}</td><td>{versus}</td>"
            f"<td>{html.escape(f['ideal_adaptive'])}</td></tr>")


def _dimensions_html(summary: dict) -> str:
    if not summary["dimensions"]:
        return ""
    items = "".join(f"<li>{html.escape(name)}: {html.escape(', '.join(values))} (select one with "
                    f"<code>--where {html.escape(name)}=VALUE</code>)</li>" for name, values in summary["dimensions"].items())
    return (f"<h2>Dimensions beside platform, model, lib and batch size</h2><p>Each value is its own lib or platform "
            f"label; nothing is pooled.</p><ul>{items}</ul>")


def _harness_html(r: analysis.Result) -> str:
    if r.harness.empty:
        return ""
    return _table("Harness checks (the null lib runs no network: what the harness itself costs, never ranked)",
                  r.harness[["repetitions", "time_ms", "spread", "noisy"]])


def _per_layer(r: analysis.Result, out_dir: Path) -> list[str]:
    out = []
    for (platform, model), part in r.best.groupby(level=analysis.MODEL, observed=True):
        ranked = part.droplevel(analysis.MODEL)["time_per_image_ms"].sort_values().index[:2].tolist()
        batch = int(part.droplevel(analysis.MODEL).loc[ranked[0], "best_batch_size"])
        table = analysis.layer_time_per_image(r.loaded.layers, platform, model, ranked, [batch],
                                              statistic=r.layer_statistic)
        if table.empty:
            continue
        shown = analysis.top_layers(table, LAYERS_SHOWN)
        out.append(_table(f"{model} on {platform}: time per image per layer (ms), batch {batch}: the "
                          f"{min(LAYERS_SHOWN, len(table))} slowest of {len(table)} layers"
                          + (", the rest summed" if len(table) > LAYERS_SHOWN else ""), shown))
        out.append(_img(plots.layer_bars(shown, model), out_dir / f"per-layer-{_file(platform, model)}.png"))
    return out


def _memory_curves(r: analysis.Result, out_dir: Path) -> list[str]:
    out = []
    for (platform, model), part in r.best.groupby(level=analysis.MODEL, observed=True):
        lib = part.droplevel(analysis.MODEL)["time_per_image_ms"].idxmin()
        if r.stats.xs((platform, model, lib), level=analysis.CONFIG).shape[0] > 1:
            out.append(f"<h2>{html.escape(model)} with {html.escape(lib)} on {html.escape(platform)}: time and memory "
                       "across batch sizes</h2>")
            png = plots.memory_time_curves(r.stats, platform, model, lib)
            out.append(_img(png, out_dir / f"memory-time-{_file(platform, model)}.png"))
    return out


def _with_interval(ratio: pd.DataFrame, low: pd.DataFrame, high: pd.DataFrame) -> pd.DataFrame:
    """Each ratio as '1.75 (1.70-1.80)' ('= ' before it where the interval holds 1), blank where there is none."""
    def cell(r, lo, hi):
        if pd.isna(r):
            return ""
        if pd.isna(lo) or pd.isna(hi):
            return f"{r:.3g} (no interval)"
        return f"{'= ' if lo <= 1 <= hi else ''}{r:.3g} ({lo:.3g}-{hi:.3g})"
    cells = [[cell(*v) for v in zip(*rows)] for rows in zip(ratio.to_numpy(), low.to_numpy(), high.to_numpy())]
    return pd.DataFrame(cells, index=ratio.index, columns=ratio.columns)


MAX_FILE_SLUG = 80  # a name from the data (a 4,096-character CPU name) never becomes a file name as it is


def _file(platform: str, model: str) -> str:
    """A plot's file name from its model and platform: a short slug, with a hash where the names are long."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{model}-{platform}").strip("-").lower()
    if len(slug) <= MAX_FILE_SLUG:
        return slug
    return f"{slug[:MAX_FILE_SLUG - 9].rstrip('-.')}-{hashlib.sha256(f'{model}|{platform}'.encode()).hexdigest()[:8]}"


def _table(title: str, frame: pd.DataFrame) -> str:
    body = frame.to_html(float_format=lambda v: f"{v:.4g}", na_rep="") if not frame.empty else "<p>none</p>"
    return f"<h2>{html.escape(title)}</h2>{body}"


def _img(png: bytes, path: Path) -> str:
    path.write_bytes(png)
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
