"""Every backend a CPU can run, plus null, through `ck run`; points validated and read back by the real CK."""
import json
import subprocess

import pytest

from ck_plugins import point

CPU_LIBS = [("bench-null", "null"), ("bench-cpu", "torch-cpu"), ("bench-cpu", "torch-cpu-bf16"),
            ("bench-cpu", "onnxruntime")]


@pytest.fixture(scope="module")
def results_repo(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


def ck_run_point(ck, program, lib, repo, tmp, *extra):
    """One small point through CK (64x64 images: emulated bf16 on a CPU takes seconds a pass at 224x224)."""
    return ck("run", f"program:{program}", f"--env.CK_LIB={lib}", "--env.CK_MODEL=squeezenet-1.1",
              "--env.CK_INPUT_SHAPE=3x64x64",
              "--env.CK_BATCH_SIZE=2", "--env.CK_ITERATIONS=3", "--env.CK_REPETITIONS=2", "--env.CK_WARMUP=1",
              f"--env.CK_RESULTS_REPO={repo}", f"--tmp_dir={tmp}", "--treat_return_code_as_exit_code=yes", *extra)


@pytest.mark.parametrize("program, lib", CPU_LIBS)
def test_cpu_backends_run_through_ck_and_write_valid_points(ck, results_repo, tmp_path, program, lib):
    done = ck_run_point(ck, program, lib, results_repo, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    timer = json.loads((tmp_path / "tmp-ck-timer.json").read_text())
    assert timer["lib"] == lib and timer["run_success"] is True and timer["time_fw_ms"] > 0
    files = list((results_repo / "experiment" / f"squeezenet-1.1-{lib}").glob("ckp-*.0001.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert point.problems(data) == []
    runs = [c["run"] for c in data["characteristics_list"]]
    assert len(runs) == 2 and all(len(r["time_fw_ms_all"]) == 3 for r in runs)
    assert data["choices"]["env"]["CK_BATCH_SIZE"] == 2 and data["choices"]["env"]["CK_CUDA_GRAPH"] is False
    if lib.startswith("torch-"):
        labels = data["features"]["layers"]["label"]
        assert labels[0] == "features.0" and "features.3.expand3x3" in labels
        assert all(len(r["per_layer_time_ms"]) == len(labels) for r in runs)
        assert data["features"]["measurement"]["accuracy"]["top1_agreement"] >= 0.5


def test_gpu_backend_on_a_cpu_machine_records_a_failed_point_and_exits_non_zero(ck, results_repo, tmp_path):
    done = ck_run_point(ck, "bench-fp16", "torch-cudnn-fp16", results_repo, tmp_path)
    assert done.returncode != 0
    files = list((results_repo / "experiment" / "squeezenet-1.1-torch-cudnn-fp16").glob("ckp-*.json"))
    data = json.loads(files[0].read_text())
    run = data["characteristics_list"][0]["run"]
    assert run["run_success"] is False and "needs a CUDA GPU" in run["error"] and point.problems(data) == []


def test_a_lib_outside_the_programs_family_is_refused_without_a_point(ck, results_repo, tmp_path):
    done = ck_run_point(ck, "bench-cublas", "torch-cpu", results_repo, tmp_path)
    assert done.returncode != 0 and "expected one of this program's libs" in done.stdout + done.stderr
    written = list((tmp_path).glob("**/result.json"))  # nothing measured, nothing recorded for this refusal
    assert written == [] and "Traceback" not in done.stdout + done.stderr
    assert "CK error: [program] lib 'torch-cpu' is not valid" in done.stdout


def test_real_ck_lists_and_loads_our_points(ck, tmp_path):
    results_repo = tmp_path / "results"  # its own: tests of this module may run in other pytest workers
    for _ in range(2):  # the second run adds subpoint 0002
        done = ck_run_point(ck, "bench-null", "null", results_repo, tmp_path)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    added = ck("add", "repo", "--import", f"--path={results_repo}", "--quiet")
    assert added.returncode == 0, added.stdout + added.stderr
    listed = ck("list_points", "experiment:squeezenet-1.1-null")
    uids = listed.stdout.split()
    assert listed.returncode == 0 and len(uids) == 1 and len(uids[0]) == 16
    both = ck("list_points", "experiment:squeezenet-1.1-null", f"--point={uids[0]}", "--skip_subpoints=no")
    assert both.stdout.split() == [f"{uids[0]}-0001", f"{uids[0]}-0002"]
    loaded = ck("load_point", "experiment:squeezenet-1.1-null", f"--point={uids[0]}", "--out=json")
    assert loaded.returncode == 0
    payload = json.loads(loaded.stdout[loaded.stdout.index("{"):])
    assert payload["dict"]["0001"]["choices"]["env"]["CK_LIB"] == "null"
    tags = ck("search", "experiment", "--tags=explore-batch-size-libs-models,null")
    assert "squeezenet-1.1-null" in tags.stdout


def test_the_adaptive_lib_runs_a_plan_file_through_ck(ck, results_repo, tmp_path):
    from ck_plugins import adaptive, models

    labels = adaptive.labels(adaptive.dataflow(models.build("squeezenet-1.1")))
    chosen = {label: adaptive.Config("bf16" if i % 2 else "fp32") for i, label in enumerate(labels)}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"schema": adaptive.PLAN_SCHEMA, "model": "squeezenet-1.1", "device": "cpu",
                                "digest": "0123456789abcdef", "plan": adaptive.plan_to_json(chosen)}))
    done = ck_run_point(ck, "bench-adaptive", "adaptive", results_repo, tmp_path, f"--env.CK_ADAPTIVE_PLAN={plan}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(next((results_repo / "experiment" / "squeezenet-1.1-adaptive").glob("ckp-*.json")).read_text())
    assert point.problems(data) == [] and data["choices"]["env"]["CK_ADAPTIVE_PLAN"] == "0123456789abcdef"
    assert data["features"]["measurement"]["accuracy"]["top1_agreement"] >= 0.5
