"""The sweep: models x libs x batch sizes, recorded as CK experiment points.

One subprocess per (model, lib) measures all its batch sizes (fast: one torch import, one model build) under a
time limit (unbreakable: a crash, OOM or hang records failed points and the sweep goes on). Every point carries
the sweep's id, so a sweep killed at any moment resumes where it stopped with no duplicate, while a new sweep
of the same configuration adds subpoints (.0002) to the same points. One worker per visible GPU; `--shard I/N`
splits a sweep deterministically over hosts.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jsonschema

from .ckrepo import write_json_atomic
from .errors import BadInput, check_choice, check_positive_int
from .ckrepo import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "script" / "explore-batch-size-libs-models"
JOURNAL_DIR = ".ck-sweeps"  # in the results repository; CK ignores it (not a module folder)


@dataclass(frozen=True)
class SweepConfig:
    name: str
    models: tuple[str, ...]
    libs: tuple[str, ...] | str
    batch_sizes: tuple[int, ...]
    repetitions: int = 3
    iterations: int = 20
    warmup: int = 5
    per_layer: bool = True
    per_layer_passes: int = 1
    memory_format: str = "lib-default"
    time_limit_s: float = 900.0
    min_repetition_ms: float = 0.0  # > 0: iterations is a minimum; a repetition lasts at least this long


@dataclass(frozen=True, order=True)
class Task:
    model: str
    lib: str
    batch_sizes: tuple[int, ...]
    memory_format: str


@dataclass
class Outcome:
    points: int = 0
    failed: Counter = field(default_factory=Counter)  # reason -> count
    measured_ms: float = 0.0  # sum of every timed iteration: the device time the sweep measured


# ------------------------------------------------------------------------------------------ configuration
def _leaf(error):
    """Inside a oneOf, the error of the alternative that fits the value's type, deepest first: it names the field."""
    if not error.context:
        return error
    candidates = [e for e in error.context if e.validator != "type"] or list(error.context)
    return _leaf(max(candidates, key=lambda e: len(e.absolute_path)))


def load_config(name_or_path: str) -> SweepConfig:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise BadInput("sweep config", name_or_path, f"a preset ({presets}) or a path to a JSON file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BadInput("sweep config", str(path), f"valid JSON ({error})") from None
    schema = json.loads((Path(__file__).parent / "schemas" / "sweep-config-v1.json").read_text())
    errors = [_leaf(e) for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]
    found = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
    if found:
        raise BadInput("sweep config", str(path), "a valid configuration: " + "; ".join(found))
    from . import models as model_registry

    models = tuple(model_registry.MODELS) if data["models"] == "all" else tuple(data["models"])
    for name in models:
        check_choice("model", name, model_registry.MODELS)
    libs = data["libs"] if data["libs"] == "available" else tuple(data["libs"])
    options = {k: data[k] for k in ("repetitions", "iterations", "warmup", "per_layer", "per_layer_passes",
                                    "memory_format", "time_limit_s", "min_repetition_ms") if k in data}
    return SweepConfig(path.stem, models, libs, expand_batch_sizes(data["batch_sizes"]), **options)


def expand_batch_sizes(spec) -> tuple[int, ...]:
    if isinstance(spec, list):
        return tuple(spec)
    if spec.get("powers_of_two"):
        sizes, size = [], 1
        while size <= spec["stop"]:
            if size >= spec["start"]:
                sizes.append(size)
            size *= 2
        return tuple(sizes)
    return tuple(range(spec["start"], spec["stop"] + 1, spec.get("step", 1)))  # stop inclusive, as CK's loop


def parse_list(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise BadInput("shard", text, "I/N with 0 <= I < N, e.g. 0/4 (Slurm: $SLURM_ARRAY_TASK_ID/4)") from None
    if not 0 <= index < count:
        raise BadInput("shard", text, "I/N with 0 <= I < N, e.g. 0/4 (Slurm: $SLURM_ARRAY_TASK_ID/4)")
    return index, count


# ------------------------------------------------------------------------------------------------ planning
def why_no_tasks(config: SweepConfig, device: str) -> str:
    """What left a sweep with no task: the libs of the config that cannot run here, each with its reason."""
    from . import backends

    names = [lib for lib in backends.LIBS if lib != "null"] if config.libs == "available" else list(config.libs)
    reasons = [backends.runnable(lib) for lib in names
               if _on_device(lib, device) and backends.runnable(lib) is not None]
    if not reasons:
        return f"no lib of config {config.name!r} runs on device {device!r}"
    return f"config {config.name!r} on device {device!r}: " + "; ".join(reasons[:4]) + (
        f"; and {len(reasons) - 4} more" if len(reasons) > 4 else "")



def plan_tasks(config: SweepConfig, models: list[str] | None = None, libs: list[str] | None = None,
               batch_sizes: list[str] | None = None, device: str = "any") -> list[Task]:
    from . import backends

    chosen_models = [m for m in config.models if not models or m in models]
    for name in models or []:
        check_choice("model", name, config.models)
    if config.libs == "available":
        lib_names = [lib for lib in backends.LIBS if lib != "null" and backends.runnable(lib) is None]
    else:
        lib_names = [backends.family_of(lib) and lib for lib in config.libs]
    for name in libs or []:
        check_choice("lib", name, lib_names)
    lib_names = [lib for lib in lib_names if (not libs or lib in libs) and _on_device(lib, device)]
    sizes = config.batch_sizes
    if batch_sizes:
        sizes = tuple(check_positive_int("batch size", b) for b in batch_sizes)
    tasks = []
    for model in chosen_models:
        for lib in lib_names:
            layout = backends.default_memory_format(lib) if config.memory_format == "lib-default" else config.memory_format
            tasks.append(Task(model, lib, tuple(sizes), layout))
    return sorted(tasks, key=lambda t: (t.model, t.lib))


def _on_device(lib: str, device: str) -> bool:
    from . import backends

    check_choice("device", device, ("any", "cpu", "cuda"))
    if device == "any":
        return True
    return (backends.family_of(lib) in ("cpu", "null")) == (device == "cpu")


def shard(tasks: list[Task], index: int, count: int) -> list[Task]:
    """Deterministic round-robin split of the sorted tasks: every task in exactly one shard."""
    return tasks[index::count]


# ----------------------------------------------------------------------------------------- journal, resume
def sweep_key(config: SweepConfig, tasks: list[Task], shard_text: str) -> str:
    from .ckrepo import uid_of

    return uid_of(json.dumps([asdict(config), [asdict(t) for t in tasks], shard_text], sort_keys=True, default=str))


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


def recorded(repo: Path, sweep_id: str) -> set[tuple[str, str, int]]:
    """(model, lib, batch) already recorded by this sweep."""
    done = set()
    for path in repo.glob("experiment/*/ckp-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("features", {}).get("sweep", {}).get("id") == sweep_id:
            env = data["choices"]["env"]
            done.add((env["CK_MODEL"], env["CK_LIB"], env["CK_BATCH_SIZE"]))
    return done


def remove_stale_temporaries(repo: Path) -> None:
    """A writer killed between its temporary file and the link leaves `.ckp.*.tmp` behind; no writer runs now."""
    for path in repo.glob("experiment/*/.ckp.*.tmp"):
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------- worker
def worker(task: Task, config: SweepConfig, sweep: dict, repo: Path, wait: bool = False) -> int:
    """In the subprocess: measure every batch size of one (model, lib); one JSON line per point on stdout.

    With `wait`, the host-side preparation (imports, the model, its work, the images) is done first, then the
    worker says {"ready": true} and waits for a line on stdin before it touches the GPU: the parent starts the
    next worker while this one's predecessor measures, and only one process at a time uses the device.
    """
    from . import backends, bench, engine

    done = recorded(repo, sweep["id"])
    # compile libs compile once for every batch size: one compilation per size would take most of the sweep
    options = backends.Options(memory_format=task.memory_format, dynamic_batch=True)
    backend = backends.create(task.lib, options)
    session = engine.Session(task.model, backend, max(task.batch_sizes))
    session.prepare_host()
    if wait:
        print(json.dumps({"ready": True}), flush=True)
        if not sys.stdin.readline():
            return 0  # the parent went away before our turn
    for batch in task.batch_sizes:
        if (task.model, task.lib, batch) in done:
            print(json.dumps({"batch": batch, "skipped": True}), flush=True)
            continue
        plan = engine.RunPlan(task.model, batch, config.warmup, config.iterations, config.repetitions,
                              per_layer=config.per_layer, profile=False, per_layer_passes=config.per_layer_passes,
                              harness_check=False, min_repetition_ms=config.min_repetition_ms)
        measured = session.measure(plan)
        bench.record(bench.PointRequest(plan, task.lib, options, repo), measured,
                     _sweep_features(sweep))
        print(json.dumps({"batch": batch, "ok": measured.run_success, "error": measured.error,
                          "measured_ms": sum(map(sum, measured.samples_ms))}), flush=True)
    session.close()
    return 0


def _sweep_features(sweep: dict) -> dict:
    return {"id": sweep["id"], "config": sweep["config"], **({"shard": sweep["shard"]} if sweep["shard"] else {})}


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the sweep process dies, so a killed sweep leaves no orphan writing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# -------------------------------------------------------------------------------------------------- parent
class Worker:
    """One explore-worker subprocess, its stderr drained from the start (a full pipe would block it)."""

    def __init__(self, task: Task, config: SweepConfig, sweep: dict, repo: Path, gpu: int | None, wait: bool):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        command = [sys.executable, "-m", "ck_plugins", "explore-worker", "--task", json.dumps(asdict(task)),
                   "--config-json", json.dumps(asdict(config)), "--sweep", json.dumps(sweep), "--repo", str(repo),
                   *(["--wait"] if wait else [])]
        self.task, self.waits = task, wait
        self.proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE if wait else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=_die_with_parent)
        self.stderr_tail: list[str] = []
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_tail = (self.stderr_tail + [line])[-20:]

    def go(self) -> None:
        if self.waits:
            try:
                self.proc.stdin.write("go\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # it died while preparing: its missing points are recorded as failed

    def finish(self) -> int:
        code = self.proc.wait()
        self._drain.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        return code


def run_task(task: Task, config: SweepConfig, sweep: dict, repo: Path, gpu: int | None, on_point,
             started: Worker | None = None) -> Outcome:
    """Run one worker under the time limit; whatever it did not record becomes a failed point with the reason."""
    running = started or Worker(task, config, sweep, repo, gpu, wait=False)
    outcome, reported = Outcome(), set()
    running.go()
    timer = threading.Timer(config.time_limit_s, running.proc.kill)
    timer.start()
    for line in running.proc.stdout:
        message = _parse(line)
        if message is None:
            continue
        reported.add(message["batch"])
        if not message.get("skipped"):
            outcome.points += 1
            outcome.measured_ms += message.get("measured_ms", 0.0)
            if not message["ok"]:
                outcome.failed[message["error"][:120]] += 1
        on_point(task, message["batch"])
    code = running.finish()
    timed_out = not timer.is_alive() and code != 0
    timer.cancel()
    missing = [b for b in task.batch_sizes if b not in reported]
    if missing:
        last = "".join(running.stderr_tail).strip().splitlines()[-1:] or ["no output"]
        reason = (f"worker timed out after {config.time_limit_s:g} s" if timed_out else
                  f"worker exited with code {code}: {last}")
        for batch in missing:
            _record_failure(task, batch, config, sweep, repo, reason)
            outcome.points += 1
            outcome.failed[reason[:120]] += 1
            on_point(task, batch)
    return outcome


def _parse(line: str) -> dict | None:
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        return None
    return message if isinstance(message, dict) and "batch" in message else None


def _record_failure(task: Task, batch: int, config: SweepConfig, sweep: dict, repo: Path, reason: str) -> None:
    from . import bench, engine, platform_info

    if (task.model, task.lib, batch) in recorded(repo, sweep["id"]):
        return
    plan = engine.RunPlan(task.model, batch, config.warmup, config.iterations, config.repetitions)
    failed = engine.Measurement(plan, {"lib": task.lib, "memory_format": task.memory_format}, run_success=False,
                                error=reason, platform=platform_info.describe(__import__("torch").device("cpu")))
    bench.record(bench.PointRequest(plan, task.lib, None, repo), failed, _sweep_features(sweep))


def remaining(tasks: list[Task], repo: Path, sweep_id: str) -> list[Task]:
    """The tasks with only the batch sizes this sweep has not recorded yet (no worker starts just to skip)."""
    done = recorded(repo, sweep_id)
    left = [Task(t.model, t.lib, tuple(b for b in t.batch_sizes if (t.model, t.lib, b) not in done), t.memory_format)
            for t in tasks]
    return [t for t in left if t.batch_sizes]


def run(tasks: list[Task], config: SweepConfig, sweep: dict, repo: Path, workers: int,
        on_task=lambda total: None) -> Outcome:
    """Run the tasks, `workers` at a time (one per GPU), with a progress bar; return what was measured.
    `on_task(total so far)` runs after each (model, lib), under the lock (the journal keeps this part's figures)."""
    from tqdm import tqdm

    tasks = remaining(tasks, repo, sweep["id"])
    total = Outcome()
    bar = tqdm(total=sum(len(t.batch_sizes) for t in tasks), unit="point", dynamic_ncols=True, mininterval=1.0)
    lock = threading.Lock()

    def on_point(task: Task, batch: int) -> None:
        with lock:
            bar.set_postfix_str(f"{task.model} {task.lib} batch {batch}", refresh=False)
            bar.update(1)

    pending: queue.Queue = queue.Queue()
    for task in tasks:
        pending.put(task)

    def take() -> Task | None:
        try:
            return pending.get_nowait()
        except queue.Empty:
            return None

    def serve(gpu: int | None) -> None:
        # On a GPU the next worker prepares on the host while this one measures; on a CPU it would take the
        # cores being measured, so CPU workers start one after the other.
        def start(task: Task | None) -> Worker | None:
            return Worker(task, config, sweep, repo, gpu, wait=True) if task and gpu is not None else None

        upcoming = take()
        started = start(upcoming)
        while upcoming:
            task, running = upcoming, started
            upcoming = take()
            started = start(upcoming)
            outcome = run_task(task, config, sweep, repo, gpu, on_point, running)
            with lock:
                total.points += outcome.points
                total.measured_ms += outcome.measured_ms
                total.failed.update(outcome.failed)
                on_task(total)

    threads = [threading.Thread(target=serve, args=(gpu,)) for gpu in _gpus(workers)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    bar.close()
    return total


def _gpus(workers: int) -> list[int | None]:
    """One slot per worker: GPU indices where GPUs are visible, else CPU slots."""
    try:
        import torch

        count = torch.cuda.device_count()
    except ImportError:
        count = 0
    if count:
        return list(range(min(workers, count) if workers else count))
    return [None] * max(1, workers)


class Journal:
    """The sweep's journal file: its id, and one entry per part (a run killed and resumed has several), each part's
    figures saved after every (model, lib), so a killed part still counts in the summary."""

    def __init__(self, repo: Path, key: str, sweep: dict):
        self.path, self.sweep = repo / JOURNAL_DIR / f"{key}.json", sweep
        self.sweep["parts"] = sweep.get("parts", []) + [{"wall_s": 0.0, "measured_s": 0.0, "points": 0, "failed": 0}]
        self.started = time.perf_counter()
        write_json_atomic(self.path, self.sweep)

    def save(self, total: Outcome, complete: bool = False) -> dict:
        self.sweep["parts"][-1] = {"wall_s": time.perf_counter() - self.started, "measured_s": total.measured_ms / 1e3,
                                   "points": total.points, "failed": sum(total.failed.values()),
                                   "failures": dict(total.failed)}
        parts = self.sweep["parts"]
        wall, measured = sum(p["wall_s"] for p in parts), sum(p["measured_s"] for p in parts)
        failures: Counter = Counter()
        for part in parts:
            failures.update(part.get("failures", {}))
        self.sweep.update({"complete": complete, "wall_s": wall, "measured_s": measured,
                           "wall_over_measured": wall / measured if measured else None,
                           "points": sum(p["points"] for p in parts), "failed": sum(failures.values()),
                           "failures": dict(failures)})
        write_json_atomic(self.path, self.sweep)
        return self.sweep


# ------------------------------------------------------------------------------------------ the CK route
def run_via_ck(tasks: list[Task], config: SweepConfig, sweep: dict, repo: Path) -> Outcome:
    """CK's own autotune pipeline over CK_BATCH_SIZE (as ck-caffe did), one `bench-<family>` run per point.

    Our program records each point into the same experiment/<model>-<lib>/ entries, tagged with this sweep,
    so CK's own records are not needed (record: no). Slower: one process, and CK's fixed sleeps, per point.
    """
    import ck.kernel as ck

    from . import backends

    outcome = Outcome()
    for task in remaining(tasks, repo, sweep["id"]):
        sizes = list(task.batch_sizes)
        env = {"CK_PYTHON": sys.executable, "CK_LIB": task.lib, "CK_MODEL": task.model, "CK_FAMILY": "any",
               "CK_ITERATIONS": config.iterations, "CK_REPETITIONS": config.repetitions, "CK_WARMUP": config.warmup,
               "CK_MEMORY_FORMAT": task.memory_format, "CK_PER_LAYER": str(config.per_layer).lower(),
               "CK_PROFILE": "false", "CK_RESULTS_REPO": str(repo), "CK_SWEEP_ID": sweep["id"],
               "CK_MIN_REPETITION_MS": config.min_repetition_ms,
               "CK_SWEEP_CONFIG": sweep["config"], "CK_SWEEP_SHARD": sweep["shard"]}
        program = f"bench-{backends.family_of(task.lib)}"
        prepared = ck.access({"action": "pipeline", "prepare": "yes", "module_uoa": "program", "data_uoa": program,
                              "cmd_key": "default", "env": env, "no_state_check": "yes",
                              "no_compiler_description": "yes", "skip_calibration": "yes", "cpu_freq": "",
                              "gpu_freq": "", "speed": "no", "energy": "no", "out": ""})
        if prepared["return"] > 0:
            raise RuntimeError(f"CK pipeline for {program}: {prepared['error']}")
        for key in ("ready", "fail", "return"):
            prepared.pop(key, None)
        prepared["no_clean"] = "yes"
        tuned = ck.access({"action": "autotune", "module_uoa": "pipeline", "data_uoa": "program", "pipeline": prepared,
                           "choices_order": [["##choices#env#CK_BATCH_SIZE"]],
                           "choices_selection": [{"type": "loop", "choice": sizes, "default": sizes[0]}],
                           "iterations": len(sizes), "repetitions": 1, "sleep": 0, "record": "no", "out": ""})
        if tuned["return"] > 0:
            raise RuntimeError(f"CK autotune for {program}: {tuned['error']}")
        outcome.points += len(sizes)
    return outcome
