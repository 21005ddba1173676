"""The real CK CLI, offline, in an isolated CK_REPOS: list, run, post-process, and failure exit codes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, _ck_bin, ci_sweep_config


def test_ck_lists_our_programs(ck):
    done = ck("list", "program")
    assert done.returncode == 0 and "resnet-fp16" in done.stdout.split()


def test_ck_run_resnet_fp16_prints_table_and_merges_characteristics(ck, tmp_path):
    done = ck("run", "program:resnet-fp16", "--env.CK_BATCH_SIZE=1", "--env.CK_ITERATIONS=2",
              "--env.CK_REPETITIONS=1", "--env.CK_WARMUP=1", "--env.CK_PRECISIONS=fp32",
              f"--tmp_dir={tmp_path}", "--treat_return_code_as_exit_code=yes")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "| Precision | Layout |" in done.stdout and "| fp32 | channels_last |" in done.stdout
    timer = json.loads((tmp_path / "tmp-ck-timer.json").read_text())
    result = json.loads((tmp_path / "result.json").read_text())
    assert timer["batch_size"] == 1 and timer["run_success"] is True
    assert timer["execution_time"] == min(m["time_ms"] for m in result["modes"]) / 1e3
    assert '"best_mode"' in done.stdout  # CK printed the merged characteristics
    from ck_plugins import precision_bench

    assert ("The same benchmark on the GPUs" in done.stdout) == bool(precision_bench.shipped_gpu_tables())


def _ends_cleanly(done, code: int, message: str) -> None:
    """Our message is the last line, our exit code comes back, and neither a traceback nor CK's banner shows."""
    output = done.stdout + done.stderr
    assert done.returncode == code, output[-3000:]
    assert "Traceback" not in output and "potential PROBLEM" not in output and "KeyError" not in output
    assert done.stdout.strip().splitlines()[-1] == f"CK error: [program] {message}!"


def test_ck_run_exits_with_our_code_and_message_when_the_input_is_bad(ck, tmp_path):
    done = ck("run", "program:resnet-fp16", "--env.CK_PRECISIONS=fp8", f"--tmp_dir={tmp_path}",
              "--treat_return_code_as_exit_code=yes")
    _ends_cleanly(done, 2, "precision 'fp8' is not valid; expected one of fp32, tf32, amp, fp16, bf16")
    assert not (tmp_path / "result.json").exists()
    done = ck("run", "program:resnet-fp16", "--env.CK_BATCH_SIZE=0", f"--tmp_dir={tmp_path}",
              "--treat_return_code_as_exit_code=yes")
    _ends_cleanly(done, 2, "batch size '0' is not valid; expected a positive integer")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of cuda on a machine without a GPU")
def test_ck_run_asking_for_cuda_on_a_cpu_ends_with_our_message(ck, tmp_path):
    done = ck("run", "program:resnet-fp16", "--env.CK_DEVICE=cuda", f"--tmp_dir={tmp_path}",
              "--treat_return_code_as_exit_code=yes")
    _ends_cleanly(done, 2, "device 'cuda' is not valid; expected 'cpu' or 'auto': this machine has no CUDA GPU "
                           "(torch.cuda.is_available() is False)")


def test_make_run_with_batch_0_ends_with_our_line_and_code(ck_env):
    done = subprocess.run(["make", "-s", "run", "BATCH=0"], cwd=REPO, env=ck_env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output and "potential PROBLEM" not in output, output[-3000:]
    said = "batch size '0' is not valid; expected a positive integer"
    assert output.count(said) == 1 and "Prepared script" not in output  # once, and CK's chatter in its log


def _interrupt(command: list[str], env: dict, ready: str, timeout: float = 240.0) -> subprocess.CompletedProcess:
    """Start `command` in its own process group, wait until its output shows `ready`, then press Ctrl-C (SIGINT to
    the group, as a terminal does). Whatever happens, nothing of the group is left running after this returns."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    seen, deadline = b"", time.monotonic() + timeout
    os.set_blocking(process.stdout.fileno(), False)
    try:
        while ready.encode() not in seen:
            assert time.monotonic() < deadline and process.poll() is None, seen.decode(errors="replace")[-2000:]
            time.sleep(0.2)  # polled: a lower bound only
            seen += process.stdout.read() or b""
        os.set_blocking(process.stdout.fileno(), True)
        os.killpg(process.pid, signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired as late:
            raise AssertionError("still running 120 s after Ctrl-C; its output:\n"
                                 + (seen + (late.output or b"")).decode(errors="replace")[-3000:]) from None
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the program CK started may outlive CK: never left running
        except ProcessLookupError:
            pass
        process.wait()
    return subprocess.CompletedProcess(command, process.returncode, (seen + rest).decode(errors="replace"), "")


def test_ctrl_c_ends_with_a_message_and_code_130(ck_env, tmp_path):
    # precision-bench (resnet-fp16 is its ResNet-50 shortcut) on SqueezeNet: the same code, reached in seconds
    done = _interrupt([sys.executable, "-m", "ck_plugins", "precision-bench", "--model", "squeezenet-1.1", "--device",
                       "cpu", "--batch-size", "1", "--iterations", "100000", "--precisions", "fp32"], ck_env, "fp32 nchw")
    assert done.returncode == 130 and "Traceback" not in done.stdout, done.stdout[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "interrupted; run it again to start over"  # nothing resumes
    through_ck = _interrupt([_ck_bin(), "run", "program:precision-bench", "--env.CK_MODEL=squeezenet-1.1",
                             "--env.CK_DEVICE=cpu", "--env.CK_BATCH_SIZE=1",
                             "--env.CK_ITERATIONS=100000", "--env.CK_PRECISIONS=fp32", f"--tmp_dir={tmp_path}",
                             "--treat_return_code_as_exit_code=yes"], ck_env, "fp32 nchw")
    assert through_ck.returncode == 130 and "Traceback" not in through_ck.stdout, through_ck.stdout[-2000:]
    assert through_ck.stdout.strip().splitlines()[-1] == "CK error: [program] interrupted; run it again to start over!"


def test_ctrl_c_stops_a_sweep_cleanly_and_it_resumes(ck_env, tmp_path):
    config = ci_sweep_config(tmp_path, models=["squeezenet-1.1"])  # 2 tasks, 4 points
    command = [sys.executable, "-m", "ck_plugins", "explore", "--config", str(config), "--repo", str(tmp_path)]
    done = _interrupt(command, ck_env, "1/4")
    assert done.returncode == 130 and "Traceback" not in done.stdout, done.stdout[-2000:]
    assert done.stdout.strip().splitlines()[-1].endswith("interrupted; run it again to resume")
    resumed = subprocess.run(command, cwd=REPO, env=ck_env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "0 failed" in resumed.stdout, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert len(list(tmp_path.glob("experiment/*/ckp-*.json"))) == 4  # every point once, none lost, none twice


def test_ctrl_c_stops_the_adaptive_run_cleanly(ck_env, tmp_path):
    done = _interrupt([sys.executable, "-m", "ck_plugins", "adaptive", "--device", "cpu", "--models", "squeezenet-1.1",
                       "--batch-sizes", "1", "--repo", str(tmp_path)], ck_env, "candidates: torch-cpu")
    # the first candidate's start is always drawn (its stages may not be: tqdm draws at most every 0.5 s)
    assert done.returncode == 130 and "Traceback" not in done.stdout, done.stdout[-2000:]
    assert done.stdout.strip().splitlines()[-1].endswith("interrupted; run it again to start over")


def _quiet(ck_env, tmp_path, *env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ck_plugins.ckconsole", f"--log={tmp_path / 'ck.log'}", "run",
                           "program:resnet-fp16", *env, f"--tmp_dir={tmp_path}", "--treat_return_code_as_exit_code=yes"],
                          env=ck_env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_make_runs_console_shows_the_programs_lines_and_keeps_cks_in_a_log(ck_env, tmp_path):
    done = _quiet(ck_env, tmp_path, "--env.CK_BATCH_SIZE=1", "--env.CK_ITERATIONS=2", "--env.CK_REPETITIONS=1",
                  "--env.CK_WARMUP=1", "--env.CK_PRECISIONS=fp32")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines() + done.stderr.replace("\r", "\n").splitlines()[-1:]  # the progress line once
    assert len(lines) <= 40, done.stdout
    assert "| fp32 | channels_last |" in done.stdout and "Why:" in done.stdout
    assert "Execution time:" not in done.stdout and "Prepared script" not in done.stdout and "best_mode" not in done.stdout
    log = (tmp_path / "ck.log").read_text()
    assert "Prepared script" in log and '"best_mode"' in log and f"(CK's own output: {tmp_path / 'ck.log'})" in done.stdout


def test_a_bad_value_is_said_once_on_the_quiet_console(ck_env, tmp_path):
    done = _quiet(ck_env, tmp_path, "--env.CK_BATCH_SIZE=0")
    said = "batch size '0' is not valid; expected a positive integer"
    assert done.returncode == 2 and (done.stdout + done.stderr).count(said) == 1, done.stdout + done.stderr
