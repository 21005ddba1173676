"""The point file, both ways: a measurement into a CK experiment point (JSON), validation against the versioned
schema, and the one reader of point files (ours, migrated step by step, and legacy CK ones) into typed records.
No torch."""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import fastjsonschema
import jsonschema

from . import legacytags, stats
from .libnames import default_memory_format
from .modelnames import DEFAULT_INPUT_SHAPE, SEED_MODELS, shape_text

if TYPE_CHECKING:
    from .engine import Measurement

SCHEMA_VERSION = 2
TAG = legacytags.TAG  # the seed's experiment tag, on every entry we write
# Times are stored to what the clock resolves: CUDA events resolve about 0.5 us (4 decimals of a millisecond keep
# all of it), the host's perf_counter 1 ns (6 decimals). Derived figures keep 6 significant digits.
CLOCK_DECIMALS = {"cuda-events": 4, "host-perf-counter": 6}
SIGNIFICANT = 6
SHARED = ("memory", "accuracy", "diagnosis", "profile", "harness", "warmup_s", "per_layer_method", "notes")


@lru_cache(maxsize=None)
def schema(version: int = SCHEMA_VERSION) -> dict:
    return json.loads(resources.files("ck_plugins").joinpath(f"schemas/point-v{version}.json").read_text())


def _known_version(point) -> int:
    """The schema a point is checked against: its own version where we have that schema (an older point is valid
    in its own format and migrated when read), else the current one (which then names the bad version)."""
    version = point.get("features", {}).get("schema_version") if isinstance(point, dict) and isinstance(
        point.get("features"), dict) else None
    return version if type(version) is int and 1 <= version <= SCHEMA_VERSION else SCHEMA_VERSION


@lru_cache(maxsize=None)
def _validator(version: int) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(version))


@lru_cache(maxsize=None)
def _compiled(version: int):
    """The schema compiled to Python (fastjsonschema): a valid point passes in microseconds."""
    return fastjsonschema.compile(schema(version))


def problems(point) -> list[str]:
    """Every schema violation, each as '<path>: <message>' (empty when the point is valid). A valid point is
    passed by the compiled schema; an invalid one gets jsonschema's full list, every problem with its path
    (tests/test_points_unit.py checks that the two agree)."""
    version = _known_version(point)
    try:
        _compiled(version)(point)
        return []
    except Exception:  # noqa: BLE001 - whatever the compiled schema refuses (or trips on), jsonschema says why
        pass
    validator = _validator(version)
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
    if m.plan.threads:
        autorange["CK_NUM_THREADS"] = m.plan.threads
    if tuple(m.plan.input_shape) != DEFAULT_INPUT_SHAPE:
        autorange["CK_INPUT_SHAPE"] = shape_text(m.plan.input_shape)
    return {**compiled, **autorange, "CK_MODEL": m.plan.model, "CK_LIB": settings["lib"], "CK_BATCH_SIZE": m.plan.batch_size,
            "CK_ITERATIONS": m.plan.iterations, "CK_REPETITIONS": m.plan.repetitions, "CK_WARMUP": m.plan.warmup,
            "CK_SEED": m.plan.seed, "CK_MEMORY_FORMAT": settings.get("memory_format", "nchw"),
            "CK_CUDA_GRAPH": bool(settings.get("cuda_graph", False))}


def from_measurement(m: "Measurement", peak_tflops: float | None, repo_state: dict, sweep: dict | None = None) -> dict:
    features = {"schema_version": SCHEMA_VERSION, "measured_at": m.measured_at,
                "statistical_repetitions": max(1, len(m.samples_ms)) if m.run_success else 1,
                "platform": m.platform or {"cpu": "unknown", "torch": "unknown"},
                "repo": repo_state, "model": {"flops_per_image": m.flops_per_image, **m.model_info},
                "measurement": _rounded(_shared(m))}
    layers = next((layers for layers in m.per_layer if layers), []) if m.run_success else []
    if layers:
        work = {w.label: w.flops for w in m.layer_work}
        features["layers"] = {"label": [t.label for t in layers], "type": [t.type for t in layers],
                              "flops": [work.get(t.label, 0.0) * m.plan.batch_size for t in layers]}
    if sweep:
        features["sweep"] = sweep
    point = {"choices": {"env": choices_env(m), "settings": m.settings}, "features": features,
             "characteristics_list": [{"run": r} for r in _runs(m, peak_tflops, [t.label for t in layers])]}
    return validate(_plain(point))


def _shared(m: "Measurement") -> dict:
    """What every repetition of a point shares, stored once in features/measurement."""
    if not m.run_success:
        return {"notes": m.notes}
    return {"memory": asdict(m.memory), "accuracy": asdict(m.accuracy) if m.accuracy else None,
            "diagnosis": asdict(m.diagnosis) if m.diagnosis else None, "profile": _profile(m), "harness": m.harness,
            "warmup_s": m.warmup_s, "phases_s": m.phases_s or None, "per_layer_method": m.plan.per_layer_method if m.per_layer else None,
            "energy": m.energy, "notes": m.notes}


def _runs(m: "Measurement", peak_tflops: float | None, labels: list[str]) -> list[dict]:
    if not m.run_success:
        return [{"run_success": False, "error": m.error or "unknown failure"}]
    decimals = CLOCK_DECIMALS[m.clock]
    memory = m.memory.peak_allocated_mbytes if m.memory.peak_allocated_mbytes is not None else m.memory.peak_rss_mbytes
    runs = []
    for index, samples in enumerate(m.samples_ms):
        samples = [round(t, decimals) for t in samples]
        median = stats.repetition_time_ms(samples)
        images_per_second = 1e3 * m.plan.batch_size / median
        flops = m.flops_per_image * images_per_second
        run = {"run_success": True, "error": None, "time_fw_ms": median, "time_fw_ms_all": samples,
               "images_per_second": _round(images_per_second), "flops_per_second": _round(flops),
               "peak_share": _round(flops / (peak_tflops * 1e12)) if peak_tflops else None, "clock": m.clock,
               "memory_mbytes": _round(memory)}
        layers = m.per_layer[index] if index < len(m.per_layer) else []
        if layers:
            if [t.label for t in layers] != labels:
                raise ValueError(f"repetition {index}: its layers differ from the first repetition's")
            run["per_layer_time_ms"] = [round(t.time_ms, decimals) for t in layers]
        runs.append(run)
    return runs


def _round(value):
    return float(f"{value:.{SIGNIFICANT}g}") if isinstance(value, float) and math.isfinite(value) else value


def _rounded(value):
    """Every float in a JSON-like value to SIGNIFICANT digits."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return _round(value)


def _profile(m: "Measurement") -> dict | None:
    p = m.profile
    if p is None:
        return None
    median = stats.point_time(m.samples_ms).time_ms
    return {"gpu_busy_share": p.busy_share(median), "tensor_core_share": p.tensor_core_share,
            "layout_share": p.layout_share, "elementwise_share": p.elementwise_share,
            "kernel_ms_per_iteration": p.kernel_ms / p.iterations, "kernels": p.kernels,
            "top_kernels": [{"name": n[:200], "ms": ms / p.iterations} for n, ms in p.top_kernels]}


def _plain(value):
    """JSON-ready: tuples to lists, non-finite floats rejected later by the writer (allow_nan=False)."""
    return json.loads(json.dumps(value, default=str))


# ================================================================================================== reading
# Every consumer (analysis, service, validation, CK edge, merge) reads point files through `read`.
BATCH_KEYS = ("CK_BATCH_SIZE", "CK_CAFFE_BATCH_SIZE")
LABELLED_KEYS = {"CK_MEMORY_FORMAT", "CK_CUDA_GRAPH", "CK_COMPILE_MODE", "CK_FREEZING", "CK_DYNAMIC_BATCH",
                 "CK_FOLD_BN", "CK_TENSORRT_ENABLE_FP16"}  # already part of the lib label
BOOKKEEPING = re.compile(r"(ITERATIONS|REPETITIONS|WARMUP|SEED|MIN_REPETITION_MS)$")  # how long, not what
TEMPORARY = re.compile(r"(^|/)(tmp|temp)[-_/]|/tmp/")  # generated files whose names change with every run
HOST_KEYS = ("cpu", "machine", "hostname")  # what else tells machines apart, beside the GPU


class PointError(ValueError):
    """A point file that cannot be read: the message says why."""


class NewerSchema(PointError):
    pass


@dataclass(frozen=True)
class Layer:
    name: str  # the label with its index prefix stripped ("01: conv1" -> "conv1"); repeats get "#2", "#3"
    direction: str
    time_ms: float


@dataclass(frozen=True)
class Repetition:
    success: bool
    time_ms: float  # stats.repetition_time_ms of its samples (legacy: the stored time); nan when it failed
    iqr_over_median: float = math.nan
    memory_mbytes: float = math.nan
    peak_share: float = math.nan
    error: str | None = None
    layers: tuple[Layer, ...] = ()
    per_layer_method: str | None = None
    samples_ms: tuple[float, ...] = ()  # every timed iteration's ms per batch (legacy points keep none)


@dataclass(frozen=True)
class Point:
    path: str
    model: str
    lib: str  # lib label: the lib and what differs from its usual configuration
    batch_size: int
    repetitions: tuple[Repetition, ...]
    choices: dict = field(default_factory=dict)  # candidate dimensions: name -> value (swept choices, env)
    swept: tuple[str, ...] = ()  # names from CK's choices_order: always dimensions
    platform: str = "unknown"  # the GPU (of the run, else of the host), else the CPU
    host: dict = field(default_factory=dict)  # cpu, machine, hostname: tell hosts apart
    versions: dict = field(default_factory=dict)  # driver, cuda, cudnn, torch: columns, not identity
    clocks: dict = field(default_factory=dict)  # sm_clock_mhz, memory_clock_mhz at the run: columns, not identity
    metadata: dict = field(default_factory=dict)  # other tags, the run type (cmd_key)
    legacy: bool = False
    flops_per_image: float = math.nan
    sweep: str = ""
    settings: dict = field(default_factory=dict)
    measurement: dict = field(default_factory=dict)  # what the repetitions share: accuracy, diagnosis, profile, notes

    @property
    def successful(self) -> list[Repetition]:
        return [r for r in self.repetitions if r.success]

    @property
    def time(self) -> stats.PointTime | None:
        """The point's one time (stats.from_repetitions), None when no repetition succeeded."""
        ok = self.successful
        if not ok:
            return None
        iqrs = [r.iqr_over_median for r in ok if not math.isnan(r.iqr_over_median)]
        return stats.from_repetitions([r.time_ms for r in ok], max(iqrs, default=math.nan))

    @property
    def time_ms(self) -> float | None:
        found = self.time
        return found.time_ms if found else None

    @property
    def error(self) -> str | None:
        return next((r.error for r in self.repetitions if not r.success), None)


def migrate_to_2(data: dict) -> dict:
    """Version 1 -> 2: layer names once (features/layers) and each repetition's layer times as an array; what the
    repetitions share (memory, accuracy, diagnosis, profile, harness, notes) once in features/measurement; times
    rounded to what the clock resolves, derived figures to 6 significant digits."""
    runs = [c["run"] for c in data["characteristics_list"]]
    first = next((r for r in runs if r.get("run_success") is True), runs[0])
    decimals = CLOCK_DECIMALS.get(first.get("clock"), max(CLOCK_DECIMALS.values()))
    features = {**data["features"], "schema_version": 2}
    if any(k in first for k in SHARED):
        features["measurement"] = _rounded({k: first[k] for k in SHARED if k in first})
    info = [layer for layer in first.get("per_layer_info") or [] if isinstance(layer, dict)]
    if info:
        features["layers"] = {"label": [layer["label"] for layer in info], "type": [layer["type"] for layer in info],
                              "flops": [layer.get("flops", 0.0) for layer in info]}
    out = []
    for run in runs:
        if run.get("run_success") is not True:
            out.append({"run_success": run.get("run_success"), "error": run.get("error")})
            continue
        samples = [round(t, decimals) for t in run["time_fw_ms_all"]]
        new = {"run_success": True, "error": None, "time_fw_ms": stats.repetition_time_ms(samples),
               "time_fw_ms_all": samples, **{k: _round(run[k]) for k in ("images_per_second", "flops_per_second",
                                                                          "peak_share", "memory_mbytes") if k in run},
               "clock": run.get("clock")}
        layers = run.get("per_layer_info") or []
        if layers:
            if [layer["label"] for layer in layers] != features["layers"]["label"]:
                raise PointError("characteristics_list: repetitions with different layers cannot be migrated")
            new["per_layer_time_ms"] = [round(layer["time_ms"], decimals) for layer in layers]
        out.append(new)
    return {**data, "features": features, "characteristics_list": [{"run": r} for r in out]}


MIGRATIONS = {2: migrate_to_2}  # version N -> migrate_to_N(point of version N-1) -> point of version N


def version_of(data) -> object:
    """The schema version a point says it is in (whatever it holds there)."""
    features = data.get("features") if isinstance(data, dict) else None
    return features.get("schema_version") if isinstance(features, dict) else None


def migrate(data: dict) -> dict:
    """Bring one of our points to SCHEMA_VERSION through the named migrate_to_N steps; a newer one is refused."""
    version = data.get("features", {}).get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise PointError(f"features/schema_version: {version!r}; expected an integer")
    if version > SCHEMA_VERSION:
        raise NewerSchema(f"features/schema_version {version} is newer than this reader's {SCHEMA_VERSION}: "
                          "update ck-precision-bench to read it")
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version + 1)
        if step is None:
            raise PointError(f"features/schema_version {version}: no migration to version {version + 1}")
        data, version = step(data), version + 1
    return data


def read_file(path: Path | str, entry_tags: list[str] | tuple = (), learned: legacytags.Learned | None = None) -> Point:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise PointError(f"broken JSON ({error})") from None
    return read(data, entry_tags, str(path), learned)


def read(data, entry_tags: list[str] | tuple = (), path: str = "", learned: legacytags.Learned | None = None) -> Point:
    """A point file's content -> Point. Ours if choices.env names CK_MODEL, else a legacy CK point whose model, lib
    and precision come from its entry's tags (legacytags; `learned`: the names its repository's entries teach).
    Raises PointError saying what is missing or malformed."""
    try:
        env = data["choices"]["env"]
        if not isinstance(env, dict):
            raise TypeError("choices/env is not an object")
        if "CK_MODEL" in env:
            return _ours(migrate(data), path)
        return _legacy(data, list(entry_tags), path, learned)
    except PointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise PointError(f"missing or malformed field ({type(error).__name__}: {error})") from None


def lib_label(env: dict, settings: dict) -> str:
    """Our lib name, with what differs from the lib's usual configuration appended: layout, CUDA graph,
    compile mode, weight freezing, one compilation for every batch size, folded batch norms."""
    lib = env["CK_LIB"]
    usual = default_memory_format(lib)
    if env.get("CK_MEMORY_FORMAT", usual) != usual:
        lib += f"+{env['CK_MEMORY_FORMAT']}"
    if env.get("CK_CUDA_GRAPH"):
        lib += "+graph"
    mode = env.get("CK_COMPILE_MODE", settings.get("compile_mode", "default"))
    if mode != "default":
        lib += f"+{mode}"
    if env.get("CK_FREEZING", settings.get("freezing")):
        lib += "+freezing"
    if env.get("CK_DYNAMIC_BATCH"):
        lib += "+dynamic-batch"
    if env.get("CK_FOLD_BN"):
        lib += "+fold-bn"
    return lib


def _ours(data: dict, path: str) -> Point:
    env, settings = data["choices"]["env"], data["choices"].get("settings") or {}
    if not isinstance(settings, dict):
        raise TypeError("choices/settings is not an object")
    features = data.get("features") or {}
    platform = features.get("platform") or {}
    runs = [c["run"] for c in data["characteristics_list"]]
    measurement = features.get("measurement") or {}
    names = (features.get("layers") or {}).get("label") or []
    method = _text(measurement.get("per_layer_method")) or None
    return Point(
        path=path, model=str(env["CK_MODEL"]), lib=lib_label(env, settings), batch_size=_batch(env["CK_BATCH_SIZE"]),
        repetitions=tuple(_our_repetition(r, names, method) for r in runs), choices=_choices(data, env),
        swept=_swept(data), measurement=measurement,
        platform=_text(platform.get("gpu") or platform.get("host_gpu") or platform.get("cpu")) or "unknown",
        host={"cpu": _text(platform.get("cpu")), "hostname": _text(platform.get("hostname"))},
        versions={k: _text(platform.get(k)) for k in ("driver", "cuda", "cudnn", "torch")},
        clocks={k: _text(platform.get(k)) for k in ("sm_clock_mhz", "memory_clock_mhz")},
        flops_per_image=_number((features.get("model") or {}).get("flops_per_image")),
        sweep=_text((features.get("sweep") or {}).get("id") if isinstance(features.get("sweep"), dict) else ""),
        settings=settings)


def _our_repetition(run: dict, names: list, method: str | None) -> Repetition:
    if run.get("run_success") is not True:
        return Repetition(False, math.nan, error=_text(run.get("error")) or "failed (no reason recorded)")
    samples = run.get("time_fw_ms_all") or []
    if samples:
        time_ms, iqr = stats.repetition_time_ms(samples), stats.relative_iqr(samples)
    else:
        time_ms, iqr = _number(run.get("time_fw_ms")), math.nan
    if not time_ms > 0:
        return Repetition(False, math.nan, error=f"no positive time (time_fw_ms {run.get('time_fw_ms')!r})")
    times = run.get("per_layer_time_ms") or []
    if len(times) != (len(names) if times else 0):
        raise PointError(f"per_layer_time_ms: {len(times)} times for {len(names)} layers in features/layers")
    layers = _layers({"label": n, "time_ms": t} for n, t in zip(names, times))
    numbers = tuple(float(t) for t in samples if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0)
    return Repetition(True, time_ms, iqr, _number(run.get("memory_mbytes")), _number(run.get("peak_share")),
                      None, layers, method if layers else None, numbers if len(numbers) == len(samples) else ())


def _legacy(data: dict, tags: list[str], path: str, learned: legacytags.Learned | None) -> Point:
    env = data["choices"]["env"]
    try:
        roles = legacytags.classify(tags, learned)
    except legacytags.TagError as error:
        raise PointError(str(error)) from None
    model, lib, other = roles.model, roles.lib, roles.other
    if lib.startswith("tensorrt"):
        lib = "tensorrt-fp16" if int(env.get("CK_TENSORRT_ENABLE_FP16", 0) or 0) != 0 else "tensorrt-fp32"
    batch = next((env[k] for k in BATCH_KEYS if k in env), None)
    if batch is None:
        raise PointError(f"choices/env: no batch size ({' or '.join(BATCH_KEYS)})")
    features = data.get("features") or {}
    platform = features.get("platform") or {}
    runs = [c["run"] for c in data["characteristics_list"]]
    if len(runs) == 1 and not _legacy_ok(runs[0]):  # the notebook: a failed run stands for all its repetitions
        runs = runs * max(1, int(features.get("statistical_repetitions", 1) or 1))
    gpu = _name(platform.get("gpu"))
    return Point(
        path=path, model=model, lib=lib, batch_size=_batch(batch),
        repetitions=tuple(_legacy_repetition(r, data) for r in runs),
        choices=_choices(data, env) | ({"precision": roles.precision} if roles.precision else {}), swept=_swept(data),
        platform=gpu or _name(platform.get("cpu")) or "unknown",
        host={"cpu": _name(platform.get("cpu")), "machine": _name(platform.get("platform")),
              "hostname": _text((platform.get("os") or {}).get("hostname") if isinstance(platform.get("os"), dict) else "")},
        metadata={"tags": other, "run_type": _text(data["choices"].get("cmd_key"))}, legacy=True)


def _legacy_ok(run: dict) -> bool:
    return run.get("run_success") in (True, "yes") and _number(run.get("time_fw_ms")) > 0


def _legacy_repetition(run: dict, data: dict) -> Repetition:
    if not _legacy_ok(run):
        return Repetition(False, math.nan, error=_legacy_error(run, data))
    return Repetition(True, float(run["time_fw_ms"]), memory_mbytes=_number(run.get("memory_mbytes")),
                      layers=_layers(run.get("per_layer_info")))


def _legacy_error(run: dict, data: dict) -> str:
    reason = run.get("fail_reason") or (data.get("misc") or {}).get("fail_reason") or data.get("fail_reason")
    if reason:
        return _text(reason)
    code = run.get("return_code")
    if isinstance(code, int) and code != 0:
        return f"return code {code}"
    return "failed (no reason recorded)" if run.get("run_success") not in (True, "yes") else "no time recorded"


def _layers(info) -> tuple[Layer, ...]:
    """Per-layer records keyed by name: the index prefix ("01: conv1") stripped, repeated names numbered."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for layer in info or []:
        if not isinstance(layer, dict) or not isinstance(layer.get("time_ms"), (int, float)):
            continue
        name = re.sub(r"^\s*\d+\s*:\s*", "", str(layer.get("label", "")))
        direction = str(layer.get("direction") or "forward")
        count = seen[name, direction] = seen.get((name, direction), 0) + 1
        out.append(Layer(name if count == 1 else f"{name}#{count}", direction, float(layer["time_ms"])))
    return tuple(out)


def _swept(data: dict) -> tuple[str, ...]:
    """Names of what CK swept (choices_order: '##choices#env#X', '##env#X', lists of them), batch size excluded."""
    order = data.get("choices_order") or []
    flat = [k for item in order for k in (item if isinstance(item, list) else [item]) if isinstance(k, str)]
    names = [k.strip("#").split("#")[-1] for k in flat]
    return tuple(n for n in names if n and n not in BATCH_KEYS)


def _choices(data: dict, env: dict) -> dict:
    """Candidate dimensions: the values of every swept choice and of every env variable that can define a
    configuration (not the batch size, not what the lib label holds, not iteration counts, not temporary files)."""
    found = {}
    for key, value in env.items():
        if key in BATCH_KEYS or key in LABELLED_KEYS or key in ("CK_MODEL", "CK_LIB") or BOOKKEEPING.search(key):
            continue
        if isinstance(value, str) and TEMPORARY.search(value):
            continue
        found[key] = _text(value)
    for path in (data.get("choices_order") or []):
        for key in (path if isinstance(path, list) else [path]):
            if isinstance(key, str):
                name = key.strip("#").split("#")[-1]
                if name and name not in BATCH_KEYS:
                    found[name] = _text(_resolve(data.get("choices") or {}, key))
    return found


def _resolve(choices: dict, key: str):
    parts = [p for p in key.strip("#").split("#") if p]
    if parts and parts[0] == "choices":
        parts = parts[1:]
    value = choices
    for part in parts:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _batch(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or int(value) < 1 or int(value) != float(value):
        raise PointError(f"batch size {value!r}: expected a positive integer")
    return int(value)


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    value = float(value)
    return value if math.isfinite(value) else math.nan


def _text(value) -> str:
    return "" if value is None else str(value)


def _name(value) -> str:
    """A legacy platform field: a name string or an object with 'name' (or 'model')."""
    if isinstance(value, dict):
        return _text(value.get("name") or value.get("model"))
    return _text(value)


# ==================================================================================== files and raw fields
# A point's files (CK's subpoints: ckp-<uid>.<number>.json in an experiment entry) and its raw fields are reached
# through these functions only: no other module names the files or walks the raw dict.
def is_subpoint_name(name: str) -> bool:
    """ckp-<uid>.<number>.json: a subpoint, not one of CK's derived files (.flat.json, .features.json)."""
    parts = name.split(".")
    return name.startswith("ckp-") and len(parts) == 3 and parts[1].isdigit() and parts[2] == "json"


def subpoint_files(entry: Path) -> list[Path]:
    """An experiment entry's subpoint files, sorted."""
    return sorted(p for p in Path(entry).glob("ckp-*.*.json") if is_subpoint_name(p.name))


def repository_files(repo: Path) -> list[Path]:
    """Every subpoint file of every experiment entry of a CK repository, sorted."""
    return sorted(p for p in Path(repo).glob("experiment/*/ckp-*.*.json") if is_subpoint_name(p.name))


def holds_points(folder: Path) -> bool:
    """Whether a folder is itself an entry with subpoints (rather than a repository of entries)."""
    return any(Path(folder).glob("ckp-*"))


def file_uid(path: Path) -> str:
    """The point uid a subpoint file is named by."""
    return Path(path).name.split(".")[0].removeprefix("ckp-")


def free_subpoints(entry: Path, uid: str):
    """Candidate names for a new subpoint of `uid`, starting after those already there (past 9999 the number takes
    a fifth digit, as CK's own recorder writes it: `str(n).zfill(4)`)."""
    import itertools

    for number in itertools.count(len(list(Path(entry).glob(f"ckp-{uid}.[0-9]*.json"))) + 1):
        yield Path(entry) / f"ckp-{uid}.{number:04d}.json"


def env(data: dict) -> dict:
    """The point's CK environment (choices/env)."""
    return data["choices"]["env"]


def settings(data: dict) -> dict:
    """What its lib was set to (choices/settings; empty in legacy points)."""
    return data["choices"].get("settings") or {}


def runs(data: dict) -> list[dict]:
    """Its repetitions' records, in order (characteristics_list/*/run)."""
    return [c["run"] for c in data["characteristics_list"]]


def is_ours(data: dict) -> bool:
    """Ours (choices/env names CK_MODEL), not a legacy CK point."""
    return "CK_MODEL" in env(data)


def with_model(data: dict, name: str) -> dict:
    """A copy of the point naming its model `name`."""
    import copy

    renamed = copy.deepcopy(data)
    renamed["choices"]["env"]["CK_MODEL"] = name
    return renamed


def work(data) -> int:
    """Numbers of repetition data in a raw point (every iteration time and per-layer time of every repetition, and
    each repetition itself): what checking it costs, counted before anything else looks at it (any shape)."""
    records = data.get("characteristics_list") if isinstance(data, dict) else None
    total = 0
    for record in records if isinstance(records, list) else []:
        run = record.get("run") if isinstance(record, dict) else None
        if isinstance(run, dict):
            total += 1 + sum(len(run[k]) for k in ("time_fw_ms_all", "per_layer_time_ms", "per_layer_info")
                             if isinstance(run.get(k), list))
    return total
