"""CK repository files: atomic JSON writes, alias files, experiment entries. No torch here."""
from __future__ import annotations

import itertools
import json
import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # this checkout
OUT_ROOT = REPO_ROOT / "out"  # where commands write by default (ignored by git): reports, results, service data
RESULTS_ALIAS = "ck-precision-bench-results"  # a results repository made by us: the same on every host
MODULE_UIDS = {"program": "b0ac08fe1d3c2615", "os": "0440cb72c2bc5cc6", "experiment": "bc0409fb61f0aa82",
               "script": "84e27ad9dd12e734", "module": "032630d041b4fd8a"}


def json_text(data, indent: int | None = 1) -> str:
    """JSON as we write it: indented, or compact (no spaces at all) with indent=None; NaN refused."""
    return json.dumps(data, indent=indent, separators=None if indent is not None else (",", ":"), allow_nan=False) + "\n"


def write_json_atomic(path: Path | str, data, indent: int | None = 1) -> Path:
    """Write JSON to a temporary file in the same folder, fsync, then rename: readers see all or nothing."""
    path = Path(path)
    text = json_text(data, indent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def uid_of(text: str) -> str:
    """A deterministic 16-hex CK UID: the same name or features give the same UID on every machine."""
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:16]


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
    env, settings = point["choices"]["env"], point["choices"].get("settings", {})
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
    """Add the point as the next free subpoint ckp-<uid>.NNNN.json; never overwrites, never half-writes. The uid
    comes from the point's features (ours) or is given (a legacy point keeps its own). Past 9999 the number takes
    a fifth digit, as CK's own recorder writes it (`str(n).zfill(4)`); the search for a free number starts after
    the subpoints already there, so a crowd's thousands of one configuration cost one try each, not thousands."""
    uid = uid or point_uid(point)
    text = json_text(point, indent=None)  # compact: see schemas/point-v2.json
    fd, tmp = tempfile.mkstemp(prefix=".ckp.", suffix=".tmp", dir=entry)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for number in itertools.count(len(list(entry.glob(f"ckp-{uid}.[0-9]*.json"))) + 1):
            target = entry / f"ckp-{uid}.{number:04d}.json"
            try:
                os.link(tmp, target)  # atomic and exclusive: fails if another writer took this number
                return target
            except FileExistsError:
                continue
        raise AssertionError("unreachable: itertools.count does not end")
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
        files = sorted(f for f in entry.glob("ckp-*.*.json") if f.name.count(".") == 2 and f.name.split(".")[1].isdigit())
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
        existing = {json_text(_current(json.loads(f.read_text())), indent=None) for f in into.glob("ckp-*.json")}
        for path in files:
            data = _current(json.loads(path.read_text()))
            if json_text(data, indent=None) in existing:
                skipped += 1
                continue
            write_point(into, data, None if "CK_MODEL" in data["choices"]["env"] else path.name.split(".")[0][4:])
            added += 1
        for plan in sorted(entry.glob("plan-*.json")):  # adaptive plans: named by digest, so never overwritten
            if not (into / plan.name).exists():
                write_json_atomic(into / plan.name, json.loads(plan.read_text()))
    return added, skipped


def _current(data: dict) -> dict:
    """Ours in the current schema version; a legacy point as it is."""
    from . import point

    return point.migrate(data) if "CK_MODEL" in data["choices"]["env"] else data


def migrate_repo(root: Path | str) -> tuple[int, int]:
    """Rewrite each of our points stored in an older schema version in the current one (point.migrate), compact;
    legacy CK points are left as they are. Every point is read and migrated before any is written: a point that
    cannot be migrated raises ValueError naming it, and nothing changes. Returns (migrated, already current)."""
    from . import point

    pending, current = [], 0
    for path in sorted(Path(root).glob("experiment/*/ckp-*.*.json")):
        try:
            data = json.loads(path.read_text())
            if "CK_MODEL" not in data["choices"]["env"]:
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
