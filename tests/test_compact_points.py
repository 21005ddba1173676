"""Schema version 2: compact points (layer names once, times as arrays, rounded to the clock, no indentation), read
exactly like the version 1 points they replace, and `migrate`, which rewrites older points all or nothing."""
import json
import shutil
import subprocess
import sys
from decimal import Decimal

import pandas as pd

from ck_plugins import backends, ckrepo, engine, point, readpoints
from fixtures import build as fixtures


def _tables(repo):
    loaded = readpoints.load([repo])
    where = ["path", "source"]  # the file each row came from
    return loaded.runs.drop(columns=where, errors="ignore"), loaded.layers.drop(columns=where, errors="ignore")


def test_a_version_1_sweep_and_its_version_2_twin_give_the_same_tables(tmp_path):
    repos = fixtures.build(tmp_path)
    old_runs, old_layers = _tables(repos["sweep-v1"])
    new_runs, new_layers = _tables(repos["sweep"])
    assert len(new_runs) == 2 * 12 * 3 * 3 and len(new_layers) > 0
    resolved = 10.0 ** -point.CLOCK_DECIMALS["cuda-events"]  # version 1 kept digits the clock does not resolve
    pd.testing.assert_frame_equal(old_runs, new_runs, check_exact=False, rtol=0, atol=resolved)
    pd.testing.assert_frame_equal(old_layers, new_layers, check_exact=False, rtol=0, atol=resolved)


def test_a_measured_point_names_its_layers_once_and_rounds_times_to_the_clock(tmp_path):
    measured = engine.run_point(engine.RunPlan("squeezenet-1.1", 1, warmup=1, iterations=3, repetitions=2,
                                               profile=False), backends.create("torch-cpu"))
    data = point.from_measurement(measured, None, {"commit": "abc", "dirty": False})
    entry = ckrepo.ensure_experiment_entry(tmp_path, "squeezenet-1.1", "torch-cpu")
    text = ckrepo.write_point(entry, data).read_text()
    labels = data["features"]["layers"]["label"]
    assert len(labels) > 20 and text.count(json.dumps(labels[5])) == 1  # once, not once per repetition
    assert len(text.splitlines()) == 1 and json.loads(text) == data  # no indentation, nothing lost
    runs = [c["run"] for c in data["characteristics_list"]]
    assert all(len(r["per_layer_time_ms"]) == len(labels) for r in runs)
    times = [t for r in runs for t in r["time_fw_ms_all"] + r["per_layer_time_ms"]]
    assert max(-Decimal(repr(t)).as_tuple().exponent for t in times) <= point.CLOCK_DECIMALS["host-perf-counter"]
    read = point.read(data)
    assert [layer.name for layer in read.successful[0].layers] == labels
    assert read.measurement["accuracy"]["top1_agreement"] >= 0.5 and point.problems(data) == []


def _migrate(repo):
    return subprocess.run([sys.executable, "-m", "ck_plugins", "migrate", "--repo", str(repo)],
                          capture_output=True, text=True, timeout=120)


def _snapshot(repo):
    return {p: p.read_bytes() for p in sorted(repo.glob("experiment/*/ckp-*.json"))}


def test_migrate_rewrites_older_points_compact_leaves_legacy_ones_and_is_idempotent(tmp_path):
    repos = fixtures.build(tmp_path / "fixtures")
    repo = tmp_path / "repo"
    shutil.copytree(repos["sweep-v1"], repo)
    shutil.copytree(repos["layer-names"] / "experiment", repo / "experiment", dirs_exist_ok=True)  # legacy points
    legacy = {p: b for p, b in _snapshot(repo).items() if b"CK_MODEL" not in b}
    runs_before, layers_before = _tables(repo)
    done = _migrate(repo)
    assert done.returncode == 0 and done.stdout.strip() == "72 points migrated, 0 already current", done.stderr
    after = _snapshot(repo)
    ours = [json.loads(b) for p, b in after.items() if p not in legacy]
    assert len(ours) == 72 and all(d["features"]["schema_version"] == 2 and point.problems(d) == [] for d in ours)
    assert all(len(b.splitlines()) == 1 for p, b in after.items() if p not in legacy)
    assert all(after[p] == b for p, b in legacy.items())
    runs_after, layers_after = _tables(repo)
    pd.testing.assert_frame_equal(runs_before, runs_after)
    pd.testing.assert_frame_equal(layers_before, layers_after)
    again = _migrate(repo)
    assert again.stdout.strip() == "0 points migrated, 72 already current" and _snapshot(repo) == after


def test_a_point_that_cannot_be_migrated_stops_migrate_before_anything_is_written(tmp_path):
    repo = fixtures.build(tmp_path / "fixtures")["sweep-v1"]
    bad = sorted(repo.glob("experiment/resnet50-torch-cudnn-fp16/ckp-*.json"))[1]
    data = json.loads(bad.read_text())
    data["characteristics_list"][1]["run"]["per_layer_info"][0]["label"] = "renamed"  # layers differ between repetitions
    bad.write_text(json.dumps(data))
    before = _snapshot(repo)
    done = _migrate(repo)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and bad.name in lines[0] and "different layers" in lines[0]
    assert _snapshot(repo) == before


def test_merge_brings_older_points_in_as_current_ones_and_skips_them_when_already_there(tmp_path):
    repos = fixtures.build(tmp_path / "fixtures")
    fresh = tmp_path / "fresh"
    assert ckrepo.merge_repo(repos["sweep-v1"], fresh) == (72, 0)
    merged = [json.loads(p.read_text()) for p in fresh.glob("experiment/*/ckp-*.json")]
    assert len(merged) == 72 and all(d["features"]["schema_version"] == 2 for d in merged)
    assert ckrepo.merge_repo(repos["sweep-v1"], fresh) == (0, 72)  # the same points, older format: already there
