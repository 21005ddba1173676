"""What a submission must be: a bounded JSON bundle of schema-valid, plausible points. Every problem is reported
with its path (nothing stops at the first). Used by the client before sending and by the server again. No torch."""
from __future__ import annotations

import json
import math

from .. import point as point_schema
from ..roofline import peak_tflops
from ..stats import repetition_time_ms

MAX_BODY_BYTES = 8 * 2**20
MAX_POINTS = 200
MAX_STRING = 4096
MAX_ITEMS = 50_000  # elements of any one array
MAX_DEPTH = 24
MIN_REPETITIONS = 3


class Rejected(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))


def parse(body: bytes) -> dict:
    """Size-limited UTF-8 JSON, an object with a list of points (NaN and Infinity are refused by check_bundle)."""
    if len(body) > MAX_BODY_BYTES:
        raise Rejected([f"(body): {len(body)} bytes; at most {MAX_BODY_BYTES} accepted"])
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=float)  # NaN/Infinity: reported with their path
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as error:
        raise Rejected([f"(body): not valid JSON ({str(error)[:200]})"]) from None
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise Rejected(["points: expected an object {\"points\": [point, ...]}"])
    return data


def check_bundle(data: dict) -> list[str]:
    points = data["points"]
    if not 1 <= len(points) <= MAX_POINTS:
        return [f"points: {len(points)} points; 1 to {MAX_POINTS} accepted"]
    problems = _check_shape(data, "", 0)
    if problems:
        return problems
    for index, item in enumerate(points):
        problems += check_point(item, f"points/{index}")
    return problems


def _check_shape(value, path: str, depth: int) -> list[str]:
    """Bounded strings, arrays and nesting, before the schema looks at anything."""
    if depth > MAX_DEPTH:
        return [f"{path or '(body)'}: nested deeper than {MAX_DEPTH}"]
    if isinstance(value, str) and len(value) > MAX_STRING:
        return [f"{path}: a string of {len(value)} characters; at most {MAX_STRING}"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path}: {value} is not a finite number (JSON has no NaN or Infinity)"]
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            return [f"{path}: {len(value)} items; at most {MAX_ITEMS}"]
        return [p for i, v in enumerate(value) for p in _check_shape(v, f"{path}/{i}", depth + 1)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in
                ([f"{path}: a key of {len(k)} characters"] if len(k) > 200 else []) +
                _check_shape(v, f"{path}/{k}".lstrip("/"), depth + 1)]
    return []


def check_point(item, where: str) -> list[str]:
    """Schema, then plausibility: repetitions, finite positive times, below the roofline, provenance present."""
    found = [f"{where}/{p}" for p in point_schema.problems(item)]
    if found:
        return found
    env = item["choices"]["env"]
    if ".." in env["CK_LIB"]:
        return [f"{where}/choices/env/CK_LIB: {env['CK_LIB']!r} may not contain '..'"]
    try:
        read = point_schema.read(item)
    except point_schema.PointError as error:
        return [f"{where}: {error}"]
    runs = [c["run"] for c in item["characteristics_list"]]
    if len(read.successful) < MIN_REPETITIONS:
        found.append(f"{where}/characteristics_list: {len(read.successful)} successful repetitions; at least "
                     f"{MIN_REPETITIONS}")
    features = item["features"]
    if features["statistical_repetitions"] != len(runs):
        found.append(f"{where}/features/statistical_repetitions: {features['statistical_repetitions']} but "
                     f"characteristics_list holds {len(runs)} repetitions")
    if features["repo"]["commit"] in ("", "unknown"):
        found.append(f"{where}/features/repo/commit: the commit that measured the point is required")
    flops = (features.get("model") or {}).get("flops_per_image")
    if not isinstance(flops, (int, float)) or flops <= 0:
        found.append(f"{where}/features/model/flops_per_image: a positive number is required")
        return found
    gpu = features["platform"].get("gpu")
    peak = peak_tflops(gpu, item["choices"].get("settings", {}).get("precision", "fp32"))
    for index, run in enumerate(runs):
        if not run["run_success"]:
            continue
        path = f"{where}/characteristics_list/{index}/run"
        if any(t <= 0 for t in run["time_fw_ms_all"]):
            found.append(f"{path}/time_fw_ms_all: every time must be positive")
            continue
        derived = repetition_time_ms(run["time_fw_ms_all"])  # the one definition of a repetition's time
        if not math.isclose(run["time_fw_ms"], derived, rel_tol=1e-6):
            found.append(f"{path}/time_fw_ms: {run['time_fw_ms']} but the median of time_fw_ms_all is {derived:.6g}")
        expected = 1e3 * env["CK_BATCH_SIZE"] / run["time_fw_ms"]
        if not math.isclose(run["images_per_second"], expected, rel_tol=1e-3):
            found.append(f"{path}/images_per_second: {run['images_per_second']} but batch / time gives {expected:.6g}")
        if peak and run["images_per_second"] * flops > peak * 1e12:
            found.append(f"{path}/images_per_second: {run['images_per_second']:.6g} img/s x features/model/"
                         f"flops_per_image {flops:.4g} FLOP is above the {peak} TFLOP/s peak of {gpu}")
    return found
