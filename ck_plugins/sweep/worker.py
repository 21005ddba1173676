"""The worker: a subprocess that measures every batch size of each (model, lib) task of a job, and the parent's
handle on it."""
from __future__ import annotations

import functools
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import caches
from .config import SweepConfig
from .journal import recorded, sweep_features
from .plan import Job, Task


def worker(job: Job, config: SweepConfig, sweep: dict, repo: Path, wait: bool = False) -> int:
    """In the subprocess: measure every batch size of each (model, lib) of the job, in turn; one JSON line per point
    on stdout.

    With `wait`, the host-side preparation (imports, the model, its work, the images, the CUDA context; the first
    task's weights copied and a compile lib's compilation, see `_await_turn`) is done first, on three quarters of the
    cores, then the worker says {"ready": true} and waits for a line on stdin before it launches anything on the GPU:
    the parent starts the next workers while this one's predecessor measures, and only one process at a time uses
    the device. The job's later tasks find the cuDNN plans its earlier ones autotuned (plan.jobs); their points say
    so. Once every batch size is measured it says {"device_free": true} and only then writes its points, while the
    next worker measures.
    Everything alive once the host work is done is frozen out of the garbage collector (gc.freeze): each unload
    collects garbage, which would otherwise scan every object of torch and inductor (0.1-0.2 s a time, on the
    device's time).
    """
    from .. import measure

    if wait:
        _pin("prepare")
    done = recorded(repo, sweep["id"])
    sessions = [_session(job, config)]
    sessions += [sessions[0].sibling(_backend(task)) for task in job[1:]]
    gc.freeze()  # what lives from here on (imports, the model on the host) is never garbage: unloads skip scanning it
    measure.open_device(sessions[0].backend.device)
    first = job[0]
    left = [b for b in first.batch_sizes if (first.model, first.lib, b) not in done] or list(first.batch_sizes)
    turn = _await_turn(sessions[0], left[0] if wait else None)
    if turn is None:
        return 0  # the parent went away before our turn
    clock = measure.PhaseClock({})  # the device is ours from here: every second of it goes to a point's gaps
    measured, before = [], []  # (task, point, its gaps); the libs measured earlier in this process
    for task, session in zip(job, sessions):
        points = _measure_task(task, session, config, done, clock)
        for point, gaps in points:
            if before:
                point.notes.append(f"measured in one process after {', '.join(before)}, whose convolutions are "
                                   "the same: cuDNN's autotuned plans carried over (PyTorch keeps them per process), "
                                   "so this point's warm-up and peak memory hold no autotuning of those convolutions")
            measured.append((task, point, gaps))
        before += [task.lib] if any(point.run_success for point, _ in points) else []  # it autotuned
    if measured:
        clock.phases = measured[-1][2]
        clock.done("between")  # the last task's unload
    print(json.dumps({"device_free": True}), flush=True)
    for index, (task, point, gaps) in enumerate(measured):
        _record(task, point, gaps, sweep, repo, turn if index == 0 else None)
    return 0


def _session(job: Job, config: SweepConfig):
    """The first task's backend and session, for every batch size of the job, prepared on the host (see
    engine.Session.prepare_host); the other tasks' sessions are its siblings."""
    from .. import caches, engine

    largest = max(b for task in job for b in task.batch_sizes)
    session = engine.Session(job[0].model, _backend(job[0]), largest, input_shape=config.input_shape,
                             references=engine.ReferenceCache(caches.references()))
    session.prepare_host()
    return session


def _backend(task: Task):
    from .. import backends

    return backends.create(task.lib, _options(task))


def _options(task: Task):
    """The backend's options: compile libs compile once for every batch size (one compilation per size would take
    most of the sweep)."""
    from .. import backends

    return backends.Options(memory_format=task.memory_format, dynamic_batch=True)


def _measure_task(task: Task, session, config: SweepConfig, done: dict, clock) -> list:
    """Every batch size of the task this sweep has not recorded yet, each with its gaps (see _measure_point); the
    backend unloaded after."""
    from .. import engine

    measured = []
    for batch in task.batch_sizes:
        if (task.model, task.lib, batch) in done:
            print(json.dumps({"lib": task.lib, "batch": batch, "skipped": True}), flush=True)
            continue
        plan = engine.RunPlan(task.model, batch, config.warmup, config.iterations, config.repetitions,
                              per_layer=config.per_layer, profile=False, per_layer_passes=config.per_layer_passes,
                              harness_check=False, min_repetition_ms=config.min_repetition_ms,
                              threads=config.threads, input_shape=config.input_shape)
        measured.append(_measure_point(session, plan, clock))
    session.close()
    return measured


def _measure_point(session, plan, clock) -> tuple:
    """The point and its gaps, the worker's time on the device beside the point's stages, so that the journal
    accounts for every second of it: `between` it and what `clock` (a measure.PhaseClock) closed last (the turn's
    first call, the point before, a task's unload), and `outside` its stages while it was measured (its checks, the
    platform it records)."""
    clock.phases = gaps = {}
    clock.done("between")
    point = session.measure(plan)
    clock.done("outside", minus=sum(point.phases_s.values()))
    return point, gaps


def _record(task: Task, point, gaps: dict, sweep: dict, repo: Path, turn: "Turn | None") -> None:
    """Write the point and report it with its stages and gaps; the job's first point also carries its turn (the
    first call, the wait)."""
    from .. import bench, measure

    start = measure.now_s()
    bench.record(bench.PointRequest(point.plan, task.lib, _options(task), repo), point, sweep_features(sweep))
    phases = {**point.phases_s, **gaps, "record": measure.now_s() - start}
    if turn:
        phases["warmup"] = phases.get("warmup", 0.0) + turn.first_call_s
        phases["waiting"] = turn.waiting_s
    print(json.dumps({"lib": task.lib, "batch": point.plan.batch_size, "ok": point.run_success, "error": point.error,
                      "measured_ms": sum(map(sum, point.samples_ms)), "phases_s": phases}), flush=True)


@dataclass(frozen=True)
class Turn:
    first_call_s: float = 0.0  # the compiled first call, run once the turn came: a warm-up of the first point
    waiting_s: float = 0.0  # how long the device sat idle from the parent's go until this worker was ready


def _await_turn(session, first_batch: int | None) -> Turn | None:
    """A waiting worker (`first_batch` given) prepares what it can ahead (loads; a compile lib compiles
    `first_batch`), says it is ready and waits for its turn; returns the Turn once it came, or None if the parent
    went away first. A worker that does not wait returns an empty Turn at once."""
    from .. import measure

    if first_batch is None:
        return Turn()
    ahead = session.prepare_ahead(first_batch)
    print(json.dumps({"ready": True}), flush=True)
    line = sys.stdin.readline()
    if not line:
        return None
    waiting_s = max(0.0, time.monotonic() - float(line.split()[1]))  # "go <time sent>": see Worker.go
    _pin("measure")
    start = measure.now_s()
    if ahead:
        ahead.go()  # the first call, compiled, runs on the device now (its autotuning)
    return Turn(measure.now_s() - start, waiting_s)


def _pin(role: str) -> None:
    """On a host of 4 or more cores, a GPU sweep's workers measure on the first quarter of the cores and prepare
    (imports, compilation and its pool of compile processes) on the rest, so the next worker's compilation does not
    take the core from which the measuring one launches its kernels. Elsewhere nothing."""
    cores = _allowed_cores()
    if len(cores) >= 4:
        quarter = len(cores) // 4
        os.sched_setaffinity(0, cores[:quarter] if role == "measure" else cores[quarter:])


@functools.cache
def _allowed_cores() -> list[int]:
    """The cores this process may run on when it starts (before it pins itself)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the sweep process dies, so a killed sweep leaves no orphan writing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Worker:
    """One explore-worker subprocess, its stderr drained from the start (a full pipe would block it)."""

    def __init__(self, job: Job, config: SweepConfig, sweep: dict, repo: Path, gpu: int | None, wait: bool,
                 command: list[str] | None = None):
        """`command` replaces the worker program (default: `python -m ck_plugins explore-worker` for the job)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(caches.inductor()))  # compiled graphs outlive the sweep
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        command = command or [sys.executable, "-m", "ck_plugins", "explore-worker",
                              "--tasks", json.dumps([asdict(task) for task in job]),
                              "--config-json", json.dumps(asdict(config)), "--sweep", json.dumps(sweep),
                              "--repo", str(repo), *(["--wait"] if wait else [])]
        self.job, self.waits, self.gone = job, wait, False
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
        """Let a waiting worker measure (once: later calls do nothing). The line carries the time it was sent
        (time.monotonic, one clock for every process of the host), so the worker can tell how long the device
        waited for it."""
        if self.waits and not self.gone:
            self.gone = True
            try:
                self.proc.stdin.write(f"go {time.monotonic()!r}\n")
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
