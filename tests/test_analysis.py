"""The analysis on the real GTX 1080 CK-Caffe data, checked against figures computed independently here."""
import json
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from ck_plugins import analysis, readpoints, report

LEGACY = Path(__file__).resolve().parents[2] / "shared" / "legacy-ck-caffe" / "ck-caffe-nvidia-gtx1080"
needs_legacy = pytest.mark.skipif(not LEGACY.is_dir(), reason=f"needs the legacy CK-Caffe data at {LEGACY} "
                                  "(shared/ beside the checkout, as on the developers' machines and CI)")
MODEL = {"bvlc-alexnet": "alexnet", "deepscale-squeezenet-1.1": "squeezenet-1.1"}


def independent_figures():
    """Plain-Python reading of the legacy points: per (model, lib, batch) the repetitions' times and layers."""
    times, layers = defaultdict(list), defaultdict(list)
    for entry in (e for e in LEGACY.glob("experiment/*") if not e.name.startswith(".")):
        tags = json.loads((entry / ".cm" / "meta.json").read_text())["tags"]
        model = next(MODEL[t] for t in tags if t in MODEL)
        lib = tags[3]
        for path in entry.glob("ckp-*.0001.json"):
            data = json.loads(path.read_text())
            batch = data["choices"]["env"]["CK_CAFFE_BATCH_SIZE"]
            for c in data["characteristics_list"]:
                times[model, lib, batch].append(c["run"]["time_fw_ms"])
                for layer in c["run"]["per_layer_info"]:
                    if layer["direction"] == "forward":
                        layers[model, lib, batch, layer["label"]].append(layer["time_ms"])
    return times, layers


@pytest.fixture(scope="module")
def legacy_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    loaded = readpoints.load([LEGACY])
    return report.build(loaded, out, title="CK-Caffe on GTX 1080"), loaded


def _platform_figures(built, model):
    return next(m for m in built.summary["models"] if m["model"] == model)


@needs_legacy
def test_best_time_per_image_and_batch_match_an_independent_computation(legacy_report):
    """A point's time is the median of its repetitions (the legacy repetitions keep one time each)."""
    built, _ = legacy_report
    times, _ = independent_figures()
    for model in ("alexnet", "squeezenet-1.1"):
        per_lib = defaultdict(dict)
        for (m, lib, batch), values in times.items():
            if m == model:
                per_lib[lib][batch] = statistics.median(values) / batch
        fastest = min(per_lib, key=lambda lib: min(per_lib[lib].values()))
        figures = _platform_figures(built, model)
        assert figures["platform"] == "NVIDIA Corporation Device 1b80 (rev a1)"
        assert figures["fastest_lib"] == fastest == "nvidia-cudnn"
        assert figures["time_per_image_ms"] == pytest.approx(min(per_lib[fastest].values()), rel=1e-9)
        assert figures["best_batch_size"] == min(per_lib[fastest], key=per_lib[fastest].get)
        cpu_best = min(per_lib["cpu"].values())
        assert figures["speedup_over_baseline"]["nvidia-cudnn"] == pytest.approx(cpu_best / figures["time_per_image_ms"])


@needs_legacy
def test_ideal_adaptive_solution_matches_an_independent_computation(legacy_report):
    """Per layer (by name): the median over repetitions, per image, at the lib's best batch for that layer; the
    least over libs, summed; over the best single lib's sum of the same layers."""
    built, _ = legacy_report
    _, layers = independent_figures()
    for model in ("alexnet", "squeezenet-1.1"):
        per_lib_layer = defaultdict(lambda: float("inf"))
        for (m, lib, batch, label), values in layers.items():
            if m == model:
                key = (lib, label.split(": ", 1)[1])
                per_lib_layer[key] = min(per_lib_layer[key], statistics.median(values) / batch)
        labels = {label for _, label in per_lib_layer}
        libs = {lib for lib, _ in per_lib_layer}
        ideal = sum(min(per_lib_layer[lib, label] for lib in libs) for label in labels)
        best_single = min(sum(per_lib_layer[lib, label] for label in labels) for lib in libs)
        figures = _platform_figures(built, model)
        assert figures["ideal_adaptive_ms"] == pytest.approx(ideal, rel=1e-9)
        assert figures["ideal_adaptive_ratio_to_best_single_lib"] == pytest.approx(ideal / best_single, rel=1e-9)
        assert ideal <= best_single


@needs_legacy
def test_fp16_on_the_gtx_1080_is_far_slower_than_fp32_as_the_data_says(legacy_report):
    _, loaded = legacy_report
    best = analysis.best_time_per_image(analysis.time_stats(loaded.runs))["time_per_image_ms"].droplevel("platform")
    for model in ("alexnet", "squeezenet-1.1"):
        assert best[model, "nvidia-fp16-cudnn"] / best[model, "nvidia-cudnn"] > 10


@needs_legacy
def test_broken_input_is_named_skipped_and_listed_while_the_rest_is_analysed(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(LEGACY / "experiment" / "bvlc-alexnet-cpu", repo / "experiment" / "bvlc-alexnet-cpu")
    shutil.copytree(LEGACY / "experiment" / "bvlc-alexnet-nvidia-cudnn", repo / "experiment" / "bvlc-alexnet-nvidia-cudnn")
    points = sorted((repo / "experiment" / "bvlc-alexnet-nvidia-cudnn").glob("ckp-*.json"))
    points[0].write_text("{not json")
    data = json.loads(points[1].read_text())
    del data["choices"]
    points[1].write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="skipped"):
        loaded = readpoints.load([repo, tmp_path / "missing"])
    assert len(loaded.skipped) == 3
    assert any(str(points[0]) in s and "broken JSON" in s for s in loaded.skipped)
    assert any(str(points[1]) in s and "missing or malformed field" in s for s in loaded.skipped)
    assert any("missing: no such repository folder" in s for s in loaded.skipped)
    assert len(loaded.runs.xs("nvidia-cudnn", level="lib")) == 6 * 3
    built = report.build(loaded, tmp_path / "out")
    assert str(points[0]) in built.html_path.read_text() and len(built.summary["skipped"]) == 3


def test_anchors_and_good_enough_batches_on_a_fixture(tmp_path):
    """An H200 point of fp16 channels_last ResNet-50 at batch 256 sits next to the anchor of that configuration."""
    from fixtures import build as fixtures

    folder = fixtures.entry(tmp_path, "resnet50-torch-cudnn-fp16", [readpoints.TAG])
    fixtures.our_point(folder, "9000000000000001", "NVIDIA H200", 256, [[16.0] * 4] * 3)
    fixtures.our_point(folder, "9000000000000002", "NVIDIA H200", 128, [[8.2] * 4] * 3)
    stats = analysis.time_stats(readpoints.load([tmp_path]).runs)
    near = analysis.nearest_anchors(stats).loc[("NVIDIA H200", "resnet50", "torch-cudnn-fp16", 256)]
    assert near["anchor_batch_size"] == 256 and near["variant"] == "fp16-cl-bench"
    assert near["ratio"] == pytest.approx(16000.0 / near["anchor_images_per_second"])
    good = analysis.good_enough_batch(stats).loc[("NVIDIA H200", "resnet50", "torch-cudnn-fp16")]
    assert good["good_enough_batch_size"] == 128  # 8.2/128 is within 5% of 16/256


def test_the_same_point_in_two_repositories_is_repetitions_of_one_configuration(tmp_path):
    from fixtures import build as fixtures

    for name, samples in (("a", [[1.0] * 4] * 3), ("b", [[1.3] * 4] * 3)):
        folder = fixtures.entry(tmp_path / name, "resnet50-torch-cudnn-fp16", [readpoints.TAG])
        fixtures.our_point(folder, "9000000000000003", "NVIDIA H200", 16, samples)
    both = readpoints.load([tmp_path / "a", tmp_path / "b"]).runs
    assert both.index.is_unique and len(both) == 6
    stats = analysis.time_stats(both)
    assert stats["repetitions"].tolist() == [6] and stats["time_ms"].tolist() == [pytest.approx(1.15)]


def test_an_adaptive_point_without_predictions_is_reported_not_a_crash(tmp_path):
    """A plan written by hand (no predictions, no best single lib) still reads, reports and prints."""
    import json
    import subprocess
    import sys

    from ck_plugins import ckrepo

    from fixtures import build as fixtures

    entry = ckrepo.ensure_experiment_entry(tmp_path, "alexnet", "adaptive")
    base = fixtures.our_point_data("NVIDIA H200", 16, [[0.4] * 4] * 3, "adaptive", "alexnet")
    base["choices"]["env"]["CK_ADAPTIVE_PLAN"] = "0123456789abcdef"
    base["choices"]["settings"]["plan"] = {"digest": "0123456789abcdef"}
    ckrepo.write_point(entry, base)
    other = ckrepo.ensure_experiment_entry(tmp_path, "alexnet", "torch-cudnn-fp16")
    for batch in (8, 16):
        ckrepo.write_point(other, fixtures.our_point_data("NVIDIA H200", batch, [[0.3] * 4] * 3, model="alexnet"))
    done = subprocess.run([sys.executable, "-m", "ck_plugins", "analyse", "--repo", str(tmp_path), "--out",
                           str(tmp_path / "report")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "adaptive built and measured" in done.stdout and "n/a None (planned n/a ms)" in done.stdout
