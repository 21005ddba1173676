"""The real CK CLI, offline, in an isolated CK_REPOS: list, run, post-process, and failure exit codes."""
import json


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


def test_ck_run_exits_non_zero_when_the_program_fails(ck, tmp_path):
    done = ck("run", "program:resnet-fp16", "--env.CK_PRECISIONS=fp8", f"--tmp_dir={tmp_path}",
              "--treat_return_code_as_exit_code=yes")
    assert done.returncode != 0
    assert "precision 'fp8' is not valid" in done.stdout + done.stderr
    assert not (tmp_path / "result.json").exists()
