"""Golden file: the committed report's summary.json is what the analysis of the committed points gives, so a
change to the reader, the time definition or the analysis that moves a published figure fails here, not silently.
After a change that is meant to move figures (or new points), regenerate it and commit both:

    python -m ck_plugins analyse --repo . --title "ck-precision-bench on an NVIDIA H200" \\
        --out docs/results/nvidia-h200/report --latency-budget-ms 5

It reads a copy of the committed points (never the live experiment/, which a running sweep may be writing).
"""
import json
import math
import shutil
from pathlib import Path

from ck_plugins import readpoints, report

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "docs" / "results" / "nvidia-h200" / "report" / "summary.json"


def _differences(expected, actual, path="") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        keys = sorted(set(expected) | set(actual))
        return [d for k in keys for d in (_differences(expected.get(k), actual.get(k), f"{path}/{k}")
                                           if k in expected and k in actual else [f"{path}/{k}: only in one"])]
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(expected)} items, now {len(actual)}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in _differences(e, a, f"{path}/{i}")]
    if isinstance(expected, float) and isinstance(actual, (int, float)):
        return [] if math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {expected} -> {actual}"]
    return [] if expected == actual else [f"{path}: {expected!r} -> {actual!r}"]


def test_the_committed_summary_is_what_the_committed_points_give(tmp_path):
    shutil.copytree(REPO / "experiment", tmp_path / "experiment")
    _, summary = report.summarise(readpoints.load([tmp_path]), latency_budget_ms=5.0)
    found = _differences(json.loads(GOLDEN.read_text()), json.loads(json.dumps(summary)))
    assert not found, f"{len(found)} figures differ from {GOLDEN.name} (see this file's docstring): " + "; ".join(found[:8])
