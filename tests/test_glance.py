"""The report's first screen: fp16 against fp32 with its interval and the measured reason, the fastest
configuration in words, harness libs apart."""
from __future__ import annotations

import json

import pytest

from ck_plugins import analysis, libnames, readpoints

from fixtures import build as fixtures

TAG = fixtures.TAG


def _curve(repo, times: dict[str, dict[int, float]], reasons: dict | None = None):
    for lib, by_batch in times.items():
        folder = fixtures.entry(repo, f"resnet50-{lib}", [TAG, "resnet50", lib])
        for n, (batch, ms) in enumerate(by_batch.items()):
            data = fixtures.our_point_data("NVIDIA H200", batch, [[ms * f] * 4 for f in (0.99, 1.0, 1.01)], lib)
            data["choices"]["env"]["CK_MEMORY_FORMAT"] = libnames.default_memory_format(lib)
            if reasons and (lib, batch) in reasons:
                data["features"]["measurement"] = {"diagnosis": {"sentence": "x", "reasons": reasons[lib, batch]}}
            (folder / f"ckp-{len(lib):08d}{n:08d}.0001.json").write_text(json.dumps(data))
    return readpoints.load([repo])


def test_fp16_against_fp32_at_the_smallest_and_best_batch_with_what_the_times_show(tmp_path):
    times = {"torch-cudnn-fp16": {1: 3.0, 2: 3.1, 64: 20.0, 256: 60.0}, "torch-cudnn-fp32": {1: 2.8, 2: 3.0, 64: 50.0,
                                                                                              256: 200.0},
             "null": {1: 0.001, 256: 0.001}}
    headline = analysis.analyse(_curve(tmp_path, times)).headline
    model = headline["models"][0]
    small, best = model["fp16_versus_fp32"]
    assert (small["batch_size"], best["batch_size"]) == (1, 256)
    assert small["ratio"] == pytest.approx(2.8 / 3.0) and best["ratio"] == pytest.approx(200.0 / 60.0)
    assert small["ratio_ci"][0] < small["ratio"] < small["ratio_ci"][1]
    assert small["reason"].startswith("launch-bound: a batch of 2 takes 3.1 ms against 3 ms at 1")
    assert best["reason"].startswith("not launch-bound (a batch of 256 takes 60 ms against 20 ms at 64)")
    assert model["fastest_lib"] == "torch-cudnn-fp16" and model["fastest_configuration"] == "fp16, channels_last"
    assert [h["lib"] for h in headline["harness"]] == ["null", "null"]  # apart, never the fastest
    assert "null" not in model["speedup_over_baseline"]


def test_a_recorded_diagnosis_is_the_reason_in_the_consoles_words(tmp_path):
    times = {"torch-cudnn-fp16": {1: 3.0, 256: 60.0}, "torch-cudnn-fp32": {1: 2.8, 256: 200.0}}
    said = ["launch-bound, GPU busy 20% of the time (faster kernels cannot help; use a larger batch or CUDA graphs)"]
    model = analysis.analyse(_curve(tmp_path, times, {("torch-cudnn-fp16", 1): said})).headline["models"][0]
    assert model["fp16_versus_fp32"][0]["reason"] == said[0]


def test_a_lib_label_in_words():
    assert libnames.describe("cudnn-graph-fp16+graph") == "fp16, channels_last, CUDA graph"
    assert libnames.describe("torch-amp+nchw") == "autocast fp16, nchw"
    assert libnames.describe("nvidia-cudnn") == ""


def test_a_hostile_platform_name_never_becomes_a_file_name_as_it_is(tmp_path):
    from ck_plugins import report

    folder = fixtures.entry(tmp_path, "resnet50-torch-cudnn-fp16", [TAG, "resnet50", "torch-cudnn-fp16"])
    data = fixtures.our_point_data("x" * 4096, 16, [[1.0] * 4, [1.01] * 4, [0.99] * 4])
    (folder / "ckp-0000000000000001.0001.json").write_text(json.dumps(data))
    built = report.build(readpoints.load([tmp_path]), tmp_path / "report")
    names = [p.name for p in (tmp_path / "report").glob("*.png")]
    assert names and all(len(n) <= 120 for n in names), names  # file systems allow 255 bytes
    assert built.summary["models"][0]["platform"] == "x" * 4096  # the data keeps the name


def test_fp16_launch_bound_yet_faster_says_so(tmp_path):
    times = {"torch-cudnn-fp16": {1: 1.0, 2: 1.05}, "torch-cudnn-fp32": {1: 3.0, 2: 5.0}}
    [small, best] = analysis.analyse(_curve(tmp_path, times)).headline["models"][0]["fp16_versus_fp32"]
    assert small["ratio"] == pytest.approx(3.0) and small["reason"].startswith("launch-bound in fp16 (a batch of 2")
    assert "fp32's slower ones still keep the GPU busy" in best["reason"]


def test_legacy_caffe_libs_answer_fp16_against_fp32_too(tmp_path):
    for n, (lib, ms) in enumerate((("nvidia-fp16-cudnn", 40.0), ("nvidia-cudnn", 2.0))):
        folder = fixtures.entry(tmp_path, f"bvlc-alexnet-{lib}", [TAG, "time_gpu", "bvlc-alexnet", lib])
        for batch in (2, 4):
            fixtures.legacy_point(folder, f"9{n}{batch:014d}", {"CK_CAFFE_BATCH_SIZE": batch},
                                  [fixtures.legacy_run(ms * batch / 2 * f) for f in (0.99, 1.0, 1.01)])
    [small, *_] = analysis.analyse(readpoints.load([tmp_path])).headline["models"][0]["fp16_versus_fp32"]
    assert small["fp16_lib"] == "nvidia-fp16-cudnn" and small["ratio"] == pytest.approx(2.0 / 40.0)


def test_tens_of_milliseconds_a_batch_are_never_called_launch_bound(tmp_path):
    times = {"torch-cudnn-fp16": {2: 60.0, 4: 70.0}, "torch-cudnn-fp32": {2: 3.0, 4: 5.0}}
    [small, *_] = analysis.analyse(_curve(tmp_path, times)).headline["models"][0]["fp16_versus_fp32"]
    assert small["reason"].startswith("not launch-bound (a batch of 4 takes 70 ms against 60 ms at 2), yet slower")
