"""compare OLD NEW, regressions across software versions, latency percentiles and the latency budget: on fixtures
built here, with the expected figures computed independently (scipy's t and Mann-Whitney, numpy's percentiles)."""
import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ck_plugins import compare, latency, plots, readpoints
from ck_plugins.cli import main
from fixtures import build as fixtures

GPU = "NVIDIA H200"


def noisy_samples(rng, ms: float, noise: float, repetitions: int, iterations: int = 20) -> list[list[float]]:
    """Repetitions whose level varies by `noise` (relative standard deviation), iterations by a tenth of it."""
    out = []
    for _ in range(repetitions):
        level = ms * (1 + noise * rng.standard_normal())
        out.append([round(level * (1 + noise / 10 * rng.standard_normal()), 6) for _ in range(iterations)])
    return out


def write(repo, lib: str, samples, uid: str, torch: str = "2.11.0", model: str = "resnet50", batch: int = 16):
    folder = fixtures.entry(repo, f"{model}-{lib}", [fixtures.TAG, model, lib])
    data = fixtures.our_point_data(GPU, batch, samples, lib, model)
    data["features"]["platform"]["torch"] = torch
    fixtures._write(folder / f"ckp-{uid}.0001.json", data)
    return data


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """OLD and NEW: torch-cudnn-fp16 20% slower under 2% noise; torch-amp 3% slower under 10% noise; torch-cudnn-fp32
    unchanged (the same numbers); one configuration only in OLD."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("compare")
    old, new = root / "old", root / "new"
    spec = {"torch-cudnn-fp16": (1.0, 1.2, 0.02, 8), "torch-amp": (1.0, 1.03, 0.10, 5)}
    samples = {}
    for n, (lib, (before, after, noise, reps)) in enumerate(spec.items()):
        samples[lib] = (noisy_samples(rng, before, noise, reps), noisy_samples(rng, after, noise, reps))
        write(old, lib, samples[lib][0], f"{n:016x}")
        write(new, lib, samples[lib][1], f"{n:016x}", torch="2.12.0")
    same = noisy_samples(rng, 2.0, 0.02, 4)
    write(old, "torch-cudnn-fp32", same, "f" * 16)
    write(new, "torch-cudnn-fp32", same, "f" * 16, torch="2.12.0")
    write(old, "torch-cublas-fp32", same, "e" * 16)
    return old, new, samples


def fieller_by_hand(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Kalibera & Jones's interval of mean(a)/mean(b), written out from their paper's formula."""
    ma, mb, va, vb = a.mean(), b.mean(), a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    t = scipy_stats.t.ppf(0.975, df)
    root = math.sqrt(ma ** 2 * vb + mb ** 2 * va - t ** 2 * va * vb)
    return (ma * mb - t * root) / (mb ** 2 - t ** 2 * vb), (ma * mb + t * root) / (mb ** 2 - t ** 2 * vb)


def repetition_times(samples) -> np.ndarray:
    return np.array([np.median(s) for s in samples])


def test_compare_says_slower_for_20_percent_under_2_percent_noise_and_nothing_for_3_under_10(two_runs):
    old, new, samples = two_runs
    table = compare.compare(readpoints.load([old]), readpoints.load([new])).set_index("lib")
    assert table.loc["torch-cudnn-fp16", "verdict"] == "slower"
    assert table.loc["torch-amp", "verdict"] == "no significant change"
    assert table.loc["torch-cudnn-fp32+channels_last", "verdict"] == "no significant change"  # fp32's usual is nchw
    assert "torch-cublas-fp32+channels_last" not in table.index  # only in OLD
    for lib in ("torch-cudnn-fp16", "torch-amp"):
        before, after = (repetition_times(s) for s in samples[lib])
        low, high = fieller_by_hand(after, before)
        ratio = np.median(after) / np.median(before)
        assert table.loc[lib, "ratio"] == pytest.approx(ratio, rel=1e-9)
        assert (table.loc[lib, "low"], table.loc[lib, "high"]) == pytest.approx((min(low, ratio), max(high, ratio)),
                                                                                rel=1e-9)
        pooled = [np.concatenate(s) for s in samples[lib]]
        assert table.loc[lib, "p_value"] == pytest.approx(scipy_stats.mannwhitneyu(pooled[1], pooled[0]).pvalue)
    assert table.loc["torch-cudnn-fp16", "low"] > 1.1  # the 20% is there, bounded away from 1


def test_compare_cli_exit_codes_table_versions_and_json(two_runs, capsys):
    old, new, _ = two_runs
    assert main(["compare", str(old), str(new)]) == 1  # something is slower: CI fails
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "torch: 2.11.0 -> 2.12.0"
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if "verdict" in line and "configuration" in line)
    assert lines[first + 1].split()[0] == "slower" and "torch-cudnn-fp16" in lines[first + 1]  # the biggest first
    assert "3 configurations in both (1 only in OLD, 0 only in NEW)" in out
    assert main(["compare", str(old), str(new), "--where", "lib=torch-amp"]) == 0  # nothing slower
    capsys.readouterr()
    assert main(["compare", str(old), str(new), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["differences"] == {"torch": {"old": ["2.11.0"], "new": ["2.12.0"]}}
    verdicts = {row["lib"]: row["verdict"] for row in document["configurations"]}
    assert verdicts["torch-cudnn-fp16"] == "slower" and verdicts["torch-amp"] == "no significant change"


def test_compare_selections_of_one_repository_and_bad_input(two_runs, tmp_path, capsys):
    old, _, _ = two_runs
    assert main(["compare", str(old), str(old), "--old-where", "lib=torch-amp", "--new-where",
                 "lib=torch-cudnn-fp16"]) == 2  # different libs: nothing in both
    assert "no configuration is in both" in capsys.readouterr().err
    assert main(["compare", str(old), str(old)]) == 0  # a run against itself: no change anywhere
    assert "software versions and clocks: the same on both sides" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "nowhere"), str(old)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: OLD ")
    assert main(["compare", str(old), str(old), "--threshold", "-1"]) == 2
    assert "--threshold '-1' is not valid" in capsys.readouterr().err
    assert main(["compare", str(old), str(old), "--old-where", "nonsense=1"]) == 2


def test_compare_with_one_repetition_gives_no_verdict(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    write(old, "torch-amp", [[1.0] * 10], "1" * 16)
    write(new, "torch-amp", [[2.0] * 10], "1" * 16)
    row = compare.compare(readpoints.load([old]), readpoints.load([new])).iloc[0]
    assert row["verdict"] == "too few repetitions" and row["ratio"] == pytest.approx(2.0) and math.isnan(row["low"])


# --------------------------------------------------------------------------------------------- regressions
TORCH_VERSIONS = ("2.8.0", "2.9.0", "2.10.0", "2.11.0")  # 2.10 after 2.9: versions, not text


def regression_points(rng, slow: str = "2.10.0") -> list[dict]:
    """Two points per torch version of AlexNet fp16 at batch 16; `slow` 15% slower; torch-amp never changes."""
    points = []
    for v, torch in enumerate(TORCH_VERSIONS):
        for copy in range(2):
            for lib, factor in (("torch-cudnn-fp16", 1.15 if torch == slow else 1.0), ("torch-amp", 1.0)):
                data = fixtures.our_point_data(GPU, 16, noisy_samples(rng, 0.3 * factor, 0.01, 3), lib, "alexnet")
                data["features"]["platform"]["torch"] = torch
                data["features"]["repo"]["commit"] = f"{v}{copy}{lib}".encode().hex()[:40].ljust(40, "0")
                points.append(data)
    return points


def assert_found(steps: list[dict]) -> None:
    slower = [s for s in steps if s["verdict"] == "slower"]
    assert [(s["lib"], s["software"], s["before"], s["after"]) for s in slower] == \
        [("torch-cudnn-fp16", "torch", "2.9.0", "2.10.0")]
    assert slower[0]["ratio"] == pytest.approx(1.15, rel=0.03) and slower[0]["low"] > 1.0
    faster = [(s["lib"], s["before"], s["after"]) for s in steps if s["verdict"] == "faster"]
    assert faster == [("torch-cudnn-fp16", "2.10.0", "2.11.0")]  # and back again


def test_regressions_name_the_version_where_the_time_moved(tmp_path):
    for n, data in enumerate(regression_points(np.random.default_rng(3))):
        env = data["choices"]["env"]
        folder = fixtures.entry(tmp_path, f"alexnet-{env['CK_LIB']}", [fixtures.TAG, "alexnet", env["CK_LIB"]])
        fixtures._write(folder / f"ckp-{n:016x}.0001.json", data)
    loaded = readpoints.load([tmp_path])
    table = compare.regressions(loaded)
    assert len(table) == 2 * 3  # two libs, three steps each
    assert_found(json.loads(compare.steps(table).to_json(orient="records")))
    from ck_plugins import report

    _, summary = report.summarise(loaded)
    assert_found(summary["regressions"])


def test_regressions_through_the_real_service(tmp_path):
    from test_service import Server

    server = Server(tmp_path / "service").start()
    try:
        status, answer = server.post(regression_points(np.random.default_rng(3)))
        assert status == 200 and answer["accepted"] == 16, answer
        import time
        import urllib.request

        deadline = time.monotonic() + 120
        while True:
            with urllib.request.urlopen(server.url + "/api/regressions", timeout=30) as response:
                found = json.loads(response.read())
            if found["current"] and found["regressions"]:
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.2)
        assert_found(found["regressions"])
        with urllib.request.urlopen(server.url + "/", timeout=30) as response:
            page = response.read().decode()
        assert "Regressions across software versions" in page and "<td>2.10.0</td>" in page
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------- latency
def test_latency_percentiles_budget_and_pareto_front(tmp_path):
    rng = np.random.default_rng(11)
    spec = {("torch-cudnn-fp16", 1): 0.5, ("torch-cudnn-fp16", 16): 2.0, ("torch-cudnn-fp16", 64): 9.0,
            ("torch-amp", 1): 0.6, ("torch-amp", 16): 3.0, ("torch-amp", 64): 7.5}
    kept = {}
    for n, ((lib, batch), ms) in enumerate(spec.items()):
        kept[lib, batch] = [list(ms * (1 + 0.05 * rng.random(30))) for _ in range(3)]
        folder = fixtures.entry(tmp_path, f"resnet50-{lib}", [fixtures.TAG, "resnet50", lib])
        fixtures.our_point(folder, f"{n:016x}", GPU, batch, kept[lib, batch], lib)
    table = latency.table(readpoints.load([tmp_path])).loc[(GPU, "resnet50")]
    for (lib, batch), samples in kept.items():
        pooled = np.concatenate(samples)
        expected = np.percentile(pooled, [50, 90, 99])
        assert table.loc[(lib, batch), ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms"]].tolist() == \
            pytest.approx(expected.tolist())
        assert table.loc[(lib, batch), "iterations"] == 90
    chosen = latency.within_budget(latency.table(readpoints.load([tmp_path])), 8.0).iloc[0]
    assert (chosen["lib"], chosen["batch_size"], chosen["within_budget"]) == ("torch-amp", 64, True)
    tight = latency.within_budget(latency.table(readpoints.load([tmp_path])), 0.1).iloc[0]
    assert (tight["lib"], tight["batch_size"], tight["within_budget"]) == ("torch-cudnn-fp16", 1, False)
    front = latency.pareto(table)
    assert list(front.index) == [("torch-cudnn-fp16", 1), ("torch-cudnn-fp16", 16), ("torch-amp", 64)]
    png = plots.throughput_latency(table, front, GPU, "resnet50", 8.0, ("torch-amp", 64))  # the plot checks pass
    assert png.startswith(b"\x89PNG")


def test_legacy_points_without_iterations_have_no_percentiles(tmp_path):
    folder = fixtures.entry(tmp_path, "caffe-alexnet-cudnn", [fixtures.TAG, "caffe", "bvlc-alexnet", "cudnn"])
    fixtures.legacy_point(folder, "1" * 16, {"CK_CAFFE_BATCH_SIZE": 2}, [fixtures.legacy_run(10.0)] * 3)
    table = latency.table(readpoints.load([tmp_path]))
    assert len(table) == 1 and table["latency_p99_ms"].isna().all() and (table["iterations"] == 0).all()
    assert latency.within_budget(table, 5.0).empty
