"""Every ratio with its 95% interval, and the seed notebook's ideal-solution definition by name.

The fixtures are built here with numbers chosen so that the expected figures can be computed by hand or by an
independent port of the notebook's own code."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ck_plugins import analysis, readpoints, report

from fixtures import build as fixtures

TAG = fixtures.TAG


def _two_libs(repo, factor: float, noise: tuple[float, ...], base: float = 4.0):
    """torch-cudnn-fp32 (the baseline) `factor` times slower than torch-cudnn-fp16, both with repetitions spread by
    `noise`."""
    for lib, scale in (("torch-cudnn-fp32", factor), ("torch-cudnn-fp16", 1.0)):
        folder = fixtures.entry(repo, f"resnet50-{lib}", [TAG, "resnet50", lib])
        samples = [[base * scale * f] * 5 for f in noise]
        data = fixtures.our_point_data("NVIDIA H200", 16, samples, lib)
        data["choices"]["env"]["CK_MEMORY_FORMAT"] = "nchw" if lib.endswith("fp32") else "channels_last"
        (folder / f"ckp-{len(lib):016d}.0001.json").write_text(json.dumps(data))
    return readpoints.load([repo])


def kalibera_jones(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """The interval of mean(y)/mean(x) as Kalibera & Jones write it (independent samples; t at Welch's df)."""
    ny, nx = len(y), len(x)
    vy, vx = y.var(ddof=1) / ny, x.var(ddof=1) / nx
    df = (vy + vx) ** 2 / (vy ** 2 / (ny - 1) + vx ** 2 / (nx - 1))
    h = scipy_stats.t.ppf(0.975, df) ** 2
    ym, xm = y.mean(), x.mean()
    root = np.sqrt((ym * xm) ** 2 - (ym ** 2 - h * vy) * (xm ** 2 - h * vx))
    return (ym * xm - root) / (xm ** 2 - h * vx), (ym * xm + root) / (xm ** 2 - h * vx)


def test_a_speed_up_interval_is_kalibera_and_jones_computed_independently(tmp_path):
    noise = (0.97, 1.0, 1.05)
    result = analysis.analyse(_two_libs(tmp_path, 1.2, noise), baseline="torch-cudnn-fp32")
    model = result.headline["models"][0]
    low, high = model["speedup_over_baseline_ci"]["torch-cudnn-fp16"]
    expected = kalibera_jones(np.array(noise) * 4.0 * 1.2, np.array(noise) * 4.0)
    assert model["speedup_over_baseline"]["torch-cudnn-fp16"] == pytest.approx(1.2)
    assert (low, high) == pytest.approx(expected, rel=1e-9)
    assert low < 1.2 < high


@pytest.mark.parametrize("noise, verdict", [((0.99, 1.0, 1.01), "significant"),
                                            ((0.9, 1.0, 1.1), "no significant difference")])
def test_a_three_percent_difference_is_significant_only_under_little_noise(tmp_path, noise, verdict):
    summary = report.summarise(_two_libs(tmp_path, 1.03, noise), baseline="torch-cudnn-fp32")[1]
    model = summary["models"][0]
    ci = model["speedup_over_baseline_ci"]["torch-cudnn-fp16"]
    assert model["speedup_over_baseline"]["torch-cudnn-fp16"] == pytest.approx(1.03)
    assert str(analysis.statistics.significance(*ci)) == verdict
    assert ("no significant difference" in analysis.ratio_text(1.03, ci)) == (verdict != "significant")


def _ratio_keys(node, path=""):
    """Every (path, key, dict) of summary.json whose key names a ratio."""
    if isinstance(node, dict):
        for key, value in node.items():
            if {"ratio", "speedup", "over"} & set(key.split("_")) and not key.endswith("_ci"):
                yield path, key, node
            yield from _ratio_keys(value, f"{path}/{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from _ratio_keys(value, f"{path}/{n}")


def test_every_ratio_in_summary_json_has_its_interval_beside_it(tmp_path):
    repos = fixtures.build(tmp_path / "fixtures")
    built = report.build(readpoints.load([repos["sweep"]]), tmp_path / "report")
    summary = json.loads(built.summary_path.read_text())
    found = list(_ratio_keys(summary))
    assert {key for _, key, _ in found} >= {"speedup_over_baseline", "ideal_adaptive_ratio_to_best_single_lib", "ratio"}
    for path, key, parent in found:
        assert f"{key}_ci" in parent, f"{path}/{key} has no {key}_ci"
        ratio, ci = parent[key], parent[f"{key}_ci"]
        if isinstance(ratio, dict):  # a dict of ratios has a dict of intervals
            assert set(ci) == set(ratio), path
            pairs = [(ratio[k], ci[k]) for k in ratio]
        else:
            pairs = [(ratio, ci)]
        for value, interval in pairs:
            if value is not None and interval is not None:
                assert interval[0] <= value <= interval[1], f"{path}/{key}: {value} outside {interval}"


def test_one_repetition_gives_no_interval_and_says_so(tmp_path):
    result = analysis.analyse(_two_libs(tmp_path, 1.5, (1.0,)), baseline="torch-cudnn-fp32")
    model = result.headline["models"][0]
    assert model["speedup_over_baseline_ci"]["torch-cudnn-fp16"] is None
    assert model["images_per_second_ci"] is None
    assert "no interval" in analysis.ratio_text(1.5, None)


# ------------------------------------------------------------------ the ideal solution: noisy, and two definitions
# Per-layer ms per batch of 2 of a TX1-like layout: cuDNN and cuBLAS report an input layer, libDNN does not (its
# index prefixes shift by one), TensorRT fuses layers. At batch 4 every layer takes 1.6x its batch-2 time (0.8x per
# image). Repetitions are 1.00x, 1.02x and 1.04x the listed times; every timed total is the layers' sum / 0.95.
TX1_LAYERS = {
    "nvidia-cudnn": {"data": 0.02, "conv1": 1.0, "relu1": 0.2, "conv2": 2.0, "fc8": 0.8},
    "nvidia-cuda": {"data": 0.02, "conv1": 1.4, "relu1": 0.1, "conv2": 1.6, "fc8": 0.6},
    "libdnn-cuda": {"conv1": 0.9, "relu1": 0.3, "conv2": 2.4, "fc8": 1.0},
    "tensorrt-1.0.0": {"conv1 + relu1": 0.3, "conv2": 0.5, "fc8": 0.2},
}
REPETITIONS = (1.0, 1.02, 1.04)
# By hand, layer statistic min (the repetition of factor 1.00), batch 4 (0.4x the batch-2 time per image):
# each layer's least lib: data 0.008 (cuDNN), conv1 0.36 (libDNN), relu1 0.04, conv2 0.64, fc8 0.24 (cuBLAS).
# timed-total: 1.288 ms over cuBLAS's timed mean 3.72 * 0.4 / 0.95 * 1.02 ms per image (TensorRT, fused, is left out)
NOTEBOOK_RATIO = 1.288 / (3.72 * 0.4 / 0.95 * 1.02)
# same-layers: the 4 layers every lib has, 1.28 ms, over cuBLAS's per-layer sum over them, (1.4+0.1+1.6+0.6) * 0.4
SAME_LAYERS_RATIO = 1.28 / 1.48


def _tx1(repo, spread: tuple[float, ...] = REPETITIONS):
    for n, (lib, layers) in enumerate(TX1_LAYERS.items()):
        folder = fixtures.entry(repo, f"bvlc-alexnet-{lib}", [TAG, "time_gpu", "bvlc-alexnet", lib])
        env = {"CK_TENSORRT_ENABLE_FP16": 0} if lib.startswith("tensorrt") else {}
        for batch, scale in ((2, 1.0), (4, 1.6)):
            runs = [fixtures.legacy_run(sum(layers.values()) * scale * f / 0.95,
                                        {k: v * scale * f for k, v in layers.items()}) for f in spread]
            fixtures.legacy_point(folder, f"7{n}{batch:014d}", {"CK_CAFFE_BATCH_SIZE": batch, **env}, runs)
    return readpoints.load([repo])


def notebook_ideal_ratio(loaded: readpoints.Loaded, libs: list[str]) -> float:
    """The seed notebook's computation (get_ideal_adaptive_solution over df_model_lib_mean's least lib), ported to
    current pandas; labels as our reader names them (index prefixes stripped)."""
    layers = loaded.layers[(loaded.layers["direction"] == "forward") & loaded.layers["lib"].isin(libs)]
    layers = layers.astype({"label": str, "lib": str})
    cum = layers.groupby(["model", "label", "lib", "batch_size", "repetition"])["time_ms"].sum()
    per_batch = cum.groupby(level=["model", "label", "lib", "batch_size"]).min()
    per_image = (per_batch / per_batch.index.get_level_values("batch_size")).groupby(
        level=["model", "label", "lib"]).min()
    ideal = per_image.groupby(level=["model", "label"]).min().groupby(level="model").sum()
    runs = loaded.runs[loaded.runs.index.get_level_values("lib").isin(libs)]["time_ms"]
    mean_per_image = (runs / runs.index.get_level_values("batch_size")).groupby(
        level=["model", "lib", "batch_size"]).mean()
    model_lib_mean = mean_per_image.groupby(level=["model", "lib"]).min()
    return float(ideal.iloc[0] / model_lib_mean.min())


def test_the_notebook_definition_reproduces_the_notebooks_computation(tmp_path):
    loaded = _tx1(tmp_path)
    ideal = analysis.analyse(loaded, layer_statistic="min", ideal_versus="timed-total").ideal
    row = ideal.summary.iloc[0]
    assert row["best_single_lib"] == "nvidia-cuda"
    assert set(ideal.excluded["lib"]) == {"tensorrt-fp32"}  # fused: left out, as the notebook's all_libs drops it
    assert row["ratio_to_best_single_lib"] == pytest.approx(NOTEBOOK_RATIO, rel=1e-3)
    ported = notebook_ideal_ratio(loaded, ["nvidia-cudnn", "nvidia-cuda", "libdnn-cuda"])
    assert row["ratio_to_best_single_lib"] == pytest.approx(ported, rel=1e-3)
    assert row["ratio_to_best_single_lib_ci_low"] <= row["ratio_to_best_single_lib"] <= row[
        "ratio_to_best_single_lib_ci_high"]


def test_the_same_layers_definition_compares_like_with_like(tmp_path):
    ideal = analysis.analyse(_tx1(tmp_path), layer_statistic="min").ideal
    row = ideal.summary.iloc[0]
    assert row["versus"] == "same-layers" and row["layers_compared"] == 4 and row["layers_not_compared"] == 1
    assert row["ratio_to_best_single_lib"] == pytest.approx(SAME_LAYERS_RATIO, rel=1e-3)


def test_a_noisy_ideal_solution_is_annotated_with_its_interval_not_withheld(tmp_path):
    headline = analysis.analyse(_tx1(tmp_path, spread=(0.85, 1.0, 1.15))).headline["models"][0]
    assert headline["ideal_adaptive_ratio_to_best_single_lib"] is not None
    low, high = headline["ideal_adaptive_ratio_to_best_single_lib_ci"]
    assert low < headline["ideal_adaptive_ratio_to_best_single_lib"] < high
    assert "noisy" in headline["ideal_adaptive"] and "95% CI" in headline["ideal_adaptive"]


def test_identical_repetitions_give_an_interval_of_the_ratio_itself(tmp_path):
    row = analysis.analyse(_tx1(tmp_path, spread=(1.0, 1.0, 1.0))).ideal.summary.iloc[0]
    assert row["ratio_to_best_single_lib_ci_low"] == pytest.approx(row["ratio_to_best_single_lib"])
    assert row["ratio_to_best_single_lib_ci_high"] == pytest.approx(row["ratio_to_best_single_lib"])


def test_analyse_refuses_an_unknown_definition_in_one_line(tmp_path):
    _tx1(tmp_path)
    done = subprocess.run([sys.executable, "-m", "ck_plugins", "analyse", "--repo", str(tmp_path), "--ideal-versus",
                           "notebook", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "same-layers" in done.stderr and "timed-total" in done.stderr
    assert not (tmp_path / "out").exists()
