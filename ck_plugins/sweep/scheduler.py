"""The parent: workers in turn (one per GPU; on a GPU the next ones prepare while this one measures), each under
its time limit; whatever a worker did not record becomes a failed point with the reason."""
from __future__ import annotations

import functools
import json
import os
import queue
from collections import Counter, deque
import threading
import time
from pathlib import Path

from ..errors import BadInput
from .config import SweepConfig
from .journal import Outcome, recorded, sweep_features
from .plan import Job, Task, jobs, remaining, run_order
from .worker import Worker, _allowed_cores


def run_job(job: Job, config: SweepConfig, sweep: dict, repo: Path, gpu: int | None, on_point,
            started: Worker | None = None, on_last=lambda: None) -> Outcome:
    """Run one worker for the job's tasks under the time limit (the config's, per task); whatever it did not record
    becomes a failed point with the reason. `on_point(task, batch, Outcome of that point)` after each point;
    `on_last()` once, as soon as the worker says the device is free (it has measured every batch size and writes its
    points) or has reported every batch size, before it has exited (what it still does touches no kernel: the next
    worker may take the device)."""
    running = started or Worker(job, config, sweep, repo, gpu, wait=False)
    tasks = {task.lib: task for task in job}
    expected = {(task.lib, batch) for task in job for batch in task.batch_sizes}
    outcome, reported = Outcome(), set()
    device_free = functools.cache(on_last)  # said once
    running.go()
    limit_s = config.time_limit_s * len(job)
    timer = threading.Timer(limit_s, running.proc.kill)
    timer.start()
    for line in running.proc.stdout:
        message = _parse(line, tasks)
        if message is None:
            continue
        if message.get("device_free") is True:
            device_free()
            continue
        reported.add((message["lib"], message["batch"]))
        point = Outcome.of(message)
        outcome.add(point)
        on_point(tasks[message["lib"]], message["batch"], point)
        if reported >= expected:
            device_free()
    code = running.finish()
    timed_out = not timer.is_alive() and code != 0
    timer.cancel()
    missing = sorted(expected - reported)
    if missing:
        last = "".join(running.stderr_tail).strip().splitlines()[-1:] or ["no output"]
        reason = f"worker timed out after {limit_s:g} s" if timed_out else f"worker exited with code {code}: {last}"
        for lib, batch in missing:
            _record_failure(tasks[lib], batch, config, sweep, repo, reason)
            point = Outcome(1, Counter({reason[:120]: 1}))
            outcome.add(point)
            on_point(tasks[lib], batch, point)
    device_free()
    return outcome


def _parse(line: str, tasks: dict[str, Task]) -> dict | None:
    """A worker's line: a point of one of `tasks` (by lib) or the device freed; None for anything else."""
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    return message if message.get("device_free") is True or message.get("lib") in tasks and "batch" in message else None


def _record_failure(task: Task, batch: int, config: SweepConfig, sweep: dict, repo: Path, reason: str) -> None:
    from .. import bench, engine, platform_info

    if (task.model, task.lib, batch) in recorded(repo, sweep["id"]):
        return
    plan = engine.RunPlan(task.model, batch, config.warmup, config.iterations, config.repetitions,
                          threads=config.threads, input_shape=config.input_shape)
    failed = engine.Measurement(plan, {"lib": task.lib, "memory_format": task.memory_format}, run_success=False,
                                error=reason, platform=platform_info.describe(__import__("torch").device("cpu")))
    bench.record(bench.PointRequest(plan, task.lib, None, repo), failed, sweep_features(sweep))


def run(tasks: list[Task], config: SweepConfig, sweep: dict, repo: Path, workers: int,
        on_progress=lambda total: None, prepared: int | None = None) -> Outcome:
    """Run the tasks, `workers` at a time (one per GPU), with a progress bar; return what was measured.
    `on_progress(total so far)` runs after each point, under the lock (the journal keeps this part's figures).
    `prepared`: workers waiting prepared beside the measuring one on a GPU (see prepared_workers)."""
    from tqdm import tqdm

    tasks = remaining(tasks, repo, sweep["id"])
    total = Outcome()
    bar = tqdm(total=sum(len(t.batch_sizes) for t in tasks), unit="point", dynamic_ncols=True, mininterval=1.0)
    lock = threading.Lock()

    def on_point(task: Task, batch: int, point: Outcome) -> None:
        with lock:
            total.add(point)
            on_progress(total)
            bar.set_postfix_str(f"{task.model} {task.lib} batch {batch}", refresh=False)
            bar.update(1)

    pending: queue.Queue = queue.Queue()
    for job in run_order(jobs(tasks)):
        pending.put(job)

    stopping = threading.Event()  # Ctrl-C: no further worker starts (the running ones were interrupted with us)

    def take() -> Job | None:
        if stopping.is_set():
            return None
        try:
            return pending.get_nowait()
        except queue.Empty:
            return None

    began, ahead = time.monotonic(), prepared_workers(prepared, workers)

    def serve(gpu: int | None) -> None:
        # On a GPU the next workers prepare on the host (a compile lib compiles) while this one measures, and the
        # first of them takes the device as soon as this one has reported its last point (see prepared_workers).
        prepared: deque = deque()  # (job, its started worker or None), in turn
        freed = [began]  # when the device was last given on (the next worker's go) or freed

        waits = gpu is not None and ahead > 0  # else each worker starts when the one before has finished

        def top_up() -> None:
            while len(prepared) < (ahead if waits else 1) and (job := take()):
                prepared.append((job, Worker(job, config, sweep, repo, gpu, wait=True) if waits else None))

        def hand_on(following: Worker | None) -> None:
            freed[0] = time.monotonic()
            if following:
                following.go()

        top_up()
        edges = Counter(start=0.0)
        while prepared:
            job, running = prepared.popleft()
            top_up()
            following = prepared[0][1] if prepared else None
            edges["start"] = edges["start"] or time.monotonic() - began  # the first worker's go is sent now
            run_job(job, config, sweep, repo, gpu, on_point, running, on_last=functools.partial(hand_on, following))
        edges["end"] = time.monotonic() - freed[0]  # the last worker writing its points and exiting
        with lock:
            total.phases_s.update(edges)
            on_progress(total)

    threads = [threading.Thread(target=serve, args=(gpu,)) for gpu in _gpus(workers)]
    try:
        [t.start() for t in threads]
        [t.join() for t in threads]
    except KeyboardInterrupt:
        stopping.set()
        raise
    finally:
        bar.close()  # before the caller's last line ("interrupted; ..."), never at exit after it
    return total


def parse_prepared(text: str) -> int | None:
    """explore's --prepared: "auto" (None) or a count of 0 or more."""
    if text.strip() == "auto":
        return None
    try:
        count = int(text.strip())
    except ValueError:
        count = -1
    if count < 0:
        raise BadInput("prepared workers", text, "auto or a whole number, 0 or more")
    return count


def prepared_workers(chosen: int | None, workers: int) -> int:
    """How many workers wait, prepared, beside the measuring one on a GPU: `chosen`, or by default as many as let a
    compile job's worker compile in the time of that many jobs while its preparation shares three quarters of the
    cores with theirs: three on a host of 16 cores or more, two on 8 or more, else one. With 0, each worker starts
    when the one before has finished (the device waits for every start; nothing else runs on the host), as always
    on CPU slots (a prepared worker would take the cores being measured): 0 where no GPU is used."""
    if all(gpu is None for gpu in _gpus(workers)):
        return 0
    if chosen is not None:
        return chosen
    cores = len(_allowed_cores() or range(os.cpu_count() or 1))
    return 3 if cores >= 16 else 2 if cores >= 8 else 1


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


def run_via_ck(tasks: list[Task], config: SweepConfig, sweep: dict, repo: Path) -> Outcome:
    """CK's own autotune pipeline over CK_BATCH_SIZE (as ck-caffe did), one `bench-<family>` run per point.

    Our program records each point into the same experiment/<model>-<lib>/ entries, tagged with this sweep, so
    CK's own records are not needed. Slower: one process, and CK's fixed sleeps, per point. What each point
    became (measured or failed, and why) is read back from the points it recorded."""
    import sys

    from .. import backends, ckedge

    outcome = Outcome()
    for task in remaining(tasks, repo, sweep["id"]):
        env = {"CK_PYTHON": sys.executable, "CK_LIB": task.lib, "CK_MODEL": task.model, "CK_FAMILY": "any",
               "CK_ITERATIONS": config.iterations, "CK_REPETITIONS": config.repetitions, "CK_WARMUP": config.warmup,
               "CK_MEMORY_FORMAT": task.memory_format, "CK_PER_LAYER": str(config.per_layer).lower(),
               "CK_PROFILE": "false", "CK_RESULTS_REPO": str(repo), "CK_SWEEP_ID": sweep["id"],
               "CK_MIN_REPETITION_MS": config.min_repetition_ms, "CK_NUM_THREADS": config.threads,
               "CK_INPUT_SHAPE": "x".join(map(str, config.input_shape)),
               "CK_SWEEP_CONFIG": sweep["config"], "CK_SWEEP_SHARD": sweep["shard"]}
        ckedge.autotune_batch_sizes(f"bench-{backends.family_of(task.lib)}", env, list(task.batch_sizes))
        done = recorded(repo, sweep["id"])
        for batch in task.batch_sizes:
            outcome.points += 1
            error = done.get((task.model, task.lib, batch), "no point recorded (see CK's output)")
            if error is not None:
                outcome.failed[error[:120]] += 1
    return outcome
