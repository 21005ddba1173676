"""Points of CK repositories into pandas. Reading never imports torch.

Each point file is read by `point.read` (ours and legacy CK ones alike). Two frames come out: `runs`, one row per
repetition, indexed by (platform, model, lib, batch_size, repetition), and `layers`, one row per (repetition,
layer), layers keyed by name. A configuration is identified by every dimension that varies: beside the platform
(the GPU), model, lib and batch size, every swept choice (CK's choices_order, env values) and every host attribute
(CPU, machine, host name) that differs between points of the same platform, model, lib and batch size. Such
dimensions are appended to the lib label (`cpu+OPENBLAS_NUM_THREADS=4`) or to the platform (`GPU [cpu=...]`), so a
repetition is only ever a repetition of the same configuration. `where` selects before the dimensions are worked
out. What cannot be read is skipped with a warning naming its path, and listed.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from . import legacytags
from . import point as points
from . import stats
from .errors import BadInput
from .point import TAG

KEY = ["platform", "model", "lib", "batch_size"]
INDEX = KEY + ["repetition"]
VERSIONS = ("driver", "cuda", "cudnn", "torch")  # software: columns, compared by `compare` and `regressions`
CLOCKS = ("sm_clock_mhz", "memory_clock_mhz")  # the GPU's clocks at the run: columns, listed by `compare`
CHOICE, HOST = "choice:", "host:"


@dataclass
class Loaded:
    runs: pd.DataFrame
    layers: pd.DataFrame
    skipped: list[str] = field(default_factory=list)  # "<path>: why"
    adaptive: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per adaptive point: plan and measurement
    dimensions: dict = field(default_factory=dict)  # varying dimensions beyond platform/model/lib/batch -> values
    raw: tuple = (None, None)  # (runs, layers) before identification, for `select`
    samples: dict = field(default_factory=dict)  # row id -> every timed iteration's ms per batch (where stored)

    def successful(self) -> pd.DataFrame:
        """The successful repetitions, one row each, the index's dimensions as columns (row id included)."""
        runs = self.runs.reset_index()
        return runs[runs["success"].astype(bool)]

    def select(self, where: dict[str, str]) -> "Loaded":
        """Only the repetitions whose dimension NAME has VALUE, for each NAME=VALUE; dimensions worked out anew."""
        runs, layers = self.raw
        runs = runs[_mask(runs, where)] if where else runs
        identified, dimensions = identify(runs)
        return replace(self, runs=identified, layers=_identified_layers(identified, layers), dimensions=dimensions)


@dataclass
class _Rows:
    runs: list[dict] = field(default_factory=list)
    layers: list[tuple] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    adaptive: list[dict] = field(default_factory=list)
    per_layer_method: dict[str, str] = field(default_factory=dict)  # sweep or run id -> how its layers were timed
    run_times: dict[tuple, list[float]] = field(default_factory=dict)  # (run, model, lib, batch) -> repetition ms
    samples: dict[int, np.ndarray] = field(default_factory=dict)  # row id -> iteration ms (Loaded.samples)

    def skip(self, path: Path, why: str) -> None:
        message = f"{path}: {why}"
        warnings.warn(f"skipped {message}", stacklevel=3)
        self.skipped.append(message)


def load(repos: list[Path | str], tags: list[str] | None = None, where: dict[str, str] | None = None) -> Loaded:
    """Every point of every experiment entry in `repos` (repository roots or entry folders) with all `tags`."""
    rows = _Rows()
    metas: dict[Path, list[str] | None] = {}
    for repo in map(Path, repos):
        if not repo.is_dir():
            rows.skip(repo, "no such repository folder")
            continue
        entries = [repo] if (repo / ".cm" / "meta.json").is_file() and points.holds_points(repo) else \
            sorted(p for p in (repo / "experiment").glob("*") if p.is_dir() and not p.name.startswith("."))
        metas.update((entry, _entry_tags(entry, rows)) for entry in entries)
    learned = {}  # each repository teaches its own names (an entry folder's repository is two folders up)
    for entry, entry_tags in metas.items():
        if entry_tags is not None:
            learned.setdefault(entry.resolve().parent.parent, []).append(entry_tags)
    learned = {root: legacytags.learn(lists) for root, lists in learned.items()}
    for entry, entry_tags in metas.items():
        if entry_tags is not None and set(tags or []) <= set(entry_tags):
            _read_entry(entry, entry_tags, learned[entry.resolve().parent.parent], rows)
    return _loaded(rows, where)


def from_points(read: Iterable[points.Point], where: dict[str, str] | None = None) -> Loaded:
    """The frames of points already read (the result service reads its stored bodies with `point.read`)."""
    rows = _Rows()
    for p in read:
        _add_point(p, rows)
    return _loaded(rows, where)


def _loaded(rows: _Rows, where: dict[str, str] | None) -> Loaded:
    raw_runs, raw_layers = _runs_frame(rows.runs), _layers_frame(rows.layers)
    loaded = Loaded(raw_runs, raw_layers, rows.skipped, _adaptive_frame(rows), raw=(raw_runs, raw_layers),
                    samples=rows.samples)
    return loaded.select(where or {})


def _entry_tags(entry: Path, rows: _Rows) -> list[str] | None:
    try:
        return [str(t) for t in json.loads((entry / ".cm" / "meta.json").read_text()).get("tags", [])]
    except (OSError, ValueError, AttributeError, TypeError) as error:
        rows.skip(entry, f"unreadable entry meta ({error})")
        return None


def _read_entry(entry: Path, entry_tags: list[str], learned: legacytags.Learned, rows: _Rows) -> None:
    for path in points.subpoint_files(entry):
        try:
            _add_point(points.read_file(path, entry_tags, learned), rows)
        except points.PointError as error:
            rows.skip(path, str(error))


def _add_point(p: points.Point, rows: _Rows) -> None:
    if not p.legacy:
        _note_adaptive(p, rows)
    columns = {f"{CHOICE}{k}": v for k, v in p.choices.items()}
    columns.update({f"{HOST}{k}": v for k, v in p.host.items()})
    energy = p.measurement.get("energy")
    joules = energy.get("joules_per_image") if isinstance(energy, dict) else None
    accuracy = _accuracy(p.measurement.get("accuracy"))
    diagnosis = p.measurement.get("diagnosis") if isinstance(p.measurement.get("diagnosis"), dict) else {}
    reasons = [str(r) for r in diagnosis.get("reasons") or [] if isinstance(r, str)]
    for rep in p.repetitions:
        rid = len(rows.runs)
        rows.runs.append({
            "rid": rid, "platform": p.platform, "model": p.model, "lib": p.lib, "batch_size": p.batch_size,
            "time_ms": rep.time_ms, "success": rep.success, "memory_mbytes": rep.memory_mbytes,
            "iqr_over_median": rep.iqr_over_median, "peak_share": rep.peak_share, "flops_per_image": p.flops_per_image,
            "joules_per_image": joules if isinstance(joules, (int, float)) and rep.success else None, "legacy": p.legacy, "error": rep.error, "source": p.path, "run_type": p.metadata.get("run_type", ""), **accuracy,
            "reasons": "; ".join(reasons[:2]) if reasons else None, "sweep": p.sweep,
            **{k: p.versions.get(k, "") for k in VERSIONS}, **{k: p.clocks.get(k, "") for k in CLOCKS}, **columns})
        rows.layers.extend((rid, layer.name, layer.direction, layer.time_ms) for layer in rep.layers)
        if rep.samples_ms:
            rows.samples[rid] = np.asarray(rep.samples_ms, dtype=float)


def _accuracy(record) -> dict:
    """A point's accuracy against fp32: its logit error, and its top-1 agreement only where the weights were real
    (random weights make it trivial); nan where the point has none."""
    record = record if isinstance(record, dict) else {}
    weights = record.get("weights") if isinstance(record.get("weights"), str) else ""
    real = bool(weights) and not weights.startswith("random")
    error, top1 = record.get("relative_error"), record.get("top1_agreement")
    number = lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan  # noqa: E731
    return {"relative_error": number(error), "top1_agreement": number(top1) if real else np.nan,
            "weights": weights or ("random" if record else "")}


def identify(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The runs frame indexed by INDEX, every varying dimension folded into the lib or platform label; and the
    varying dimensions with their values."""
    frame = raw.copy()
    dimensions = {}
    for column in sorted(c for c in frame.columns if c.startswith((CHOICE, HOST))):
        frame[column] = frame[column].fillna("").astype(str)
        known = frame[column].replace("", np.nan)  # a value a point does not record (older points) splits nothing
        varies = known.groupby([frame[k] for k in KEY], observed=True, dropna=False).transform("nunique") > 1
        if not varies.any():
            continue
        # every row of a configuration (platform, model, lib) in which the dimension varies gets its value
        varies = varies.groupby([frame[k] for k in KEY[:3]], observed=True, dropna=False).transform("any")
        name, value = column.split(":", 1)[1], frame[column].replace("", "none")
        dimensions[name] = sorted(frame.loc[varies, column].replace("", "none").unique(), key=_natural)
        if column.startswith(HOST):
            frame.loc[varies, "platform"] = frame["platform"] + f" [{name}=" + value + "]"
        else:
            frame.loc[varies, "lib"] = frame["lib"] + f"+{name}=" + value
    frame["repetition"] = frame.groupby(KEY, observed=True, dropna=False).cumcount() if len(frame) else 0
    return frame.set_index(INDEX).sort_index(), dimensions


def _natural(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def parse_where(items: list[str], gpu: str | None = None) -> dict[str, str]:
    """`--where NAME=VALUE` items (and `--gpu NAME`) -> the selection `load` takes."""
    where = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BadInput("--where", item, "NAME=VALUE, e.g. OPENBLAS_NUM_THREADS=4")
        where[name.strip()] = value.strip()
    if gpu:
        where["platform"] = gpu
    return where


def _mask(runs: pd.DataFrame, where: dict[str, str]) -> pd.Series:
    mask = pd.Series(True, index=runs.index)
    for name, value in where.items():
        column = _column_of(runs, name)
        mask &= runs[column].astype(str).str.casefold() == str(value).casefold()
    return mask


def _column_of(runs: pd.DataFrame, name: str) -> str:
    aliases = {"gpu": "platform", "batch": "batch_size"}
    for column in (aliases.get(name, name), f"{CHOICE}{name}", f"{HOST}{name}"):
        if column in runs.columns:
            return column
    known = sorted({c.split(":", 1)[-1] for c in runs.columns if c.startswith((CHOICE, HOST))}
                   | {"platform", "gpu", "model", "lib", "batch_size", "sweep", *VERSIONS, *CLOCKS})
    raise ValueError(f"a dimension of the points read: {', '.join(known)}")


def _note_adaptive(p: points.Point, rows: _Rows) -> None:
    """Adaptive points give a row of their own (the plan's predictions next to the measurement); the candidate
    points of the same run say how their layers were timed."""
    method = next((r.per_layer_method for r in p.repetitions if r.per_layer_method), None)
    if method and p.sweep:
        rows.per_layer_method[p.sweep] = method
    if p.sweep:
        rows.run_times[p.sweep, p.model, p.lib, p.batch_size] = [r.time_ms for r in p.successful]
    if not p.lib.startswith("adaptive"):
        return
    plan = p.settings.get("plan") if isinstance(p.settings.get("plan"), dict) else {}
    used = plan.get("configs_used") if isinstance(plan.get("configs_used"), dict) else {}
    rows.adaptive.append({
        "platform": p.platform, "model": p.model, "batch_size": p.batch_size, "cuda_graph": "+graph" in p.lib,
        "run": p.sweep, "plan": _scalar(plan.get("digest")), "best_single_lib": _scalar(plan.get("best_single_lib")),
        **{k: _scalar(plan.get(k)) for k in ("best_single_lib_ms", "predicted_ms", "greedy_ms", "planned_ms")},
        "measured_ms": p.time_ms if p.time_ms is not None else np.nan, "lib": p.lib,
        "configs_used": ", ".join(f"{k}: {v}" for k, v in used.items()), "error": p.error})


def _scalar(value):
    return value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None


def _adaptive_frame(rows: _Rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows.adaptive)
    if frame.empty:
        return frame
    frame.insert(4, "per_layer_method", frame["run"].map(rows.per_layer_method).fillna("hooks"))
    numbers = ["best_single_lib_ms", "predicted_ms", "greedy_ms", "planned_ms", "measured_ms"]
    frame[numbers] = frame[numbers].apply(pd.to_numeric, errors="coerce")  # a hand-written plan predicts nothing
    frame["measured_over_best"] = frame["measured_ms"] / frame["best_single_lib_ms"]
    low, high = zip(*(_measured_over_best_ci(row, rows.run_times) for row in frame.itertuples()))
    frame["measured_over_best_ci_low"], frame["measured_over_best_ci_high"] = low, high
    frame = frame.drop(columns="lib")
    frame["best_single_lib"] = frame["best_single_lib"].astype(str).where(frame["best_single_lib"].notna(), None)
    return frame.sort_values(["platform", "model", "cuda_graph", "batch_size", "per_layer_method"]).reset_index(drop=True)


def _measured_over_best_ci(row, run_times: dict) -> tuple[float, float]:
    """The interval of an adaptive point's time over its run's best single lib (that lib's point of the same run,
    with CUDA graphs where the adaptive point has them); nan where either has under two repetitions."""
    ours = run_times.get((row.run, row.model, row.lib, row.batch_size), [])
    best = str(row.best_single_lib)
    theirs = run_times.get((row.run, row.model, best + ("+graph" if row.cuda_graph else ""), row.batch_size)) \
        or run_times.get((row.run, row.model, best, row.batch_size), [])
    if len(ours) < 2 or len(theirs) < 2:
        return np.nan, np.nan
    low, high = stats.ratio_interval(np.mean(ours), np.std(ours, ddof=1), len(ours), np.mean(theirs),
                                     np.std(theirs, ddof=1), len(theirs), row.measured_ms / stats.point_time_ms(theirs))
    return float(low), float(high)


def _runs_frame(rows: list[dict]) -> pd.DataFrame:
    columns = ["rid"] + KEY + ["time_ms", "success", "memory_mbytes", "iqr_over_median", "peak_share",
                               "flops_per_image", "joules_per_image", "legacy", "error", "source", "run_type", "relative_error",
                               "top1_agreement", "weights", "reasons", "sweep", *VERSIONS, *CLOCKS]
    frame = pd.DataFrame(rows)
    return frame if len(frame) else pd.DataFrame(columns=columns)


def _layers_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["rid", "label", "direction", "time_ms"])
    return frame.astype({"label": "category", "direction": "category"})


def _identified_layers(runs: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Layer rows with their repetition's identity (platform, model, lib, batch size, repetition), joined by the
    repetition's row id (vectorised: a lookup table from row id to position)."""
    keys = runs.reset_index()
    lookup = np.full(int(max(keys["rid"].max(), layers["rid"].max(), -1)) + 1 if len(keys) else 1, -1, dtype=np.int64)
    lookup[keys["rid"].to_numpy(dtype=np.int64)] = np.arange(len(keys))
    where = lookup[layers["rid"].to_numpy(dtype=np.int64)] if len(layers) else np.empty(0, dtype=np.int64)
    keep = where >= 0
    rows = where[keep]
    frame = {}
    for column in ("platform", "model", "lib"):
        codes, uniques = pd.factorize(keys[column])
        frame[column] = pd.Categorical.from_codes(codes[rows], categories=uniques)
    for column in ("batch_size", "repetition"):
        frame[column] = keys[column].to_numpy()[rows]
    for column in ("label", "direction"):  # categorical already when read: only the codes are taken
        values = layers[column].astype("category")
        frame[column] = pd.Categorical.from_codes(values.cat.codes.to_numpy()[keep], categories=values.cat.categories)
    frame["time_ms"] = layers["time_ms"].to_numpy()[keep]
    return pd.DataFrame(frame)
