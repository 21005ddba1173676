"""The plain entry point: a small CPU run, and bad input answered with one line and nothing written."""
import json
import subprocess
import sys

import pytest
import torch

from ck_plugins import platform_info, precision_bench


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ck_plugins", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("args, named", [
    (["--batch-size", "0"], "'0'"), (["--batch-size", "-4"], "'-4'"), (["--batch-size", "eight"], "'eight'"),
    (["--precisions", "fp8"], "'fp8'"), (["--device", "tpu"], "'tpu'"), (["--iterations", "0"], "'0'"),
])
def test_bad_input_is_one_line_naming_the_value_and_nothing_is_written(tmp_path, args, named):
    done = run_cli("resnet-fp16", *args, "--out", "result.json", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "expected" in lines[0]
    assert not (tmp_path / "result.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without a GPU")
def test_cuda_on_a_machine_without_gpu_is_refused(tmp_path):
    done = run_cli("resnet-fp16", "--device", "cuda", "--out", "result.json", cwd=tmp_path)
    assert done.returncode == 2 and "'cuda'" in done.stderr and "no CUDA GPU" in done.stderr
    assert not (tmp_path / "result.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU modes; the GPU run is the device note")
def test_cpu_run_measures_fp32_and_bf16_and_says_what_was_not_run(tmp_path):
    # precision-bench on SqueezeNet: resnet-fp16 is its ResNet-50 shortcut (run through CK by test_ck_resnet_fp16)
    done = run_cli("precision-bench", "--model", "squeezenet-1.1", "--batch-size", "1", "--iterations", "2",
                   "--repetitions", "2", "--warmup", "1", "--out", "result.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| Precision | Layout | Execution time (ms/batch) | Throughput (img/s) | Speed-up vs fp32 |" in done.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert [(m["precision"], m["memory_format"]) for m in result["modes"]] == [
        ("fp32", "nchw"), ("fp32", "channels_last"), ("bf16", "nchw"), ("bf16", "channels_last")]
    assert {s["mode"] for s in result["skipped"]} == {"tf32", "amp", "fp16"}
    emulated = not platform_info.cpu_has_bf16()
    for mode in result["modes"]:
        brief = mode["precision"] == "bf16" and emulated  # measured briefly: 1 repetition of at most 2 iterations
        assert mode["run_success"] and len(mode["time_fw_ms_all"]) == (1 if brief else 2)
        assert len(mode["time_fw_ms_all"][0]) == 2 and ("measured briefly" in " ".join(mode["notes"])) == brief
        assert mode["images_per_second"] == pytest.approx(1e3 / mode["time_ms"])
        assert mode["diagnosis"].startswith(mode["precision"])
        fp32 = mode["precision"] == "fp32"  # bf16 keeps about 3 digits: 0.5% error measured; garbage would be ~100%
        assert mode["relative_error"] < (1e-5 if fp32 else 0.05) and (mode["top1_agreement"] == 1.0 or not fp32)
    assert ("(brief)" in done.stdout) == emulated and "|" in done.stderr  # the progress bar
    fp32 = result["modes"][0]
    assert fp32["speedup_vs_fp32"] == 1.0 and fp32["relative_error"] < 1e-5
    assert "not run (fp16 needs a CUDA GPU" in done.stdout
    assert "The same benchmark on the GPUs" not in done.stdout  # the shipped tables are ResNet-50's


def test_without_a_gpu_the_shipped_gpu_tables_are_shown(tmp_path):
    assert precision_bench.shipped_gpu_tables(tmp_path) == ""  # nothing shipped: nothing said
    modes = [{"precision": "fp32", "memory_format": "nchw", "run_success": True, "images_per_second": 1000.0,
              "speedup_vs_fp32": 1.0},
             {"precision": "fp16", "memory_format": "channels_last", "run_success": True, "images_per_second": 4500.0,
              "speedup_vs_fp32": 4.5},
             {"precision": "bf16", "memory_format": "nchw", "run_success": False}]
    result = {"platform": {"gpu": "NVIDIA H100 80GB HBM3"}, "batch_size": 256, "modes": modes}
    (tmp_path / "docs" / "results" / "nvidia-h100").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "nvidia-h100" / "resnet-fp16-bs256.json").write_text(json.dumps(result))
    (tmp_path / "docs" / "results" / "nvidia-h100" / "resnet-fp16-bs16.json").write_text(json.dumps(
        dict(result, batch_size=16, modes=[dict(modes[0], images_per_second=900.0), dict(modes[1], speedup_vs_fp32=0.8,
                                                                                         images_per_second=720.0)])))
    lines = precision_bench.shipped_gpu_tables(tmp_path).strip().splitlines()
    assert lines[0].startswith("No GPU here") and len(lines) == 3  # one line per GPU and batch, in batch order
    assert lines[1].strip() == ("NVIDIA H100 80GB HBM3, batch 16: fastest fp32 nchw 900.0 img/s (1.00x fp32); fp16 "
                                "channels_last 0.80x fp32")
    assert lines[2].strip() == "NVIDIA H100 80GB HBM3, batch 256: fastest fp16 channels_last 4500.0 img/s (4.50x fp32)"


def test_a_killed_attempt_is_recorded_as_a_failed_point(tmp_path):
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ck_plugins", "point", "--model", "alexnet", "--lib", "torch-cpu",
                           "--batch-size", "4", "--repo", str(tmp_path), "--failed", "timed out after 200 s",
                           "--out", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 3 and "FAILED: timed out after 200 s" in done.stdout
    data = json.loads(next(tmp_path.glob("experiment/alexnet-torch-cpu/ckp-*.json")).read_text())
    run = data["characteristics_list"][0]["run"]
    assert run == {**run, "run_success": False, "error": "timed out after 200 s"}
    assert data["choices"]["env"]["CK_BATCH_SIZE"] == 4


def test_a_bad_minimum_repetition_time_is_a_one_line_error_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ck_plugins", "point", "--model", "alexnet", "--lib", "null",
                           "--min-repetition-ms", "-5", "--repo", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "'-5'" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "experiment").exists()
