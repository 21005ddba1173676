"""The submission client sends what is meant to be sent: harness checks, brief and failed points are skipped and
counted, never blocking the rest; a local path in a model name is never published."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

from ck_plugins.submit import client

from fixtures import build as fixtures


def _write(repo, name: str, n: int, item: dict) -> None:
    folder = fixtures.entry(repo, name, [fixtures.TAG, *name.split("-", 1)])
    (folder / f"ckp-{n:016x}.0001.json").write_text(json.dumps(item))


def _repo(tmp_path):
    good = fixtures.valid_point_data("a" * 40)
    _write(tmp_path, "alexnet-torch-cudnn-fp16", 1, good)
    _write(tmp_path, "alexnet-torch-cudnn-fp16", 2, fixtures.valid_point_data("b" * 40, batch=8))
    null = copy.deepcopy(good)
    null["choices"]["env"]["CK_LIB"] = null["choices"]["settings"]["lib"] = "null"
    _write(tmp_path, "alexnet-null", 3, null)
    brief = copy.deepcopy(good)
    brief["characteristics_list"] = brief["characteristics_list"][:1]
    _write(tmp_path, "alexnet-torch-cpu-bf16", 4, brief)
    failed = copy.deepcopy(good)
    failed["characteristics_list"] = [{"run": {"run_success": False, "error": "out of memory"}}]
    _write(tmp_path, "alexnet-torch-cudnn-bf16", 5, failed)
    return tmp_path


def test_what_is_not_meant_to_be_sent_is_skipped_counted_and_never_blocks_the_rest(tmp_path):
    points, problems, skipped = client.collect(_repo(tmp_path))
    assert problems == [] and len(points) == 2
    assert sorted(kind for kind, _ in skipped) == ["brief points", "failed points", "harness checks"]
    assert client.skipped_summary(skipped) == "skipped 3: 1 harness check, 1 brief point, 1 failed point"
    done = subprocess.run([sys.executable, "-m", "ck_plugins", "submit", "--url", "http://127.0.0.1:9", "--repo",
                           str(tmp_path), "--check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "2 valid points" in done.stdout, done.stderr
    assert "skipped 3: 1 harness check, 1 brief point, 1 failed point" in done.stderr


def test_entries_choose_what_is_sent(tmp_path):
    points, _, skipped = client.collect(_repo(tmp_path), ["alexnet-null"])
    assert points == [] and [kind for kind, _ in skipped] == ["harness checks"]


def test_a_local_onnx_path_is_published_as_the_files_name_only(tmp_path):
    item = fixtures.valid_point_data("c" * 40)
    item["choices"]["env"]["CK_MODEL"] = "onnx:/tmp/pytest-7/mine/tiny.onnx"
    sent = client.published(item)
    assert sent["choices"]["env"]["CK_MODEL"] == "onnx:tiny.onnx"
    assert item["choices"]["env"]["CK_MODEL"] == "onnx:/tmp/pytest-7/mine/tiny.onnx"  # the local point keeps it
    assert "/tmp/" not in json.dumps(sent)
    assert client.published(fixtures.valid_point_data("d" * 40)) == fixtures.valid_point_data("d" * 40)


def test_a_point_file_that_is_not_an_object_is_a_problem_naming_its_path(tmp_path):
    folder = fixtures.entry(tmp_path, "alexnet-torch-cudnn-fp16", [fixtures.TAG, "alexnet", "torch-cudnn-fp16"])
    (folder / "ckp-0000000000000001.0001.json").write_text("[1, 2]")
    points, problems, skipped = client.collect(tmp_path)
    assert points == [] and skipped == [] and len(problems) == 1 and "ckp-0000000000000001.0001.json" in problems[0]
