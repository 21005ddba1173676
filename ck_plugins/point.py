"""The one place that turns a measurement into a CK experiment point (JSON) and validates points. No torch."""
from __future__ import annotations

import json
from dataclasses import asdict
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import jsonschema

from .stats import summarise

if TYPE_CHECKING:
    from .engine import Measurement

SCHEMA_VERSION = 1
TAG = "explore-batch-size-libs-models"


@lru_cache(maxsize=None)
def schema() -> dict:
    return json.loads(resources.files("ck_plugins").joinpath(f"schemas/point-v{SCHEMA_VERSION}.json").read_text())


def problems(point) -> list[str]:
    """Every schema violation, each as '<path>: <message>' (empty when the point is valid)."""
    validator = jsonschema.Draft202012Validator(schema())
    found = []
    for error in sorted(validator.iter_errors(point), key=lambda e: list(map(str, e.absolute_path))):
        path = "/".join(str(p) for p in error.absolute_path) or "(root)"
        found.append(f"{path}: {error.message[:300]}")
    return found


class InvalidPoint(ValueError):
    def __init__(self, found: list[str]):
        self.problems = found
        super().__init__("invalid point: " + "; ".join(found[:5]) + (" ..." if len(found) > 5 else ""))


def validate(point: dict) -> dict:
    found = problems(point)
    if found:
        raise InvalidPoint(found)
    return point


def choices_env(m: "Measurement") -> dict:
    settings = m.settings
    compiled = {"CK_COMPILE_MODE": settings["compile_mode"], "CK_FREEZING": bool(settings.get("freezing")),
                "CK_DYNAMIC_BATCH": bool(settings.get("dynamic_batch"))} if "compile_mode" in settings else {}
    autorange = {"CK_MIN_REPETITION_MS": m.plan.min_repetition_ms} if m.plan.min_repetition_ms else {}
    if settings.get("fold_bn"):
        autorange["CK_FOLD_BN"] = True
    if settings.get("plan", {}).get("digest"):
        autorange["CK_ADAPTIVE_PLAN"] = settings["plan"]["digest"]
    return {**compiled, **autorange, "CK_MODEL": m.plan.model, "CK_LIB": settings["lib"], "CK_BATCH_SIZE": m.plan.batch_size,
            "CK_ITERATIONS": m.plan.iterations, "CK_REPETITIONS": m.plan.repetitions, "CK_WARMUP": m.plan.warmup,
            "CK_SEED": m.plan.seed, "CK_MEMORY_FORMAT": settings.get("memory_format", "nchw"),
            "CK_CUDA_GRAPH": bool(settings.get("cuda_graph", False))}


def from_measurement(m: "Measurement", peak_tflops: float | None, repo_state: dict, sweep: dict | None = None) -> dict:
    point = {
        "choices": {"env": choices_env(m), "settings": m.settings},
        "features": {"schema_version": SCHEMA_VERSION,
                     "statistical_repetitions": max(1, len(m.samples_ms)) if m.run_success else 1,
                     "platform": m.platform or {"cpu": "unknown", "torch": "unknown"},
                     "repo": repo_state, "model": {"flops_per_image": m.flops_per_image}},
        "characteristics_list": [{"run": r} for r in _runs(m, peak_tflops)],
    }
    if sweep:
        point["features"]["sweep"] = sweep
    return validate(_plain(point))


def _runs(m: "Measurement", peak_tflops: float | None) -> list[dict]:
    if not m.run_success:
        return [{"run_success": False, "error": m.error or "unknown failure", "notes": m.notes}]
    shared = {
        "clock": m.clock,
        "memory_mbytes": m.memory.peak_allocated_mbytes if m.memory.peak_allocated_mbytes is not None
        else m.memory.peak_rss_mbytes,
        "memory": asdict(m.memory),
        "accuracy": asdict(m.accuracy) if m.accuracy else None,
        "diagnosis": asdict(m.diagnosis) if m.diagnosis else None,
        "profile": _profile(m),
        "harness": m.harness,
        "warmup_s": m.warmup_s,
        "per_layer_method": m.plan.per_layer_method if m.per_layer else None,
        "notes": m.notes,
    }
    work = {w.label: w.flops for w in m.layer_work}
    runs = []
    for index, samples in enumerate(m.samples_ms):
        median = summarise(samples).median_ms
        images_per_second = 1e3 * m.plan.batch_size / median
        flops = m.flops_per_image * images_per_second
        layers = m.per_layer[index] if index < len(m.per_layer) else []
        runs.append({
            "run_success": True, "error": None, "time_fw_ms": median, "time_fw_ms_all": samples,
            "images_per_second": images_per_second, "flops_per_second": flops,
            "peak_share": flops / (peak_tflops * 1e12) if peak_tflops else None,
            "per_layer_info": [{"label": t.label, "type": t.type, "direction": "forward", "time_ms": t.time_ms,
                                "flops": work.get(t.label, 0.0) * m.plan.batch_size} for t in layers],
            **shared,
        })
    return runs


def _profile(m: "Measurement") -> dict | None:
    p = m.profile
    if p is None:
        return None
    median = summarise(m.samples_ms).median_ms
    share = (lambda part: part / p.kernel_ms if p.kernel_ms else 0.0)
    return {"gpu_busy_share": p.busy_share(median), "tensor_core_share": p.tensor_core_share,
            "layout_share": share(p.layout_ms), "elementwise_share": share(p.elementwise_ms),
            "kernel_ms_per_iteration": p.kernel_ms / p.iterations, "kernels": p.kernels,
            "top_kernels": [{"name": n[:200], "ms": ms / p.iterations} for n, ms in p.top_kernels]}


def _plain(value):
    """JSON-ready: tuples to lists, non-finite floats rejected later by the writer (allow_nan=False)."""
    return json.loads(json.dumps(value, default=str))
