"""Read experiment points from CK repositories into pandas. Reading never imports torch.

Two frames come out: `runs`, one row per repetition, indexed by (model, lib, batch_size, repetition), and
`layers`, one row per (repetition, layer). Our points (schema v1) and legacy CK-Caffe points are read alike;
what cannot be read is skipped with a warning naming its path, and listed.
"""
from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .libnames import default_memory_format

TAG = "explore-batch-size-libs-models"
LEGACY_IRRELEVANT_TAGS = {TAG, "time_gpu", "time_cpu", "time_gpu_fp16"}
LEGACY_MODELS = {"bvlc-alexnet": "alexnet", "bvlc-googlenet": "googlenet",
                 "deepscale-squeezenet-1.0": "squeezenet-1.0", "deepscale-squeezenet-1.1": "squeezenet-1.1"}
INDEX = ["model", "lib", "batch_size", "repetition"]


@dataclass
class Loaded:
    runs: pd.DataFrame
    layers: pd.DataFrame
    skipped: list[str] = field(default_factory=list)  # "<path>: why"
    adaptive: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per adaptive point: plan and measurement


@dataclass
class _Rows:
    runs: list[dict] = field(default_factory=list)
    layers: list[tuple] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    adaptive: list[dict] = field(default_factory=list)
    per_layer_method: dict[str, str] = field(default_factory=dict)  # sweep or run id -> how its layers were timed

    def skip(self, path: Path, why: str) -> None:
        message = f"{path}: {why}"
        warnings.warn(f"skipped {message}", stacklevel=3)
        self.skipped.append(message)


def load(repos: list[Path | str], tags: list[str] | None = None) -> Loaded:
    """Every point of every experiment entry in `repos` (repository roots or entry folders) with all `tags`."""
    rows = _Rows()
    counters: Counter = Counter()  # repetitions numbered across every entry and repository read together
    for repo in map(Path, repos):
        if not repo.is_dir():
            rows.skip(repo, "no such repository folder")
            continue
        entries = [repo] if (repo / ".cm" / "meta.json").is_file() and list(repo.glob("ckp-*")) else \
            sorted(p for p in (repo / "experiment").glob("*") if p.is_dir() and not p.name.startswith("."))
        for entry in entries:
            _read_entry(entry, set(tags or []), rows, counters)
    return Loaded(_runs_frame(rows.runs), _layers_frame(rows.layers), rows.skipped, _adaptive_frame(rows))


def _read_entry(entry: Path, tags: set[str], rows: _Rows, counters: Counter) -> None:
    try:
        meta = json.loads((entry / ".cm" / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        rows.skip(entry, f"unreadable entry meta ({error})")
        return
    entry_tags = meta.get("tags", [])
    if not tags <= set(entry_tags):
        return
    for path in sorted(entry.glob("ckp-*.*.json")):
        if path.name.count(".") != 2 or not path.name.split(".")[1].isdigit():
            continue  # .flat.json, .features.json: CK's derived files
        try:
            data = json.loads(path.read_text())
            _read_point(data, entry_tags, path, counters, rows)
        except (json.JSONDecodeError, OSError) as error:
            rows.skip(path, f"broken JSON ({error})")
        except (KeyError, TypeError, ValueError) as error:
            rows.skip(path, f"missing or malformed field ({type(error).__name__}: {error})")


def _read_point(data: dict, entry_tags: list[str], path: Path, counters: Counter, rows: _Rows) -> None:
    env = data["choices"]["env"]
    if "CK_MODEL" in env:
        model, lib, batch = env["CK_MODEL"], lib_label(env, data["choices"].get("settings", {})), int(env["CK_BATCH_SIZE"])
        legacy = False
    else:
        model, lib = _legacy_model_lib(entry_tags, env)
        batch, legacy = int(env["CK_CAFFE_BATCH_SIZE"]), True
    features = data.get("features", {})
    platform = features.get("platform", {})
    gpu = platform.get("gpu") if isinstance(platform.get("gpu"), str) else None
    flops = (features.get("model") or {}).get("flops_per_image", np.nan)
    runs = [c["run"] for c in data["characteristics_list"]]
    if len(runs) == 1 and legacy:  # the notebook: a failed legacy run stands for all its repetitions
        runs = runs * int(features.get("statistical_repetitions", 1))
    if not legacy:
        _note_adaptive(data, runs, rows)
    for run in runs:
        key = (model, lib, batch)
        repetition = counters[key]
        counters[key] += 1
        time_ms = run.get("time_fw_ms")
        success = _success(run.get("run_success")) and isinstance(time_ms, (int, float)) and time_ms > 0
        samples = run.get("time_fw_ms_all") or []
        rows.runs.append({
            "model": model, "lib": lib, "batch_size": batch, "repetition": repetition,
            "time_ms": float(time_ms) if success else np.nan, "success": success,
            "memory_mbytes": float(run["memory_mbytes"]) if isinstance(run.get("memory_mbytes"), (int, float)) else np.nan,
            "iqr_over_median": _iqr_over_median(samples), "peak_share": run.get("peak_share") or np.nan,
            "flops_per_image": flops, "gpu": gpu, "legacy": legacy, "error": run.get("error"),
            "source": str(path),
        })
        if success:
            for layer in run.get("per_layer_info") or []:
                if isinstance(layer.get("time_ms"), (int, float)):
                    rows.layers.append((model, lib, batch, repetition, str(layer["label"]),
                                        layer.get("direction", "forward"), float(layer["time_ms"])))


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


def _legacy_model_lib(tags: list[str], env: dict) -> tuple[str, str]:
    rest = [t for t in tags if t not in LEGACY_IRRELEVANT_TAGS]
    models = [t for t in rest if t in LEGACY_MODELS]
    libs = [t for t in rest if t not in LEGACY_MODELS]
    if len(models) != 1 or len(libs) != 1:
        raise ValueError(f"tags {tags} name no single model and lib")
    lib = libs[0]
    if lib.startswith("tensorrt"):
        lib = "tensorrt-fp16" if int(env.get("CK_TENSORRT_ENABLE_FP16", 0)) != 0 else "tensorrt-fp32"
    return LEGACY_MODELS[models[0]], lib


def _note_adaptive(data: dict, runs: list[dict], rows: _Rows) -> None:
    """Adaptive points give a row of their own (the plan's predictions next to the measurement); the candidate
    points of the same run say how their layers were timed."""
    run_id = (data.get("features", {}).get("sweep") or {}).get("id", "")
    method = next((r["per_layer_method"] for r in runs if r.get("per_layer_method")), None)
    if method and run_id:
        rows.per_layer_method[run_id] = method
    env, settings = data["choices"]["env"], data["choices"].get("settings", {})
    if env["CK_LIB"] != "adaptive":
        return
    plan = settings.get("plan") or {}
    times = [r["time_fw_ms"] for r in runs if _success(r.get("run_success")) and r.get("time_fw_ms")]
    rows.adaptive.append({
        "model": env["CK_MODEL"], "batch_size": int(env["CK_BATCH_SIZE"]), "cuda_graph": bool(env.get("CK_CUDA_GRAPH")),
        "run": run_id, "plan": plan.get("digest"), "best_single_lib": plan.get("best_single_lib"),
        "best_single_lib_ms": plan.get("best_single_lib_ms"), "predicted_ms": plan.get("predicted_ms"),
        "greedy_ms": plan.get("greedy_ms"), "planned_ms": plan.get("planned_ms"),
        "measured_ms": float(np.median(times)) if times else np.nan,
        "configs_used": ", ".join(f"{k}: {v}" for k, v in (plan.get("configs_used") or {}).items()),
        "error": next((r.get("error") for r in runs if not _success(r.get("run_success"))), None)})


def _adaptive_frame(rows: _Rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows.adaptive)
    if frame.empty:
        return frame
    frame.insert(3, "per_layer_method", frame["run"].map(rows.per_layer_method).fillna("hooks"))
    numbers = ["best_single_lib_ms", "predicted_ms", "greedy_ms", "planned_ms", "measured_ms"]
    frame[numbers] = frame[numbers].apply(pd.to_numeric, errors="coerce")  # a hand-written plan predicts nothing
    frame["measured_over_best"] = frame["measured_ms"] / frame["best_single_lib_ms"]
    return frame.sort_values(["model", "cuda_graph", "batch_size", "per_layer_method"]).reset_index(drop=True)


def _success(value) -> bool:
    return value is True or value == "yes"


def _iqr_over_median(samples) -> float:
    if len(samples) < 4:
        return np.nan
    q1, median, q3 = np.percentile(np.asarray(samples, dtype=float), [25, 50, 75])
    return float((q3 - q1) / median) if median > 0 else np.nan


def _runs_frame(rows: list[dict]) -> pd.DataFrame:
    columns = INDEX + ["time_ms", "success", "memory_mbytes", "iqr_over_median", "peak_share", "flops_per_image",
                       "gpu", "legacy", "error", "source"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.set_index(INDEX).sort_index()


def _layers_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=INDEX + ["label", "direction", "time_ms"])
    for column in ("model", "lib", "label", "direction"):
        frame[column] = frame[column].astype("category")
    return frame


def registered_repos(tags: list[str] | None = None) -> list[Path]:
    """Entry folders of every experiment with `tags` in every repository registered with CK (pulled ones too)."""
    import ck.kernel as ck

    found = ck.access({"action": "search", "module_uoa": "experiment", "tags": ",".join(tags or [TAG]), "out": ""})
    if found["return"] > 0:
        raise RuntimeError(f"ck search: {found['error']}")
    return [Path(item["path"]) for item in found["lst"]]
