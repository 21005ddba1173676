"""What a newcomer reads: --help with defaults and choices, and errors that name the field."""
import json
import re
import subprocess
import sys

import pytest
import torch


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "ck_plugins", *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_commands_but_not_the_internal_worker():
    done = run("--help")
    assert done.returncode == 0 and "analyse" in done.stdout and "explore" in done.stdout
    assert "explore-worker" not in done.stdout and "SUPPRESS" not in done.stdout


def test_help_says_each_default_once_describes_each_command_and_gives_the_version():
    for command in ("point", "precision-bench", "explore", "adaptive", "merge", "migrate", "analyse", "docs", "serve",
                    "submit"):
        text = run(command, "--help").stdout
        flat = " ".join(text.split())
        assert "(default: None)" not in flat and "(default: )" not in flat, command
        assert not re.search(r"\(default: [^)]*\) \(default:", flat), f"{command}: a default said twice"
        assert text.split("\n\n")[1].strip() and not text.split("\n\n")[1].startswith("positional"), command
    assert "source  source" not in run("merge", "--help").stdout
    version = run("--version")
    assert version.returncode == 0 and re.fullmatch(r"ck-precision-bench \S+ \(commit \S+.*\)\n", version.stdout)


def test_help_shows_defaults_and_valid_choices():
    text = run("point", "--help").stdout
    assert "(default: 8)" in text and "squeezenet-1.1" in text and "torch-cudnn-fp16" in text
    assert "(default: torch-cpu)" in text
    analyse = " ".join(run("analyse", "--help").stdout.split())  # as read, whatever the wrapping
    assert "{median,min,mean}" in analyse and "(default: median)" in analyse


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the explanation given on a machine without a GPU")
def test_a_sweep_with_no_task_says_why():
    done = run("explore", "--device", "cuda", "--dry-run")
    assert done.returncode == 0 and "0 tasks, 0 points" in done.stdout
    assert "why none:" in done.stdout and "needs a CUDA GPU" in done.stdout


@pytest.mark.parametrize("batch_sizes, field", [([0], "batch_sizes/0: 0 is less than the minimum of 1"),
                                                ({"start": 0, "stop": 4}, "batch_sizes/start: 0 is less than")])
def test_a_bad_config_names_the_field(tmp_path, batch_sizes, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"schema_version": 1, "models": "all", "libs": "available", "batch_sizes": batch_sizes}))
    done = run("explore", "--config", str(path), "--dry-run")
    assert done.returncode == 2 and field in done.stderr and len(done.stderr.strip().splitlines()) == 1
