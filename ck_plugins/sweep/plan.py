"""What a sweep runs: one task per (model, lib) with its batch sizes, the libs that run on the device, shards,
what is left of a sweep that was stopped, and the jobs (the tasks one worker process runs, in turn)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..files import uid_of
from ..errors import check_choice, check_positive_int
from ..libnames import FAMILY_OF
from .config import SweepConfig
from .journal import recorded


@dataclass(frozen=True, order=True)
class Task:
    model: str
    lib: str
    batch_sizes: tuple[int, ...]
    memory_format: str


def why_no_tasks(config: SweepConfig, device: str) -> str:
    """What left a sweep with no task: the libs of the config that cannot run here, each with its reason."""
    from .. import backends

    names = [lib for lib in backends.LIBS if lib != "null"] if config.libs == "available" else list(config.libs)
    reasons = [backends.runnable(lib) for lib in names
               if _on_device(lib, device) and backends.runnable(lib) is not None]
    if not reasons:
        return f"no lib of config {config.name!r} runs on device {device!r}"
    return f"config {config.name!r} on device {device!r}: " + "; ".join(reasons[:4]) + (
        f"; and {len(reasons) - 4} more" if len(reasons) > 4 else "")


def plan_tasks(config: SweepConfig, models: list[str] | None = None, libs: list[str] | None = None,
               batch_sizes: list[str] | None = None, device: str = "any") -> list[Task]:
    from .. import backends

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
    from .. import backends

    check_choice("device", device, ("any", "cpu", "cuda"))
    if device == "any":
        return True
    return (backends.family_of(lib) in ("cpu", "null")) == (device == "cpu")


def shard(tasks: list[Task], index: int, count: int) -> list[Task]:
    """Deterministic round-robin split of the sorted tasks: every task in exactly one shard."""
    return tasks[index::count]


def remaining(tasks: list[Task], repo: Path, sweep_id: str) -> list[Task]:
    """The tasks with only the batch sizes this sweep has not recorded yet (no worker starts just to skip)."""
    done = recorded(repo, sweep_id)
    left = [Task(t.model, t.lib, tuple(b for b in t.batch_sizes if (t.model, t.lib, b) not in done), t.memory_format)
            for t in tasks]
    return [t for t in left if t.batch_sizes]


Job = tuple[Task, ...]  # the tasks one worker process runs, in turn


def jobs(tasks: list[Task]) -> list[Job]:
    """One job per task, except that a model's tasks whose backends share cuDNN's autotuned plans (the same
    Backend.shared_plans()) make one job, its compile task first (prepared ahead, it compiles and autotunes; the
    eager tasks after it find the plans made). In the order of each job's first task."""
    from .. import backends

    grouped: dict[object, list[Task]] = {}
    for task in tasks:
        plans = backends.create(task.lib, backends.Options(memory_format=task.memory_format)).shared_plans()
        grouped.setdefault((task.model, plans) if plans else task, []).append(task)
    return [tuple(sorted(group, key=lambda t: not _compiles(t))) for group in grouped.values()]


def _compiles(task: Task) -> bool:
    return FAMILY_OF.get(task.lib) == "compile"


def run_order(jobs: list[Job]) -> list[Job]:
    """The order a GPU sweep runs its jobs in: each model's compile jobs spread among its other jobs, so that a
    compile worker, prepared ahead, compiles while jobs that do not compile measure (three compile jobs in a row
    would each wait for the one before). The set of tasks, and which shard has which, do not change."""
    ordered = []
    for model in dict.fromkeys(job[0].model for job in jobs):
        own = [job for job in jobs if job[0].model == model]
        compiling = [job for job in own if _compiles(job[0])]
        others = [job for job in own if not _compiles(job[0])]
        after = [round((i + 1) * len(others) / len(compiling)) for i in range(len(compiling))]  # others before each
        start = 0
        for job, end in zip(compiling, after):
            ordered += others[start:end] + [job]
            start = end
        ordered += others[start:]
    return ordered


def sweep_key(config: SweepConfig, tasks: list[Task], shard_text: str) -> str:
    """What identifies a sweep for resuming: its configuration, its tasks and its shard."""
    return uid_of(json.dumps([asdict(config), [asdict(t) for t in tasks], shard_text], sort_keys=True, default=str))
