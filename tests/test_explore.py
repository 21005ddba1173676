"""The sweep end to end on the CPU: ci config, kill -9 and resume, re-runs, shards merged by git, hangs, CK route."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from ck_plugins import point
from ck_plugins.errors import BadInput
from ck_plugins.sweep import config as sweep_config, plan, scheduler, worker
from conftest import ci_sweep_config

ENV = dict(os.environ, PYTHONWARNINGS="ignore::SyntaxWarning")


def sweep(repo, *args, wait=True):
    command = [sys.executable, "-m", "ck_plugins", "explore", "--repo", str(repo), *args]
    if not wait:
        return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)


def points(repo):
    found = []
    for path in sorted(Path(repo).glob("experiment/*/ckp-*.json")):
        data = json.loads(path.read_text())
        env = data["choices"]["env"]
        found.append((env["CK_MODEL"], env["CK_LIB"], env["CK_BATCH_SIZE"], data["features"]["sweep"]["id"],
                      path.name.split(".")[1], data))
    return found


def test_ci_config_end_to_end_records_valid_points_tagged_like_the_seed(tmp_path):
    done = sweep(tmp_path, "--config", "ci")
    assert done.returncode == 0, done.stderr[-2000:]
    found = points(tmp_path)
    assert sorted((m, lib, b) for m, lib, b, *_ in found) == sorted(
        (m, lib, b) for m in ("squeezenet-1.0", "squeezenet-1.1") for lib in ("null", "torch-cpu") for b in (1, 2))
    assert all(point.problems(data) == [] and len(data["characteristics_list"]) == 3 for *_, data in found)
    meta = json.loads((tmp_path / "experiment" / "squeezenet-1.1-torch-cpu" / ".cm" / "meta.json").read_text())
    assert meta["tags"] == ["explore-batch-size-libs-models", "squeezenet-1.1", "torch-cpu"]
    assert "8 points, 0 failed" in done.stdout
    journal = json.loads(next((tmp_path / ".ck-sweeps").glob("*.json")).read_text())
    stages = {lib: [d["features"]["measurement"]["phases_s"] for _, name, *_, d in found if name == lib]
              for lib in ("null", "torch-cpu")}
    assert all(set(s) >= {"load", "warmup", "timed", "accuracy", "per_layer"} for s in stages["torch-cpu"])
    timed = sum(s["timed"] for s in stages["null"] + stages["torch-cpu"])
    assert journal["phases_s"]["timed"] == pytest.approx(timed, rel=1e-3)  # points keep 6 digits
    assert journal["phases_s"]["record"] > 0 and 0 < journal["harness_share"] < 1
    assert journal["harness_s"] == pytest.approx(journal["wall_s"] - journal["measured_s"] - journal["warmup_s"])
    assert "harness" in done.stdout and "of the wall time" in done.stdout
    on_the_way = ("load", "warmup", "timed", "accuracy", "per_layer", "between", "outside", "start", "end")
    assert all(journal["phases_s"][stage] >= 0 for stage in on_the_way)  # each stage reported
    # disjoint stretches of the wall time (here workers run one after the other; `record` overlaps `end`)
    assert sum(journal["phases_s"][stage] for stage in on_the_way) <= journal["wall_s"] + 0.01
    assert journal["parts"][-1]["prepared_workers"] == 0  # CPU slots: each worker starts after the one before


def test_a_bad_count_of_prepared_workers_is_refused_before_anything_is_written(tmp_path):
    done = sweep(tmp_path, "--config", "ci", "--prepared", "two")
    assert done.returncode != 0 and "prepared workers 'two' is not valid" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not tmp_path.joinpath(".ck-sweeps").exists()
    for text in ("-1", "1.5", "", "auto-ish"):
        with pytest.raises(BadInput, match="expected auto or a whole number, 0 or more"):
            scheduler.parse_prepared(text)
    assert [scheduler.parse_prepared(text) for text in ("auto", "0", " 3 ")] == [None, 0, 3]


@pytest.mark.parametrize("prepared", [0, 1])
def test_on_a_gpu_slot_workers_wait_prepared_beside_the_measuring_one_unless_none_is_asked_for(tmp_path, monkeypatch,
                                                                                                prepared):
    config = sweep_config.load_config(str(ci_sweep_config(tmp_path, models=["squeezenet-1.1"], libs=["null"],
                                                          batch_sizes=[1])))
    tasks = [plan.Task(model, "null", (1,), "nchw") for model in ("squeezenet-1.0", "squeezenet-1.1")]
    started = []  # (waits, how many workers were alive then)

    class Recorded(worker.Worker):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append((self.waits, sum(w.proc.poll() is None for w in alive)))
            alive.append(self)

    alive: list = []
    monkeypatch.setattr(scheduler, "_gpus", lambda workers: [0])  # a GPU slot (the null lib needs no GPU)
    monkeypatch.setattr(scheduler, "Worker", Recorded)
    outcome = scheduler.run(tasks, config, {"id": f"prep-{prepared}", "config": "ci", "shard": ""}, tmp_path, 1,
                            prepared=prepared)
    assert outcome.points == 2 and not outcome.failed
    if prepared:
        assert started == [(True, 0), (True, 1)]  # the second prepares while the first waits for its turn or measures
    else:
        assert started == [(False, 0)] * 2  # each started once the one before had exited


def _workers_of(repo: Path) -> list[str]:
    """The explore-worker processes of a sweep into `repo` still alive (a reaped zombie has no command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
        except OSError:
            continue
        if b"explore-worker" in command and str(repo).encode() in command:
            found.append(proc.name)
    return found


def test_killed_sweep_resumes_without_duplicates_and_a_rerun_adds_subpoints(tmp_path):
    config = ci_sweep_config(tmp_path, models=["squeezenet-1.1"], batch_sizes=[1, 2, 3, 4])
    repo = tmp_path / "repo"
    proc = sweep(repo, "--config", str(config), wait=False)
    deadline = time.time() + 300
    while not _journaled(repo) and time.time() < deadline:
        time.sleep(0.05)  # the first worker (null) writes its points once it has measured them all
    proc.send_signal(signal.SIGKILL)  # the sweep process; its worker dies with it (PR_SET_PDEATHSIG)
    proc.wait()
    before = len(points(repo))
    assert 0 < before < 8
    deadline = time.time() + 60
    while _workers_of(repo):  # the worker dies with the sweep (PR_SET_PDEATHSIG): resume once it is gone
        assert time.time() < deadline, "the killed sweep's worker is still running"
        time.sleep(0.05)
    resumed = sweep(repo, "--config", str(config))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    found = points(repo)
    keys = Counter((m, lib, b) for m, lib, b, *_ in found)
    assert len(keys) == 8 and set(keys.values()) == {1}  # every point once: nothing lost, nothing doubled
    assert len({sweep_id for *_, sweep_id, _, _ in found}) == 1 and not list(repo.glob("experiment/*/.ckp.*"))
    assert all(point.problems(data) == [] for *_, data in found)
    journal = json.loads(next((repo / ".ck-sweeps").glob("*.json")).read_text())
    assert journal["complete"] and len(journal["parts"]) == 2 and "in 2 parts" in resumed.stdout
    assert journal["parts"][1]["points"] == 8 - before  # the resumed run measured only what was missing
    assert journal["wall_s"] == sum(part["wall_s"] for part in journal["parts"]) > journal["parts"][1]["wall_s"]
    again = sweep(repo, "--config", str(config), "--libs", "null")
    assert again.returncode == 0
    subpoints = Counter(sub for m, lib, b, _, sub, _ in points(repo) if lib == "null")
    assert subpoints == {"0001": 4, "0002": 4}  # a new sweep adds repetitions to the same points


def _journaled(repo) -> bool:
    """Whether the sweep's journal has counted a point (the parent saves it after each point it is told of)."""
    try:
        return json.loads(next((repo / ".ck-sweeps").glob("*.json")).read_text())["parts"][-1].get("points", 0) > 0
    except (StopIteration, OSError, ValueError, KeyError, IndexError):
        return False  # not started yet, or being replaced


def test_remaining_keeps_only_unrecorded_batch_sizes(tmp_path):
    config = ci_sweep_config(tmp_path, models=["squeezenet-1.1"], libs=["null"], batch_sizes=[1, 2])
    assert sweep(tmp_path / "repo", "--config", str(config)).returncode == 0
    sweep_id = points(tmp_path / "repo")[0][3]
    task = plan.Task("squeezenet-1.1", "null", (1, 2, 3), "nchw")
    assert plan.remaining([task], tmp_path / "repo", sweep_id) == [plan.Task("squeezenet-1.1", "null", (3,), "nchw")]
    assert plan.remaining([task], tmp_path / "repo", "another-sweep") == [task]


GPU_LIBS = ["torch-amp", "torch-compile-bf16", "torch-compile-fp16", "torch-compile-fp32", "torch-cublas-fp16",
            "torch-cublas-fp32", "torch-cudnn-bf16", "torch-cudnn-fp16", "torch-cudnn-fp32", "torch-cudnn-tf32"]


def _tasks(libs, layout="lib-default", models=("alexnet", "resnet50")):
    from ck_plugins.backends import default_memory_format

    return [plan.Task(model, lib, (1, 2), default_memory_format(lib) if layout == "lib-default" else layout)
            for model in models for lib in libs]


@pytest.mark.parametrize("libs", [GPU_LIBS, ["torch-compile-fp16", "torch-compile-fp32", "torch-cudnn-fp16"],
                                  ["torch-compile-fp16", "torch-compile-fp32"],
                                  ["torch-cudnn-fp16", "torch-cudnn-fp32"]])
def test_the_run_order_spreads_compile_jobs_among_the_others_of_their_model(libs):
    jobs = plan.jobs(_tasks(libs))
    ordered = plan.run_order(jobs)
    assert sorted(ordered) == sorted(jobs)
    models = [job[0].model for job in ordered]
    assert models == sorted(models)  # each model's jobs together, models in their order
    compiles = [job[0].lib.startswith("torch-compile") for job in ordered]
    others = sum(not c for c in compiles) // 2
    if others >= sum(compiles) // 2:
        assert not any(a and b for a, b in zip(compiles, compiles[1:]))  # never two compile jobs in a row
        assert not compiles[0]  # the first one has a job to compile during
    assert [j for j in ordered if not j[0].lib.startswith("torch-compile")] == [
        j for j in jobs if not j[0].lib.startswith("torch-compile")]


def test_libs_whose_convolutions_share_cudnn_plans_make_one_job_per_model_its_compile_lib_first():
    libs = lambda jobs, model: [[t.lib for t in job] for job in jobs if job[0].model == model]  # noqa: E731
    jobs = plan.jobs(_tasks(GPU_LIBS + ["torch-cpu", "tensorrt-fp16", "cudnn-graph-fp16"]))
    assert sorted(libs(jobs, "alexnet")) == sorted(libs(jobs, "resnet50")) == sorted([
        ["torch-compile-fp16", "torch-amp", "torch-cudnn-fp16"],  # fp16 convolutions, channels_last
        ["torch-compile-bf16", "torch-cudnn-bf16"],
        ["torch-compile-fp32"], ["torch-cudnn-fp32"],  # fp32, but channels_last and NCHW: plans of their own
        ["torch-cudnn-tf32"], ["torch-cublas-fp16"], ["torch-cublas-fp32"],  # TF32: its own; cuBLAS: no cuDNN
        ["torch-cpu"], ["tensorrt-fp16"], ["cudnn-graph-fp16"]])
    assert sorted(t for job in jobs for t in job) == sorted(_tasks(GPU_LIBS + ["torch-cpu", "tensorrt-fp16",
                                                                               "cudnn-graph-fp16"]))
    one_layout = plan.jobs(_tasks(["torch-compile-fp32", "torch-cudnn-fp32", "torch-cudnn-tf32"], "channels_last",
                                  models=("alexnet",)))
    assert [[t.lib for t in job] for job in one_layout] == [["torch-compile-fp32", "torch-cudnn-fp32"],
                                                           ["torch-cudnn-tf32"]]


def test_shards_partition_the_sweep_and_merge_through_git_without_conflicts(tmp_path):
    tasks = plan.plan_tasks(sweep_config.load_config("ci"))
    parts = [plan.shard(tasks, i, 3) for i in range(3)]
    assert sorted(t for part in parts for t in part) == sorted(tasks) and sum(map(len, parts)) == len(tasks)
    config = ci_sweep_config(tmp_path, models=["squeezenet-1.1"])  # two tasks: one (model, lib) worker per host
    git = lambda cwd, *a: subprocess.run(["git", "-C", str(cwd), *a], check=True, capture_output=True, text=True)
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    (origin / "README").write_text("results\n")
    git(origin, "add", "-A")
    git(origin, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clones = []
    for index in range(2):
        clone = tmp_path / f"host{index}"
        git(tmp_path, "clone", "-q", str(origin), str(clone))
        assert sweep(clone, "--config", str(config), "--shard", f"{index}/2").returncode == 0
        assert len(points(clone)) == 2  # one task, two batch sizes, on each host
        (clone / ".gitignore").write_text(".ck-sweeps/\n")
        git(clone, "add", "-A")
        git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"shard {index}")
        clones.append(clone)
    git(clones[0], "-c", "user.name=t", "-c", "user.email=t@t", "pull", "-q", "--no-rebase", "--no-edit", str(clones[1]), "main")
    merged = points(clones[0])
    assert sorted((m, lib, b) for m, lib, b, *_ in merged) == [
        ("squeezenet-1.1", lib, b) for lib in ("null", "torch-cpu") for b in (1, 2)]  # both hosts' points, once


def test_a_hung_worker_is_stopped_at_the_time_limit_of_its_tasks_and_their_missing_points_are_failed(tmp_path):
    config = sweep_config.load_config(str(ci_sweep_config(tmp_path, models=["squeezenet-1.1"], libs=["null"],
                                                      time_limit_s=1.0)))
    job = (plan.Task("squeezenet-1.1", "null", (1, 2), "nchw"), plan.Task("squeezenet-1.1", "torch-cpu", (1,), "nchw"))
    sweep_state = {"id": "hung-1", "config": "ci", "shard": ""}
    hangs = [sys.executable, "-c", "import json, time; print(json.dumps({'lib': 'null', 'batch': 1, 'ok': True, "
             "'error': None, 'measured_ms': 1.0}), flush=True); time.sleep(600)"]  # reports a point, then hangs
    hung = worker.Worker(job, config, sweep_state, tmp_path, gpu=None, wait=False, command=hangs)
    start = time.monotonic()
    seen = []
    outcome = scheduler.run_job(job, config, sweep_state, tmp_path, None, lambda t, b, p: seen.append((t.lib, b)), hung)
    assert time.monotonic() - start >= 2.0 and hung.proc.returncode == -signal.SIGKILL  # 1 s for each of 2 tasks
    assert outcome.points == 3 and dict(outcome.failed) == {"worker timed out after 2 s": 2}
    assert seen == [("null", 1), ("null", 2), ("torch-cpu", 1)]
    found = points(tmp_path)
    assert [(lib, b, data["characteristics_list"][0]["run"]["error"]) for _, lib, b, _, _, data in found] == [
        ("null", 2, "worker timed out after 2 s"), ("torch-cpu", 1, "worker timed out after 2 s")]  # batch 1 was
    # the worker's to record; the others are failed, each in its lib's entry, with the reason


@pytest.mark.parametrize("args, named", [(["--config", "nope"], "'nope'"), (["--shard", "2/2"], "'2/2'"),
                                         (["--config", "ci", "--libs", "torch-cudnn-fp16"], "'torch-cudnn-fp16'")])
def test_bad_sweep_arguments_are_one_line(tmp_path, args, named):
    done = sweep(tmp_path, *args)
    assert done.returncode == 2 and named in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_ck_route_records_the_same_entries_and_counts_failed_points(ck_env, tmp_path):
    config = ci_sweep_config(tmp_path, models=["squeezenet-1.1"], libs=["null", "torch-cudnn-fp16"])
    done = subprocess.run([sys.executable, "-m", "ck_plugins", "explore", "--config", str(config), "--via-ck",
                           "--repo", str(tmp_path / "repo")], env=dict(ck_env), capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    found = points(tmp_path / "repo")
    assert sorted((m, lib, b) for m, lib, b, *_ in found) == [
        ("squeezenet-1.1", lib, b) for lib in ("null", "torch-cudnn-fp16") for b in (1, 2)]
    assert all(point.problems(data) == [] for *_, data in found)
    assert "4 points, 2 failed" in done.stdout and "2 failed: " in done.stdout and "CUDA" in done.stdout


def test_a_prestarted_worker_prepares_then_measures_only_after_go(tmp_path):
    config = sweep_config.load_config(str(ci_sweep_config(tmp_path, models=["squeezenet-1.1"], libs=["null"])))
    task = plan.Task("squeezenet-1.1", "null", (1, 2), "nchw")
    sweep_state = {"id": "prestart-1", "config": "ci", "shard": ""}
    dropped = worker.Worker((task,), config, sweep_state, tmp_path, gpu=None, wait=True)
    assert json.loads(dropped.proc.stdout.readline()) == {"ready": True}
    dropped.proc.stdin.close()  # its turn never comes: it ends, and had it measured before its turn, points exist
    assert dropped.finish() == 0 and points(tmp_path) == []
    started = worker.Worker((task,), config, sweep_state, tmp_path, gpu=None, wait=True)
    assert json.loads(started.proc.stdout.readline()) == {"ready": True}
    seen = []
    outcome = scheduler.run_job((task,), config, sweep_state, tmp_path, None, lambda t, b, p: seen.append(b), started)
    assert seen == [1, 2] and outcome.points == 2 and not outcome.failed and len(points(tmp_path)) == 2


def test_the_device_time_spent_waiting_for_a_worker_that_is_not_ready_is_counted(tmp_path):
    config = sweep_config.load_config(str(ci_sweep_config(tmp_path, models=["squeezenet-1.1"], libs=["null"])))
    task = plan.Task("squeezenet-1.1", "null", (1, 2), "nchw")
    sweep_state = {"id": "wait-1", "config": "ci", "shard": ""}
    late = worker.Worker((task,), config, sweep_state, tmp_path, gpu=None, wait=True)  # go at once: still starting
    outcome = scheduler.run_job((task,), config, sweep_state, tmp_path, None, lambda t, b, p: None, late)
    assert outcome.points == 2 and outcome.phases_s["waiting"] > 0


def test_a_worker_reads_how_long_the_device_waited_from_the_go_line(monkeypatch):
    class Nothing:
        def prepare_ahead(self, batch):
            return None

    monkeypatch.setattr(worker, "_pin", lambda role: None)
    monkeypatch.setattr(worker.time, "monotonic", lambda: 103.5)
    monkeypatch.setattr(sys, "stdin", io.StringIO("go 100.0\n"))
    assert worker._await_turn(Nothing(), 1).waiting_s == 3.5
    monkeypatch.setattr(sys, "stdin", io.StringIO("go 104.0\n"))  # ready before the go was sent
    assert worker._await_turn(Nothing(), 1).waiting_s == 0.0
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # the parent went away
    assert worker._await_turn(Nothing(), 1) is None


def test_a_workers_time_beside_its_points_stages_is_counted_between_and_outside_them(monkeypatch):
    from ck_plugins import measure

    now = [10.0]
    monkeypatch.setattr(measure, "_host_clock", lambda: now[0])

    class Session:
        def measure(self, seconds):  # a point that takes `seconds`, 1.5 of them in its stages
            now[0] += seconds
            return SimpleNamespace(phases_s={"load": 0.5, "timed": 1.0})

    clock = measure.PhaseClock({})
    now[0] += 0.25  # planning the first point
    assert worker._measure_point(Session(), 2.0, clock)[1] == {"between": 0.25, "outside": 0.5}
    now[0] += 0.75  # a task unloaded, the next one's first point planned
    assert worker._measure_point(Session(), 1.5, clock)[1] == {"between": 0.75, "outside": 0.0}
    now[0] += 0.125  # the last task unloaded
    clock.phases = {}
    clock.done("between")
    assert clock.phases["between"] == 0.125


def test_the_next_worker_may_go_once_every_point_is_reported_before_this_one_exits(tmp_path):
    config = sweep_config.load_config(str(ci_sweep_config(tmp_path, models=["squeezenet-1.1"], libs=["null"])))
    task = plan.Task("squeezenet-1.1", "null", (1, 2), "nchw")
    lines = "".join(f"print(json.dumps({{'lib': 'null', 'batch': {b}, 'ok': True, 'error': None, 'measured_ms': 2.0, "
                    f"'phases_s': {{'load': 0.5, 'warmup': 1.0, 'record': 0.25}}}}), flush=True); " for b in (1, 2))
    lingers = [sys.executable, "-c", f"import json, time; {lines}time.sleep(2)"]  # a slow teardown after its points
    running = worker.Worker((task,), config, {"id": "w", "config": "ci", "shard": ""}, tmp_path, None, False, lingers)
    still_running = []
    outcome = scheduler.run_job((task,), config, {"id": "w", "config": "ci", "shard": ""}, tmp_path, None,
                                 lambda t, b, p: None, running, on_last=lambda: still_running.append(running.proc.poll()))
    assert still_running == [None] and running.proc.returncode == 0
    assert outcome.points == 2 and outcome.measured_ms == 4.0
    assert outcome.phases_s == {"load": 1.0, "warmup": 2.0, "record": 0.5}


def test_the_next_worker_goes_when_this_one_has_measured_not_when_it_has_written_its_points(tmp_path):
    config = sweep_config.load_config(str(ci_sweep_config(tmp_path, models=["squeezenet-1.1"], libs=["null"])))
    task = plan.Task("squeezenet-1.1", "null", (1, 2), "nchw")
    lines = "".join(f"print(json.dumps({{'lib': 'null', 'batch': {b}, 'ok': True, 'error': None, "
                    "'measured_ms': 2.0}), flush=True); " for b in (1, 2))
    writes_late = [sys.executable, "-c", "import json, time; print(json.dumps({'device_free': True}), flush=True); "
                   f"time.sleep(0.5); {lines}"]
    running = worker.Worker((task,), config, {"id": "f", "config": "ci", "shard": ""}, tmp_path, None, False,
                            writes_late)
    events = []
    outcome = scheduler.run_job((task,), config, {"id": "f", "config": "ci", "shard": ""}, tmp_path, None,
                                 lambda t, b, p: events.append(b), running, on_last=lambda: events.append("go"))
    assert events == ["go", 1, 2] and outcome.points == 2 and not outcome.failed


def test_a_real_worker_measures_its_tasks_in_turn_and_frees_the_device_before_it_writes_their_points(tmp_path):
    config = sweep_config.load_config(str(ci_sweep_config(tmp_path, models=["squeezenet-1.1"], libs=["null"])))
    job = [plan.Task("squeezenet-1.1", "null", (1,), "nchw"),
           plan.Task("squeezenet-1.1", "torch-cudnn-fp16", (1,), "nchw"),  # no GPU here: a failed point
           plan.Task("squeezenet-1.1", "torch-cpu", (1, 2), "nchw")]
    done = subprocess.run([sys.executable, "-m", "ck_plugins", "explore-worker", "--tasks",
                           json.dumps([asdict(task) for task in job]),
                           "--config-json", json.dumps(asdict(config)),
                           "--sweep", json.dumps({"id": "r", "config": "ci", "shard": ""}), "--repo", str(tmp_path)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    said = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and said[0] == {"device_free": True}
    assert [(m["lib"], m["batch"], m["ok"]) for m in said[1:]] == [
        ("null", 1, True), ("torch-cudnn-fp16", 1, False), ("torch-cpu", 1, True), ("torch-cpu", 2, True)]
    notes = {(lib, b): data["features"]["measurement"]["notes"] for _, lib, b, *_, data in points(tmp_path)}
    assert len(notes) == 4 and not any("measured in one process after" in n for n in notes["null", 1])
    after_null = "measured in one process after null, whose"  # the failed lib autotuned nothing: not named
    assert all(any(n.startswith(after_null) for n in notes["torch-cpu", b]) for b in (1, 2))


def test_waiting_workers_prepare_on_three_quarters_of_the_cores_and_measure_on_the_first_quarter(monkeypatch):
    pinned = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cores: pinned.append((pid, list(cores))))
    monkeypatch.setattr(worker, "_allowed_cores", lambda: [0, 1, 2, 3, 8, 9, 10, 11])
    worker._pin("prepare")
    worker._pin("measure")
    assert pinned == [(0, [2, 3, 8, 9, 10, 11]), (0, [0, 1])]
    monkeypatch.setattr(worker, "_allowed_cores", lambda: [0, 1, 2])  # too few to split: left as they are
    worker._pin("prepare")
    assert len(pinned) == 2


def test_the_journal_says_where_the_wall_time_went():
    from ck_plugins.sweep.journal import cost

    phases = {"load": 1.0, "warmup": 2.0, "timed": 4.5, "record": 0.5, "waiting": 1.5}
    assert cost(10.0, 4.0, Counter(phases)) == {"phases_s": phases, "warmup_s": 3.0, "harness_s": 3.0,
                                                "harness_share": 0.3, "waiting_s": 1.5}
    assert cost(10.0, 4.0, Counter())["harness_s"] is None  # the CK route reports no stages: no made-up share


def test_workers_keep_torch_compile_caches_in_one_persistent_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = sweep_config.load_config("ci")
    task = plan.Task("squeezenet-1.1", "null", (1,), "nchw")
    says = [sys.executable, "-c", "import os; print(os.environ['TORCHINDUCTOR_CACHE_DIR'])"]
    seen = []
    for _ in range(2):  # two workers (a sweep and its re-run): the same folder
        started = worker.Worker((task,), config, {"id": "c", "config": "ci", "shard": ""}, tmp_path, None, False, says)
        seen.append(started.proc.stdout.read().strip())
        assert started.finish() == 0
    assert seen == [str(tmp_path / "cache" / "ck-precision-bench" / "inductor")] * 2
