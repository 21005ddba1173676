"""A sweep's journal (.ck-sweeps/<key>.json in the results repository: its id, its parts, their figures) and
what it has recorded, read back from the points: a stopped sweep resumes from there. No torch."""
from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import point
from ..files import write_json_atomic

if TYPE_CHECKING:
    from .config import SweepConfig

JOURNAL_DIR = ".ck-sweeps"  # in the results repository; CK ignores it (not a module folder)


@dataclass
class Outcome:
    points: int = 0
    failed: Counter = field(default_factory=Counter)  # reason -> count
    measured_ms: float = 0.0  # sum of every timed iteration: the device time the sweep measured
    phases_s: Counter = field(default_factory=Counter)  # a point's stage (its phases_s, and record) -> host seconds

    @classmethod
    def of(cls, message: dict) -> "Outcome":
        """One worker line: a point measured (or failed), or one this sweep had already recorded (nothing)."""
        if message.get("skipped"):
            return cls()
        failed = Counter({message["error"][:120]: 1}) if not message.get("ok") else Counter()
        return cls(1, failed, message.get("measured_ms", 0.0), Counter(message.get("phases_s") or {}))

    def add(self, other: "Outcome") -> None:
        self.points += other.points
        self.failed.update(other.failed)
        self.measured_ms += other.measured_ms
        self.phases_s.update(other.phases_s)


def open_sweep(repo: Path, key: str, config: SweepConfig, shard_text: str, fresh: bool) -> dict:
    """The sweep to run: the incomplete one with the same key (resume), or a new one."""
    journal = repo / JOURNAL_DIR / f"{key}.json"
    if journal.exists() and not fresh:
        state = json.loads(journal.read_text())
        if not state.get("complete"):
            return state
    state = {"id": f"{key[:8]}-{uuid.uuid4().hex[:8]}", "config": config.name, "shard": shard_text,
             "complete": False, "started": time.time()}
    write_json_atomic(journal, state)
    return state


def recorded(repo: Path, sweep_id: str) -> dict[tuple[str, str, int], str | None]:
    """(model, lib, batch) already recorded by this sweep -> None when it succeeded, else its error."""
    done = {}
    for path in point.repository_files(repo):
        try:
            data = json.loads(path.read_text())
            if data.get("features", {}).get("sweep", {}).get("id") != sweep_id:
                continue
            env, runs = point.env(data), point.runs(data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        ok = any(r.get("run_success") is True for r in runs)
        done[env["CK_MODEL"], env["CK_LIB"], env["CK_BATCH_SIZE"]] = None if ok else str(runs[0].get("error"))
    return done


def sweep_features(sweep: dict) -> dict:
    """What a point records of the sweep that measured it (features/sweep)."""
    return {"id": sweep["id"], "config": sweep["config"], **({"shard": sweep["shard"]} if sweep["shard"] else {})}


def remove_stale_temporaries(repo: Path) -> None:
    """A writer killed between its temporary file and the link leaves `.ckp.*.tmp` behind; no writer runs now."""
    for path in repo.glob("experiment/*/.ckp.*.tmp"):
        path.unlink(missing_ok=True)


class Journal:
    """The sweep's journal file: its id, and one entry per part (a run killed and resumed has several), each part's
    figures saved after every (model, lib), so a killed part still counts in the summary."""

    def __init__(self, repo: Path, key: str, sweep: dict, conditions: dict | None = None):
        """`conditions`: how this part ran that changes nothing measured (such as prepared_workers), kept in it."""
        self.path, self.sweep, self.conditions = repo / JOURNAL_DIR / f"{key}.json", sweep, dict(conditions or {})
        self.sweep["parts"] = sweep.get("parts", []) + [{"wall_s": 0.0, "measured_s": 0.0, "points": 0, "failed": 0,
                                                         **self.conditions}]
        self.started = time.perf_counter()
        write_json_atomic(self.path, self.sweep)

    def save(self, total: Outcome, complete: bool = False) -> dict:
        self.sweep["parts"][-1] = {"wall_s": time.perf_counter() - self.started, "measured_s": total.measured_ms / 1e3,
                                   "points": total.points, "failed": sum(total.failed.values()),
                                   "failures": dict(total.failed), "phases_s": dict(total.phases_s),
                                   **self.conditions}
        parts = self.sweep["parts"]
        wall, measured = sum(p["wall_s"] for p in parts), sum(p["measured_s"] for p in parts)
        failures, phases = Counter(), Counter()
        for part in parts:
            failures.update(part.get("failures", {}))
            phases.update(part.get("phases_s", {}))
        self.sweep.update({"complete": complete, "wall_s": wall, "measured_s": measured,
                           "wall_over_measured": wall / measured if measured else None,
                           "points": sum(p["points"] for p in parts), "failed": sum(failures.values()),
                           "failures": dict(failures), **cost(wall, measured, phases)})
        write_json_atomic(self.path, self.sweep)
        return self.sweep


def cost(wall_s: float, measured_s: float, phases_s: Counter) -> dict:
    """Where a sweep's wall time went. warmup_s: loading the backends and their warm-ups (cuDNN autotuning and
    compilation go there); harness_s: the rest beside the measured iterations, with its share of the wall time. Its
    parts are in phases_s: the timing loop's own cost (timed minus the measured time), accuracy, per_layer; waiting
    (the device idle while the next worker was not yet ready: its start, a compilation not done), between (a worker
    between its points: unloading a task, planning the next point), outside (inside a point, beside its stages),
    start (the sweep until its first worker's go) and end (from the last device_free until every point is written).
    On a GPU `record` happens while the next worker measures; on a CPU, where workers start one after the other,
    it and each worker's start are on the way too (the latter in no stage)."""
    if not phases_s:  # the CK route: its points' stages are not reported back
        return {"phases_s": {}, "warmup_s": None, "harness_s": None, "harness_share": None, "waiting_s": None}
    warmup = phases_s.get("load", 0.0) + phases_s.get("warmup", 0.0)
    harness = max(0.0, wall_s - measured_s - warmup)
    return {"phases_s": dict(phases_s), "warmup_s": warmup, "harness_s": harness,
            "harness_share": harness / wall_s if wall_s else None, "waiting_s": phases_s.get("waiting", 0.0)}
