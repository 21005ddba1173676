"""The analysis on the real GTX 1080 CK-Caffe data, checked against figures computed independently here."""
import json
import shutil
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


@needs_legacy
def test_best_time_per_image_and_batch_match_an_independent_computation(legacy_report):
    built, _ = legacy_report
    times, _ = independent_figures()
    for model in ("alexnet", "squeezenet-1.1"):
        per_lib = defaultdict(dict)
        for (m, lib, batch), values in times.items():
            if m == model:
                per_lib[lib][batch] = sum(values) / len(values) / batch
        fastest = min(per_lib, key=lambda lib: min(per_lib[lib].values()))
        figures = built.summary["models"][model]
        assert figures["fastest_lib"] == fastest == "nvidia-cudnn"
        assert figures["time_per_image_ms"] == pytest.approx(min(per_lib[fastest].values()), rel=1e-9)
        assert figures["best_batch_size"] == min(per_lib[fastest], key=per_lib[fastest].get)
        cpu_best = min(per_lib["cpu"].values())
        assert figures["speedup_over_baseline"]["nvidia-cudnn"] == pytest.approx(cpu_best / figures["time_per_image_ms"])


@needs_legacy
def test_ideal_adaptive_solution_matches_an_independent_computation(legacy_report):
    built, _ = legacy_report
    _, layers = independent_figures()
    times, _ = independent_figures()
    for model in ("alexnet", "squeezenet-1.1"):
        best_per_layer = defaultdict(lambda: float("inf"))
        for (m, lib, batch, label), values in layers.items():
            if m == model:
                best_per_layer[label] = min(best_per_layer[label], sum(values) / len(values) / batch)
        ideal = sum(best_per_layer.values())
        best_single = min(sum(v) / len(v) / b for (m, _, b), v in times.items() if m == model)
        figures = built.summary["models"][model]
        assert figures["ideal_adaptive_ms"] == pytest.approx(ideal, rel=1e-9)
        assert figures["ideal_adaptive_ratio_to_best_single_lib"] == pytest.approx(ideal / best_single, rel=1e-9)


@needs_legacy
def test_fp16_on_the_gtx_1080_is_far_slower_than_fp32_as_the_data_says(legacy_report):
    _, loaded = legacy_report
    best = analysis.best_time_per_image(analysis.time_stats(loaded.runs))["time_per_image_ms"]
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


def test_our_points_tables_and_variants(tmp_path):
    repo = Path(__file__).resolve().parent.parent
    loaded = readpoints.load([repo])
    stats = analysis.time_stats(loaded.runs)
    libs = set(stats.index.get_level_values("lib"))
    assert {"torch-cudnn-fp16", "torch-cudnn-fp16+graph", "torch-amp+nchw"} <= libs
    near = analysis.nearest_anchors(stats, loaded.runs)
    row = near.loc[("resnet50", "torch-cudnn-fp16", 256)]
    assert row["anchor_images_per_second"] == 16755.5 and row["anchor_batch_size"] == 256
    good = analysis.good_enough_batch(stats)
    best = analysis.best_time_per_image(stats)
    assert (good["time_per_image_ms"] <= best["time_per_image_ms"].reindex(good.index) * 1.05 + 1e-12).all()


def test_the_same_model_and_lib_in_two_repositories_are_repetitions_of_one_another(tmp_path):
    repo = Path(__file__).resolve().parent.parent
    entry = repo / "experiment" / "alexnet-torch-cudnn-fp16"
    shutil.copytree(entry, tmp_path / "experiment" / entry.name)
    one = readpoints.load([repo]).runs
    both = readpoints.load([repo, tmp_path]).runs
    assert both.index.is_unique and len(both) == len(one) + len(readpoints.load([tmp_path]).runs)
    analysis.trusted_layers(readpoints.load([repo, tmp_path]).layers, both)  # needs unique keys


def test_an_adaptive_point_without_predictions_is_reported_not_a_crash(tmp_path):
    """A plan written by hand (no predictions, no best single lib) still reads, reports and prints."""
    import json
    import subprocess
    import sys

    from ck_plugins import ckrepo

    REPO = Path(__file__).resolve().parents[1]
    entry = ckrepo.ensure_experiment_entry(tmp_path, "alexnet", "adaptive", ["explore-batch-size-libs-models"])
    base = json.loads(next((REPO / "experiment" / "alexnet-adaptive").glob("ckp-*.json")).read_text())
    base["choices"]["settings"]["plan"] = {"digest": "0123456789abcdef"}
    ckrepo.write_point(entry, base)
    other = ckrepo.ensure_experiment_entry(tmp_path, "alexnet", "torch-cudnn-fp16", ["explore-batch-size-libs-models"])
    for path in sorted((REPO / "experiment" / "alexnet-torch-cudnn-fp16").glob("ckp-*.json"))[:2]:
        ckrepo.write_point(other, json.loads(path.read_text()))
    done = subprocess.run([sys.executable, "-m", "ck_plugins", "analyse", "--repo", str(tmp_path), "--out",
                           str(tmp_path / "report")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "adaptive built and measured" in done.stdout and "x None (planned n/a ms)" in done.stdout
