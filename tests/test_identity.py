"""The point reader on synthetic CK repositories (tests/fixtures/build.py), one per class of input: every table is
checked against figures computed here by hand, not merely for the absence of errors."""
import json
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ck_plugins import analysis, ckrepo, legacytags, point, readpoints, report

from fixtures import build as fixtures


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    return fixtures.build(tmp_path_factory.mktemp("fixtures"))


def load(*paths, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped files are asserted on through `skipped`
        return readpoints.load(list(paths), **kwargs)


def test_two_gpus_are_two_platforms_never_pooled(repos):
    loaded = load(repos["two-gpus"], repos["two-gpus"] / "pulled")
    stats = analysis.time_stats(loaded.runs)
    assert len(stats) == 2 and set(stats["repetitions"]) == {3}
    h200 = stats.loc[("NVIDIA H200", "resnet50", "torch-cudnn-fp16", 16)]
    h100 = stats.loc[("NVIDIA H100 80GB HBM3", "resnet50", "torch-cudnn-fp16", 16)]
    assert h200["time_ms"] == pytest.approx(statistics.median([1.0, 1.02, 0.98]))
    assert h100["time_ms"] == pytest.approx(2.0)
    headline = analysis.analyse(loaded).headline
    ips = {m["platform"]: m["images_per_second"] for m in headline["models"]}
    assert ips == {"NVIDIA H200": pytest.approx(16e3), "NVIDIA H100 80GB HBM3": pytest.approx(8e3)}
    only = load(repos["two-gpus"], repos["two-gpus"] / "pulled", where=readpoints.parse_where([], "nvidia h100 80gb hbm3"))
    assert set(only.runs.index.get_level_values("platform")) == {"NVIDIA H100 80GB HBM3"}


def test_a_thread_sweep_is_a_dimension_not_repetitions(repos):
    loaded = load(repos["thread-sweep"])
    assert loaded.dimensions == {"OPENBLAS_NUM_THREADS": ["1", "2", "4"]}
    stats = analysis.time_stats(loaded.runs)
    assert len(stats) == 6 and set(stats["repetitions"]) == {3}
    for (batch, threads), ms in fixtures.THREAD_TIMES.items():
        row = stats.loc[("GeForce GTX 1080", "alexnet", f"cpu+OPENBLAS_NUM_THREADS={threads}", batch)]
        assert row["time_ms"] == pytest.approx(ms)  # median of ms * (0.99, 1.0, 1.01)
        assert row["time_ms_mean"] == pytest.approx(ms)
    best = analysis.best_time_per_image(stats)["time_per_image_ms"]
    assert best[("GeForce GTX 1080", "alexnet", "cpu+OPENBLAS_NUM_THREADS=4")] == pytest.approx(min(12.0 / 2, 22.0 / 4))
    four = load(repos["thread-sweep"], where={"OPENBLAS_NUM_THREADS": "4"})
    assert four.dimensions == {} and set(four.runs.index.get_level_values("lib")) == {"cpu"}
    assert analysis.time_stats(four.runs)["time_ms"].tolist() == pytest.approx([12.0, 22.0])


def test_hosts_of_one_repository_are_separate_platforms(repos):
    loaded = load(repos["multi-host"])
    assert loaded.dimensions == {"machine": ["Dell T7910", "HP Z640 Workstation"]}
    stats = analysis.time_stats(loaded.runs)
    times = stats["time_ms"].droplevel(["model", "lib", "batch_size"]).to_dict()
    assert times == {"GeForce GTX 1080 [machine=Dell T7910]": 5.0, "GeForce GTX 1080 [machine=HP Z640 Workstation]": 7.0}


def test_extra_tags_are_metadata_not_a_refusal(repos):
    loaded = load(repos["extra-tags"])
    assert loaded.skipped == []
    libs = set(loaded.runs.index.get_level_values("lib"))
    assert libs == {"nvidia-cudnn", "cpu"} and set(loaded.runs.index.get_level_values("model")) == {"alexnet"}
    assert set(loaded.runs["run_type"]) == {"time_gpu", "time_cpu"}
    speed = analysis.analyse(loaded).speedups
    assert speed.loc[("GeForce GTX 1080", "alexnet"), "nvidia-cudnn"] == pytest.approx(100.0 / 4.0)


def test_legacy_model_and_lib_come_from_known_names():
    assert legacytags.classify([fixtures.TAG, "time_gpu", "bvlc-googlenet", "nvidia-fp16-cudnn", "jetson-tx1"]) == \
        legacytags.Roles("googlenet", "nvidia-fp16-cudnn", "", ["time_gpu", "jetson-tx1"])
    assert legacytags.classify([fixtures.TAG, "time_gpu", "bvlc-alexnet", "my-own-caffe"]).lib == "my-own-caffe"
    with pytest.raises(legacytags.TagError, match="no model tag"):
        legacytags.classify([fixtures.TAG, "cpu"])
    with pytest.raises(legacytags.TagError, match="several lib tags"):
        legacytags.classify([fixtures.TAG, "bvlc-alexnet", "cpu", "nvidia-cudnn"])


def test_layers_match_by_name_and_fused_libs_are_left_out_and_named(repos):
    loaded = load(repos["layer-names"])
    result = analysis.analyse(loaded)
    ideal = result.ideal
    assert list(ideal.excluded["lib"]) == ["tensorrt-fp16"] and "fused" in ideal.excluded["reason"].iloc[0]
    row = ideal.summary.loc[("GeForce GTX 1080", "alexnet")]
    common = set(fixtures.SHIFTED_LAYERS)  # every name but the input layer
    expected = sum(min(fixtures.REFERENCE_LAYERS[n], fixtures.SHIFTED_LAYERS[n]) for n in common) / 2
    singles = {"nvidia-cudnn": sum(fixtures.REFERENCE_LAYERS[n] for n in common) / 2,
               "libdnn-cuda": sum(fixtures.SHIFTED_LAYERS.values()) / 2}
    assert row["total_ms"] == pytest.approx(expected)
    assert row["best_single_lib"] == min(singles, key=singles.get)
    assert row["best_single_lib_layers_ms"] == pytest.approx(min(singles.values()))
    assert row["ratio_to_best_single_lib"] == pytest.approx(expected / min(singles.values())) and row["ratio_to_best_single_lib"] < 1
    assert row["layers_compared"] == len(common) and row["layers_not_compared"] == 1
    chosen = ideal.choices.loc[("GeForce GTX 1080", "alexnet", "conv1"), "lib"]
    assert chosen == "libdnn-cuda"  # 1.0 < 2.0 ms: matched although its label is "00: conv1", not "01: conv1"


def test_the_ideal_needs_two_libs_and_says_why(repos):
    loaded = load(repos["layer-names"], where={"lib": "nvidia-cudnn"})
    result = analysis.analyse(loaded)
    model = result.headline["models"][0]
    assert model["ideal_adaptive_ratio_to_best_single_lib"] is None
    assert model["ideal_adaptive"].startswith("not enough per-layer data")


def test_the_ideal_is_never_slower_than_the_best_single_lib_it_could_use(repos):
    """The invariant holds on every fixture and is checked in code: a broken choice raises."""
    for repo in repos.values():
        ideal = analysis.analyse(load(repo)).ideal
        if not ideal.summary.empty:
            assert (ideal.summary["total_ms"] <= ideal.summary["best_single_lib_layers_ms"] * (1 + 1e-9)).all()


def test_failed_legacy_points_show_their_reason(repos):
    loaded = load(repos["failed"])
    failed = analysis.failures(loaded.runs)["error"].droplevel(["platform", "model", "lib"]).to_dict()
    assert failed == {2: "return code 139", 4: "return code 134"}
    assert (~loaded.runs["success"]).sum() == 6  # a failed legacy run stands for its 3 repetitions


def test_legacy_noise_comes_from_the_spread_of_repetitions(tmp_path):
    folder = fixtures.entry(tmp_path, "bvlc-alexnet-cpu", [fixtures.TAG, "bvlc-alexnet", "cpu"])
    fixtures.legacy_point(folder, "7000000000000001", {"CK_CAFFE_BATCH_SIZE": 2},
                          [fixtures.legacy_run(ms) for ms in (10.0, 10.1, 10.2)])
    fixtures.legacy_point(folder, "7000000000000002", {"CK_CAFFE_BATCH_SIZE": 4},
                          [fixtures.legacy_run(ms) for ms in (10.0, 12.0, 11.0)])
    noisy = analysis.time_stats(load(tmp_path).runs)["noisy"].droplevel(["platform", "model", "lib"]).to_dict()
    assert noisy == {2: False, 4: True}  # spread 2% and 18% of the median


def test_a_newer_schema_is_refused_and_named(tmp_path):
    folder = fixtures.entry(tmp_path, "resnet50-torch-cudnn-fp16", [fixtures.TAG])
    fixtures.our_point(folder, "8000000000000001", "NVIDIA H200", 2, [[1.0] * 4] * 3)
    path = next(folder.glob("ckp-*.json"))
    data = json.loads(path.read_text())
    data["features"]["schema_version"] = 99
    path.write_text(json.dumps(data))
    loaded = load(tmp_path)
    assert len(loaded.skipped) == 1 and "schema_version 99 is newer than this reader's 2" in loaded.skipped[0]


def test_nothing_readable_gives_one_short_line(tmp_path):
    folder = fixtures.entry(tmp_path, "bvlc-alexnet-cpu", [fixtures.TAG, "bvlc-alexnet", "cpu"])
    for n in range(50):
        (folder / f"ckp-{n:016d}.0001.json").write_text("{not json")
    done = subprocess.run([sys.executable, "-m", "ck_plugins", "analyse", "--repo", str(tmp_path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and len(lines[0]) < 1000, done.stderr
    assert "no successful point to analyse" in lines[0] and "50 files skipped (first 3:" in lines[0]


def test_an_unknown_where_dimension_is_one_clear_line(repos, tmp_path):
    done = subprocess.run([sys.executable, "-m", "ck_plugins", "analyse", "--repo", str(repos["thread-sweep"]),
                           "--where", "THREADS=4", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "OPENBLAS_NUM_THREADS" in done.stderr and "THREADS=4" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_null_lib_is_never_the_fastest():
    import pandas as pd

    index = pd.MultiIndex.from_product([["CPU"], ["alexnet"], ["null", "torch-cpu"], [2], [0, 1, 2]],
                                       names=readpoints.INDEX)
    runs = pd.DataFrame({"time_ms": [0.001] * 3 + [10.0] * 3, "success": True, "memory_mbytes": 1.0,
                         "iqr_over_median": 0.0, "peak_share": float("nan")}, index=index)
    loaded = readpoints.Loaded(runs, pd.DataFrame(columns=readpoints.INDEX + ["label", "direction", "time_ms"]))
    assert analysis.analyse(loaded).headline["models"][0]["fastest_lib"] == "torch-cpu"


def test_merge_of_a_legacy_repository_works_and_a_broken_one_leaves_nothing(repos, tmp_path):
    target = tmp_path / "target"
    added, skipped = ckrepo.merge_repo(repos["thread-sweep"], target)
    assert (added, skipped) == (6, 0)
    assert analysis.time_stats(load(target).runs)["time_ms"].sort_values().tolist() == pytest.approx(
        sorted(fixtures.THREAD_TIMES.values()))
    broken = tmp_path / "broken"
    folder = fixtures.entry(broken, "bvlc-alexnet-cpu", [fixtures.TAG, "bvlc-alexnet", "cpu"])
    (folder / "ckp-0000000000000001.0001.json").write_text("{")
    with pytest.raises(ValueError, match="broken JSON"):
        ckrepo.merge_repo(broken, tmp_path / "untouched")
    assert not (tmp_path / "untouched").exists()


def test_report_names_the_platform_and_the_varying_dimension(repos, tmp_path):
    built = report.build(load(repos["thread-sweep"]), tmp_path)
    page = built.html_path.read_text()
    assert "GeForce GTX 1080" in page and "--where OPENBLAS_NUM_THREADS=VALUE" in page
    assert built.summary["dimensions"] == {"OPENBLAS_NUM_THREADS": ["1", "2", "4"]}


def test_an_older_point_is_migrated_through_its_named_steps(tmp_path, monkeypatch):
    folder = fixtures.entry(tmp_path, "resnet50-torch-cudnn-fp16", [fixtures.TAG])
    data = fixtures.our_point(folder, "8000000000000002", "NVIDIA H200", 2, [[1.0] * 4] * 3, version=1)
    data["features"]["schema_version"] = 0
    data["choices"]["env"]["CK_BATCH"] = data["choices"]["env"].pop("CK_BATCH_SIZE")  # how a version 0 named it
    with pytest.raises(point.PointError, match="no migration to version 1"):
        point.read(data)

    def migrate_to_1(old: dict) -> dict:
        env = old["choices"]["env"]
        env["CK_BATCH_SIZE"] = env.pop("CK_BATCH")
        old["features"]["schema_version"] = 1
        return old

    monkeypatch.setitem(point.MIGRATIONS, 1, migrate_to_1)
    read = point.read(data)
    assert read.batch_size == 2 and read.time_ms == 1.0


def test_a_host_attribute_older_points_lack_does_not_split_them(tmp_path):
    folder = fixtures.entry(tmp_path, "resnet50-torch-cudnn-fp16", [fixtures.TAG])
    fixtures.our_point(folder, "8000000000000003", "NVIDIA H200", 2, [[1.0] * 4] * 3)
    newer = fixtures.our_point_data("NVIDIA H200", 2, [[1.2] * 4] * 3)
    newer["features"]["platform"]["hostname"] = "gpu-host-7"  # recorded since; the older point has none
    (folder / "ckp-8000000000000004.0001.json").write_text(json.dumps(newer))
    loaded = load(tmp_path)
    assert loaded.dimensions == {} and len(analysis.time_stats(loaded.runs)) == 1
    other = fixtures.our_point_data("NVIDIA H200", 2, [[2.0] * 4] * 3)
    other["features"]["platform"]["hostname"] = "gpu-host-9"
    (folder / "ckp-8000000000000005.0001.json").write_text(json.dumps(other))
    assert load(tmp_path).dimensions == {"hostname": ["gpu-host-7", "gpu-host-9", "none"]}


def test_any_tag_set_is_read_by_elimination_with_every_dimension_kept_apart(repos):
    """Models and libs nobody listed, precision suffixes, two hosts and a thread sweep: every point stays its own
    configuration, and its time is the median of its own repetitions (computed here from the fixture's numbers)."""
    loaded = load(repos["any-tags"])
    expected = {}
    for _, meaning, ms in fixtures.ANY_TAGS:
        if meaning is None:
            continue
        model, lib, precision = meaning
        for machine, host in fixtures.ANY_TAGS_HOSTS.items():
            for threads, speed in fixtures.ANY_TAGS_THREADS.items():
                expected[model, lib, precision, machine, str(threads)] = statistics.median(
                    ms * host * speed * f for f in (0.98, 1.0, 1.03))
    runs = loaded.raw[0]
    assert set(zip(runs["model"], runs["lib"], runs["choice:precision"], runs["host:machine"],
                   runs["choice:OMP_NUM_THREADS"])) == set(expected)
    stats = analysis.time_stats(loaded.runs)
    assert len(stats) == len(expected)  # nothing pooled
    assert sorted(stats["time_ms"]) == pytest.approx(sorted(expected.values()))
    # each identified label names the values that tell it apart from its neighbours
    resnet = stats.xs("resnet50", level="model").reset_index()
    assert set(resnet["lib"]) == {f"intel-request+OMP_NUM_THREADS={t}+precision={p}" for t in (1, 8)
                                  for p in ("fp32", "int8")}
    assert set(resnet["platform"]) == {f"Intel Xeon E5-2650 v3 [machine={m}]" for m in fixtures.ANY_TAGS_HOSTS}
    assert set(loaded.dimensions) == {"OMP_NUM_THREADS", "precision", "machine"}
    row = ("Intel Xeon E5-2650 v3 [machine=Supermicro SYS-1029U]", "inception-v3",
           "intel-request+OMP_NUM_THREADS=8", 1)  # one precision for this model and lib: not in its label
    assert stats.loc[row, "time_ms"] == pytest.approx(expected["inception-v3", "intel-request", "int8",
                                                               "Supermicro SYS-1029U", "8"])
    skipped = "\n".join(loaded.skipped)
    assert "'mystery-net' and 'mystery-lib' could each be the model or the lib" in skipped
    assert "no model tag" in skipped and "2018-05-01" in skipped
    assert len(loaded.skipped) == 2 * len(fixtures.ANY_TAGS_HOSTS) * len(fixtures.ANY_TAGS_THREADS)


def test_entry_folders_found_by_ck_still_learn_from_their_repository(repos):
    """`ck analyse` passes entry folders (a CK search's): names are learnt over their repository all the same."""
    folders = sorted(p for p in (repos["any-tags"] / "experiment").iterdir() if p.is_dir() and p.name != ".cm")
    runs = load(*folders).raw[0]
    assert ("inception-v3", "intel-request", "int8") in set(zip(runs["model"], runs["lib"], runs["choice:precision"]))
