"""Figures in the docs, generated from the committed summary.json files: `python -m ck_plugins docs` rewrites every
block between `<!-- figures: NAME -->` and `<!-- /figures: NAME -->` in README.md and docs/*.md; `--check` only
says which files differ (tests/test_docs.py runs it). No torch.

The summaries are the analysis's own (`analyse ... --out DIR` writes DIR/summary.json; `--summary FILE` writes only
that file): change the data or the analysis, regenerate them (the commands are in docs/analysis.md), then run this.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from .analysis import ratio_text

GTX1080 = Path("docs/results/gtx1080-legacy")
H200 = Path("docs/results/nvidia-h200")
# a block on lines of its own (tables), or inline in a sentence (a figure)
BLOCK = re.compile(r"(<!-- figures: (?P<name>[a-z0-9-]+) -->\n?)(?P<body>.*?)(<!-- /figures: (?P=name) -->)", re.S)


def _summary(root: Path, path: Path) -> dict:
    return json.loads((root / path).read_text())


def _models(summary: dict) -> dict[str, dict]:
    return {m["model"]: m for m in summary["models"]}


def _ci(values) -> str:
    return f"{values[0]:,.0f}-{values[1]:,.0f}" if values else "no interval"


def gtx1080_headline(root: Path) -> str:
    """The GTX 1080 table: fastest lib, best time per image, speed-ups over the CPU and over cuDNN, the ideal."""
    base, versus = _models(_summary(root, GTX1080 / "summary.json")), _models(
        _summary(root, GTX1080 / "summary-vs-cudnn.json"))
    names = list(base)
    rows = [("fastest lib", lambda m: m["fastest_lib"]),
            ("best time per image", lambda m: f"{m['time_per_image_ms']:.3f} ms (batch {m['best_batch_size']}, "
                                              f"{m['images_per_second']:,.0f} img/s, 95% CI "
                                              f"{_ci(m['images_per_second_ci'])}{', noisy' if m['noisy'] else ''})")]
    for lib, what in (("nvidia-cudnn", "cuDNN"), ("libdnn-cuda", "libDNN"), ("nvidia-cuda", "cuBLAS")):
        rows.append((f"{what} over the CPU (OpenBLAS)", lambda m, lib=lib: ratio_text(
            m["speedup_over_baseline"][lib], m["speedup_over_baseline_ci"][lib])))
    rows.append(("fp16 cuDNN over fp32 cuDNN", lambda m: ratio_text(
        versus[m["model"]]["speedup_over_baseline"]["nvidia-fp16-cudnn"],
        versus[m["model"]]["speedup_over_baseline_ci"]["nvidia-fp16-cudnn"])))
    rows.append(("ideal adaptive solution vs cuDNN over the same layers", lambda m: ratio_text(
        m["ideal_adaptive_ratio_to_best_single_lib"], m["ideal_adaptive_ratio_to_best_single_lib_ci"])))
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {title} | " + " | ".join(cell(base[n]) for n in names) + " |" for title, cell in rows]
    return "\n".join(lines) + "\n"


DEFINITIONS = (("median", "same layers (ours, the default)", "summary.json"),
               ("min", "same layers", "summary-min-same-layers.json"),
               ("min", "timed total (the seed notebook's)", "summary-min-timed-total.json"))


def gtx1080_ideal_definitions(root: Path) -> str:
    """The ideal adaptive solution of the GTX 1080 data under each definition, with its interval."""
    summaries = [(statistic, versus, _models(_summary(root, GTX1080 / file))) for statistic, versus, file in DEFINITIONS]
    names = list(summaries[0][2])
    lines = ["| layer statistic | compared with | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for statistic, versus, models in summaries:
        cells = [ratio_text(models[n]["ideal_adaptive_ratio_to_best_single_lib"],
                            models[n]["ideal_adaptive_ratio_to_best_single_lib_ci"]) for n in names]
        lines.append(f"| {statistic} | {versus} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def h200_points(root: Path) -> str:
    """Inline: how many configurations and repetitions the committed H200 report reads."""
    summary = _summary(root, H200 / "report" / "summary.json")
    return f"{summary['points']:,} configurations ({summary['repetitions']:,} repetitions)"


def _precision_bench(root: Path, batch: int) -> list[dict]:
    return [m for m in _summary(root, H200 / f"resnet-fp16-bs{batch}.json")["modes"] if m["run_success"]]


def h200_fp16_batch1(root: Path) -> str:
    """Inline: fp16 against fp32 at batch 1 in `resnet-fp16` on the H200, the range over both layouts."""
    ratios = [m["speedup_vs_fp32"] for m in _precision_bench(root, 1) if m["precision"] == "fp16"]
    return f"{min(ratios):.2f}-{max(ratios):.2f}x"


def h200_fp16_batch256(root: Path) -> str:
    """Inline: fp16 channels_last against fp32 at batch 256 in `resnet-fp16` on the H200."""
    return f"{next(m['speedup_vs_fp32'] for m in _precision_bench(root, 256) if m['precision'] == 'fp16' and m['memory_format'] == 'channels_last'):.1f}x"


def h200_sweep_resnet50_batch1(root: Path) -> str:
    """Inline: ResNet-50 at batch 1 in the H200 sweep, fp16 against fp32, with the interval."""
    model = _models(_summary(root, H200 / "report" / "summary.json"))["resnet50"]
    at = next(v for v in model["fp16_versus_fp32"] if v["batch_size"] == 1)
    return (f"{at['fp16_images_per_second']:,.0f} img/s in fp16 against {at['fp32_images_per_second']:,.0f} in fp32, "
            f"{ratio_text(at['ratio'], at['ratio_ci'])}")


RESNET50_ROWS = (("torch-cublas-fp32", "torch-cublas-fp32 (cuDNN off)"), ("torch-cublas-fp16", "torch-cublas-fp16 (cuDNN off)"),
                 ("torch-cudnn-fp32", "torch-cudnn-fp32 (TF32 off)"), ("torch-cudnn-tf32", "torch-cudnn-tf32"),
                 ("torch-amp", "torch-amp (channels_last)"), ("torch-cudnn-bf16", "torch-cudnn-bf16 (channels_last)"),
                 ("torch-cudnn-fp16", "torch-cudnn-fp16 (channels_last)"),
                 ("torch-cudnn-fp16+graph", "torch-cudnn-fp16 + CUDA graph"),
                 ("torch-compile-fp16+freezing", "torch-compile-fp16 + freezing"),
                 ("torch-compile-fp16+reduce-overhead+freezing", "torch-compile-fp16 reduce-overhead + freezing"),
                 ("cudnn-graph-fp16+graph", "cudnn-graph-fp16 + CUDA graph (fused)"))
RESNET50_BATCHES = ("1", "16", "64", "256", "1024")


def h200_resnet50_rates(root: Path) -> str:
    """The H200 sweep's ResNet-50 images per second per lib and batch size (blank: not measured)."""
    rates = _models(_summary(root, H200 / "report" / "summary.json"))["resnet50"]["images_per_second_by_lib"]
    lines = ["| lib | batch " + " | ".join(RESNET50_BATCHES) + " |", "|---|" + "---:|" * len(RESNET50_BATCHES)]
    for lib, title in RESNET50_ROWS:
        cells = [f"{rates.get(lib, {})[b]:,.0f}" if b in rates.get(lib, {}) else "" for b in RESNET50_BATCHES]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def h200_latency_budget(root: Path) -> str:
    """The committed H200 report's answer to `--latency-budget-ms`: per model, the most images/s within p99."""
    summary = _summary(root, H200 / "report" / "summary.json")
    budget = summary["latency_budget_ms"]
    lines = [f"| model | p99 within {budget:g} ms: lib at batch | img/s | p50 / p99 (ms) | configurations within |",
             "|---|---|---:|---:|---:|"]
    for row in summary["latency_budget"]:
        choice = f"{row['lib']} at {row['batch_size']}" if row["within_budget"] else \
            f"none (lowest p99: {row['lib']} at {row['batch_size']})"
        lines.append(f"| {row['model']} | {choice} | {row['images_per_second']:,.0f} | {row['latency_p50_ms']:.3g} / "
                     f"{row['latency_p99_ms']:.3g} | {row['configurations_within']} of {row['configurations']} |")
    return "\n".join(lines) + "\n"


BLOCKS: dict[str, Callable[[Path], str]] = {
    "gtx1080-headline": gtx1080_headline, "gtx1080-ideal-definitions": gtx1080_ideal_definitions,
    "h200-points": h200_points, "h200-fp16-batch1": h200_fp16_batch1, "h200-fp16-batch256": h200_fp16_batch256,
    "h200-sweep-resnet50-batch1": h200_sweep_resnet50_batch1, "h200-resnet50-rates": h200_resnet50_rates,
    "h200-latency-budget": h200_latency_budget}


def documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "docs").glob("results/*/*.md"))]


def render(root: Path) -> dict[Path, str]:
    """Every document with a figures block, as the command would write it. An unknown block name is an error."""
    out = {}
    for path in documents(root):
        text = path.read_text()

        def fill(found: re.Match) -> str:
            name = found["name"]
            if name not in BLOCKS:
                raise ValueError(f"{path.name}: figures block {name!r}; expected one of {', '.join(BLOCKS)}")
            return found.group(1) + BLOCKS[name](root) + found.group(4)

        new = BLOCK.sub(fill, text)
        if BLOCK.search(text):
            out[path] = new
    return out


def run(root: Path, check: bool) -> list[Path]:
    """Write (or with `check`, only compare) every generated block; the documents that differ(ed)."""
    rendered = render(root)
    differ = [path for path, text in rendered.items() if path.read_text() != text]
    if not check:
        for path in differ:
            path.write_text(rendered[path])
    return differ
