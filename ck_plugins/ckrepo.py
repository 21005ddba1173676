"""CK repository files: atomic JSON writes, alias files, experiment entries. No torch here."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .files import json_text, uid_of, write_json_atomic

RESULTS_ALIAS = "ck-precision-bench-results"  # a results repository made by us: the same on every host
MODULE_UIDS = {"program": "b0ac08fe1d3c2615", "os": "0440cb72c2bc5cc6", "experiment": "bc0409fb61f0aa82",
               "script": "84e27ad9dd12e734", "module": "032630d041b4fd8a"}


def init_repo(root: Path | str, alias: str) -> Path:
    """Make `root` a CK repository (descriptor and module alias files) if it is not one yet."""
    root = Path(root)
    if not (root / ".ckr.json").exists():
        write_json_atomic(root / ".ckr.json", {"data_uoa": alias, "data_alias": alias, "data_uid": uid_of(alias),
                                               "data_name": alias, "dict": {}})
    ensure_alias(root, "experiment", MODULE_UIDS["experiment"])
    return root


def ensure_alias(folder: Path, name: str, uid: str) -> None:
    """CK's two alias files, alias-a-<name> (holds the UID) and alias-u-<uid> (holds the name)."""
    cm = Path(folder) / ".cm"
    for file, text in ((cm / f"alias-a-{name}", uid), (cm / f"alias-u-{uid}", name)):
        if not file.exists() or file.read_text().strip() != text:
            _write_text_atomic(file, text + "\n")


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def entry_name(model: str, lib: str) -> str:
    """experiment/<model>-<lib>: a valid CK entry name for any model name (modelnames.entry_model)."""
    from .modelnames import entry_model

    return f"{entry_model(model)}-{lib}"


def ensure_experiment_entry(root: Path | str, model: str, lib: str) -> Path:
    """experiment/<model>-<lib>/, tagged with the experiment tag, the model's entry name and the lib; its meta keeps
    the model's full name."""
    from .modelnames import entry_model
    from .point import TAG

    return ensure_entry(root, entry_name(model, lib), {"tags": [TAG, entry_model(model), lib], "model": model,
                                                       "lib": lib})


def ensure_entry(root: Path | str, name: str, meta: dict) -> Path:
    """experiment/<name>/ with its meta (written once) and CK's alias files."""
    entry = Path(root) / "experiment" / name
    if not (entry / ".cm" / "meta.json").exists():
        write_json_atomic(entry / ".cm" / "meta.json", meta)
    ensure_alias(Path(root) / "experiment", name, uid_of(f"experiment:{name}"))
    return entry


def point_features(point: dict) -> dict:
    """What makes two measurements the same point (as CK's search_point_by_features): model, lib, batch,
    layout, CUDA graph, for compiled libs the compile mode, freezing and dynamic batch (from the settings in older
    points), and for the adaptive lib its plan's digest."""
    from . import point as points

    env, settings = points.env(point), points.settings(point)
    keys = ("CK_MODEL", "CK_LIB", "CK_BATCH_SIZE", "CK_MEMORY_FORMAT", "CK_CUDA_GRAPH")
    features = {k: env.get(k) for k in keys}
    if "compile_mode" in settings or "CK_COMPILE_MODE" in env:
        features["CK_COMPILE_MODE"] = env.get("CK_COMPILE_MODE", settings.get("compile_mode"))
        features["CK_FREEZING"] = bool(env.get("CK_FREEZING", settings.get("freezing")))
        if env.get("CK_DYNAMIC_BATCH"):  # one compilation for all batch sizes is not the same point as one per size
            features["CK_DYNAMIC_BATCH"] = True
    if env.get("CK_FOLD_BN"):
        features["CK_FOLD_BN"] = True
    if env.get("CK_ADAPTIVE_PLAN"):  # each plan is its own configuration
        features["CK_ADAPTIVE_PLAN"] = env["CK_ADAPTIVE_PLAN"]
    if env.get("CK_NUM_THREADS"):  # each thread count chosen is its own configuration
        features["CK_NUM_THREADS"] = env["CK_NUM_THREADS"]
    if env.get("CK_INPUT_SHAPE"):  # another input shape is another workload
        features["CK_INPUT_SHAPE"] = env["CK_INPUT_SHAPE"]
    digest = ((point.get("features") or {}).get("model") or {}).get("sha256")
    if digest:  # an ONNX file: the same path may hold another network later
        features["model_sha256"] = digest
    return features


def point_uid(point: dict) -> str:
    return uid_of(json.dumps(point_features(point), sort_keys=True))


def write_point(entry: Path, point: dict, uid: str | None = None) -> Path:
    """Add the point as the next free subpoint of its uid (point.free_subpoints); never overwrites, never
    half-writes. The uid comes from the point's features (ours) or is given (a legacy point keeps its own). The
    search for a free number starts after the subpoints already there, so a crowd's thousands of one configuration
    cost one try each, not thousands."""
    from . import point as points

    uid = uid or point_uid(point)
    text = json_text(point, indent=None)  # compact: see schemas/point-v2.json
    fd, tmp = tempfile.mkstemp(prefix=".ckp.", suffix=".tmp", dir=entry)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for target in points.free_subpoints(entry, uid):
            try:
                os.link(tmp, target)  # atomic and exclusive: fails if another writer took this number
                return target
            except FileExistsError:
                continue
        raise AssertionError("unreachable: free_subpoints does not end")
    finally:
        Path(tmp).unlink(missing_ok=True)


def merge_repo(source: Path | str, target: Path | str) -> tuple[int, int]:
    """Copy every experiment point of `source` (ours or legacy CK ones) into `target` as new subpoints; identical
    points are skipped. Adaptive plan files come along (their names carry their digests).

    Every source point is read (point.read_file) before anything is written: an unreadable one raises ValueError
    naming it, and the target is left as it was. Returns (added, skipped).
    """
    from . import point

    source, target = Path(source), Path(target)
    entries = []
    for entry in sorted(p for p in (source / "experiment").iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            meta = json.loads((entry / ".cm" / "meta.json").read_text())
            tags = [str(t) for t in meta.get("tags", [])]
        except (OSError, ValueError, AttributeError) as error:
            raise ValueError(f"{entry}: unreadable entry meta ({error})") from None
        files = point.subpoint_files(entry)
        for path in files:
            try:
                point.read_file(path, tags)
            except point.PointError as error:
                raise ValueError(f"{path}: {error}") from None
        entries.append((entry, meta, files))
    init_repo(target, RESULTS_ALIAS)
    added = skipped = 0
    for entry, meta, files in entries:
        into = ensure_entry(target, entry.name, meta)
        existing = {json_text(_current(json.loads(f.read_text())), indent=None) for f in point.subpoint_files(into)}
        for path in files:
            data = _current(json.loads(path.read_text()))
            if json_text(data, indent=None) in existing:
                skipped += 1
                continue
            write_point(into, data, None if point.is_ours(data) else point.file_uid(path))
            added += 1
        for plan in sorted(entry.glob("plan-*.json")):  # adaptive plans: named by digest, so never overwritten
            if not (into / plan.name).exists():
                write_json_atomic(into / plan.name, json.loads(plan.read_text()))
    return added, skipped


def _current(data: dict) -> dict:
    """Ours in the current schema version; a legacy point as it is."""
    from . import point

    return point.migrate(data) if point.is_ours(data) else data


def migrate_repo(root: Path | str) -> tuple[int, int]:
    """Rewrite each of our points stored in an older schema version in the current one (point.migrate), compact;
    legacy CK points are left as they are. Every point is read and migrated before any is written: a point that
    cannot be migrated raises ValueError naming it, and nothing changes. Returns (migrated, already current)."""
    from . import point

    pending, current = [], 0
    for path in point.repository_files(Path(root)):
        try:
            data = json.loads(path.read_text())
            if not point.is_ours(data):
                continue
            if data["features"].get("schema_version") == point.SCHEMA_VERSION:
                current += 1
                continue
            pending.append((path, point.validate(point.migrate(data))))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}: {error}") from None
    for path, data in pending:
        write_json_atomic(path, data, indent=None)
    return len(pending), current
