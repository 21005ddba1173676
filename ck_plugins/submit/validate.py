"""What a submission must be: a bounded JSON bundle of schema-valid, plausible points. Every problem is reported
with its path (nothing stops at the first). Used by the client before sending and by the server again. No torch."""
from __future__ import annotations

import copy
import json
import math
import unicodedata

from .. import modelnames
from .. import point as point_schema
from ..errors import BadInput
from ..roofline import PRECISIONS, cpu_ceiling_tflops, known_gpus, peak_tflops
from ..stats import repetition_time_ms

MAX_BODY_BYTES = 8 * 2**20
MAX_POINTS = 200
MAX_STRING = 4096
MAX_ITEMS = 50_000  # elements of any one array
MAX_DEPTH = 24
MIN_REPETITIONS = 3
MODEL_FLOPS = {"resnet50": 8178368512.0, "alexnet": 1428376960.0, "googlenet": 2996752384.0,
               "squeezenet-1.0": 1637849152.0, "squeezenet-1.1": 698303872.0}  # conv + linear FLOP per image
MAX_INTEGER = 2**53  # integers JSON readers and 64-bit databases hold exactly


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
    return check_and_read(data)[0]


def check_and_read(data: dict) -> tuple[list[str], list]:
    """Every problem of a bundle, and each valid point's reading (point.read) for whoever stores it."""
    points = data["points"]
    if not 1 <= len(points) <= MAX_POINTS:
        return [f"points: {len(points)} points; 1 to {MAX_POINTS} accepted"], []
    problems = _check_shape(data, "", 0)
    if problems:
        return problems, []
    reads = []
    for index, item in enumerate(points):
        found, read = _checked(item, f"points/{index}")
        problems += found
        reads.append(read)
    return problems, reads


def _check_shape(value, path: str, depth: int) -> list[str]:
    """Bounded strings, numbers, arrays and nesting, before the schema looks at anything: no NUL or lone surrogate
    in a string or key, no integer a database or JSON reader could not hold exactly."""
    if depth > MAX_DEPTH:
        return [f"{path or '(body)'}: nested deeper than {MAX_DEPTH}"]
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            return [f"{path}: a string of {len(value)} characters; at most {MAX_STRING}"]
        return [f"{path}: {bad}" for bad in [_bad_text(value)] if bad]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        return [f"{path}: an integer of {len(str(abs(value)))} digits; at most {MAX_INTEGER} in size"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path}: {value} is not a finite number (JSON has no NaN or Infinity)"]
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            return [f"{path}: {len(value)} items; at most {MAX_ITEMS}"]
        return [p for i, v in enumerate(value) for p in _check_shape(v, f"{path}/{i}", depth + 1)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in
                ([f"{path}: a key of {len(k)} characters"] if len(k) > 200 else []) +
                ([f"{path}: a key with {_bad_text(k)}"] if _bad_text(k) else []) +
                _check_shape(v, f"{path}/{_printable(k)}".lstrip("/"), depth + 1)]
    return []


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character, which no stored string may hold"
    if any("\ud800" <= c <= "\udfff" for c in text):
        return "a lone surrogate (not valid Unicode), which no stored string may hold"
    return None


NAME_LENGTH = 200  # the longest model, lib, GPU or CPU name stored (the database's columns hold it)
NAME_FIELDS = {"choices/env": point_schema.env, "choices/settings": point_schema.settings,  # path -> its fields
               "features/platform": lambda item: item["features"].get("platform") or {},
               "features/repo": lambda item: item["features"].get("repo") or {}}
MAX_DATABASE_INTEGER = 2**31 - 1  # the points table's integer columns (PostgreSQL's integer)


def _names(item: dict, where: str) -> list[str]:
    """Names (the env, the settings, the platform) hold no control or format characters (newlines, bidi controls)
    and no surrounding whitespace: `timm:resnet18\\n` and `" "` are not names a reader can tell apart."""
    found = []
    for section, fields in NAME_FIELDS.items():
        for key, value in fields(item).items():
            if not isinstance(value, str):
                continue
            bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf")), None)
            if bad is not None:
                found.append(f"{where}/{section}/{key}: the control or format character U+{ord(bad):04X}; "
                             "names hold printable characters only")
            elif value != value.strip() or (value == "" and key in ("CK_MODEL", "CK_LIB", "gpu", "cpu")):
                found.append(f"{where}/{section}/{key}: {value!r} has surrounding or only whitespace")
            elif key in ("CK_MODEL", "CK_LIB", "gpu", "cpu") and len(value) > NAME_LENGTH:
                found.append(f"{where}/{section}/{key}: a name of {len(value)} characters; at most "
                             f"{NAME_LENGTH}")
    return found


def _integers(item: dict, where: str) -> list[str]:
    """The batch size and the counts the database stores are integers (not floats such as 1e19) in its range."""
    env, found = point_schema.env(item), []
    for key in ("CK_BATCH_SIZE", "CK_ITERATIONS", "CK_REPETITIONS", "CK_WARMUP", "CK_SEED"):
        value = env.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            found.append(f"{where}/choices/env/{key}: {value!r} is not an integer")
        elif not 0 <= value <= (MAX_INTEGER if key == "CK_SEED" else MAX_DATABASE_INTEGER):
            found.append(f"{where}/choices/env/{key}: {value} is outside 0.."
                         f"{MAX_INTEGER if key == 'CK_SEED' else MAX_DATABASE_INTEGER}")
    return found


MAX_MEMORY_BYTES_PER_S = 20e12  # above any device's memory bandwidth: every image is read at least once
SHAPE_TOLERANCE = 0.5  # at another input shape a seed model does at least half its work scaled by the pixels


def _input_bytes(env: dict) -> float:
    """The least bytes of one input (one byte per element): what any run must at least read per image."""
    try:
        shape = modelnames.parse_input_shape(env.get("CK_INPUT_SHAPE") or "3x224x224")
    except BadInput:
        shape = modelnames.DEFAULT_INPUT_SHAPE
    return float(math.prod(shape))


def _work_problem(env: dict, flops: float, where: str) -> str | None:
    """A seed model's work is known: exactly at the default shape (spelled out or not), and bounded below at
    another shape (its work scales with the pixels); other models are bounded by the input they must read."""
    known = MODEL_FLOPS.get(env["CK_MODEL"])
    if known is None:
        return None
    try:
        shape = modelnames.parse_input_shape(env.get("CK_INPUT_SHAPE") or "3x224x224")
    except BadInput as error:
        return f"{where}/choices/env/CK_INPUT_SHAPE: {error}"
    default = modelnames.DEFAULT_INPUT_SHAPE
    if tuple(shape) == tuple(default):
        if not math.isclose(flops, known, rel_tol=0.01):
            return (f"{where}/features/model/flops_per_image: {flops:.6g} but choices/env/CK_MODEL "
                    f"{env['CK_MODEL']} does {known:.6g}")  # either field may be the wrong one: both are named
        return None
    least = SHAPE_TOLERANCE * known * math.prod(shape[1:]) / math.prod(default[1:])
    if flops < least:
        return (f"{where}/features/model/flops_per_image: {flops:.6g} but choices/env/CK_MODEL {env['CK_MODEL']} at "
                f"{'x'.join(map(str, shape))} does at least {least:.6g}")
    return None


def _printable(key: str) -> str:
    return key if _bad_text(key) is None else key.encode("utf-8", "backslashreplace").decode("ascii", "replace")


def check_point(item, where: str) -> list[str]:
    """Schema, then plausibility: repetitions, finite positive times, below the roofline, provenance present."""
    return _checked(item, where)[0]


def _checked(item, where: str) -> tuple[list[str], object]:
    """The problems of a point, and its reading where it has none (read once, while it is checked)."""
    kept: dict = {}
    found = _problems(item, where, kept)
    return (found, None) if found else ([], kept["read"])


def _problems(item, where: str, kept: dict) -> list[str]:
    found = [f"{where}/{p}" for p in point_schema.problems(item)]
    if found:
        return found
    if item["features"]["schema_version"] != point_schema.SCHEMA_VERSION:
        try:  # stored in the current version: an older body must migrate to a valid current one
            current = point_schema.migrate(copy.deepcopy(item))
        except (point_schema.PointError, KeyError, TypeError, ValueError, AttributeError) as error:
            return [f"{where}/features/schema_version: cannot be brought to version {point_schema.SCHEMA_VERSION} "
                    f"({type(error).__name__}: {str(error)[:200]})"]
        found = [f"{where}/{p} (after migrating to version {point_schema.SCHEMA_VERSION})"
                 for p in point_schema.problems(current)]
        if found:
            return found
    env = point_schema.env(item)
    if ".." in env["CK_LIB"]:
        return [f"{where}/choices/env/CK_LIB: {env['CK_LIB']!r} may not contain '..'"]
    found = _names(item, where) + _integers(item, where)
    if found:
        return found
    try:
        modelnames.parse(env["CK_MODEL"])  # what publishing names the entry by: a point it cannot name is refused
    except BadInput as error:
        return [f"{where}/choices/env/CK_MODEL: {error}"]
    try:
        read = kept["read"] = point_schema.read(item)
    except point_schema.PointError as error:
        return [f"{where}: {error}"]
    runs = point_schema.runs(item)
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
    work = _work_problem(env, flops, where)  # less work claimed would pass the roofline
    if work:
        return found + [work]
    gpu = features["platform"].get("gpu")
    precision = point_schema.settings(item).get("precision", "fp32")
    if precision.casefold() not in PRECISIONS:
        return found + [f"{where}/choices/settings/precision: {precision!r}; expected one of {', '.join(PRECISIONS)}"]
    peak = peak_tflops(gpu, precision) if gpu else cpu_ceiling_tflops()
    if peak is None:  # a result nobody can check is refused, not shown: see docs/service.md
        return found + [f"{where}/features/platform/gpu: {gpu!r} at {precision} has no known peak to check the result "
                        f"against; known GPUs: {', '.join(known_gpus())} (fp8 on Hopper only), or null for a CPU run"]
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
        rate = run.get("flops_per_second")
        if rate is not None and not math.isclose(rate, run["images_per_second"] * flops, rel_tol=1e-3):
            found.append(f"{path}/flops_per_second: {rate:.6g} but images_per_second x flops_per_image gives "
                         f"{run['images_per_second'] * flops:.6g}")
        if run["images_per_second"] * _input_bytes(env) > MAX_MEMORY_BYTES_PER_S:
            found.append(f"{path}/images_per_second: {run['images_per_second']:.6g} img/s would read the input "
                         f"faster than any memory ({MAX_MEMORY_BYTES_PER_S / 1e12:.0f} TB/s), whatever the work")
        if run["images_per_second"] * flops > peak * 1e12:
            found.append(f"{path}/images_per_second: {run['images_per_second']:.6g} img/s x features/model/"
                         f"flops_per_image {flops:.4g} FLOP is above the {peak} TFLOP/s peak of {gpu or 'any CPU'}")
    return found
