"""One definition of a point's time: every consumer agrees on a copy of the committed points (one file of every
committed entry, failed ones included: never the live experiment/, which a sweep may be writing), and the
vectorised analysis agrees with the scalar definition."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ck_plugins import ckedge, point, readpoints, stats
from ck_plugins.submit import store

REPO = Path(__file__).resolve().parent.parent
COMMITTED = point.repository_files(REPO)


@pytest.fixture(scope="module")
def committed_copy(tmp_path_factory) -> list[Path]:
    """The first and the last subpoint file of every committed entry, copied (with the entry's meta) into a
    repository of the test's own."""
    root = tmp_path_factory.mktemp("committed")
    by_entry: dict[Path, list[Path]] = {}
    for path in COMMITTED:
        by_entry.setdefault(path.parent, []).append(path)
    copies = []
    for entry, files in by_entry.items():
        target = root / "experiment" / entry.name
        shutil.copytree(entry / ".cm", target / ".cm")
        for path in dict.fromkeys([files[0], files[-1]]):
            copies.append(Path(shutil.copy2(path, target / path.name)))
    return copies


def test_the_definition():
    assert stats.repetition_time_ms([3.0, 1.0, 2.0, 100.0]) == 2.5
    assert stats.point_time_ms([1.0, 5.0, 2.0]) == 2.0
    found = stats.point_time([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0], [9.0, 9.0, 9.0, 9.0]])
    assert found.time_ms == 2.0 and found.spread == pytest.approx(4.0) and found.noisy
    quiet = stats.point_time([[10.0, 10.1, 9.9, 10.0]] * 3)
    assert quiet.time_ms == 10.0 and not quiet.noisy
    with pytest.raises(ValueError):
        stats.point_time_ms([])


@pytest.mark.skipif(not COMMITTED, reason="needs committed points under experiment/ (a checkout of this repository)")
def test_every_consumer_agrees_on_the_time_of_every_committed_point(committed_copy):
    """Reader, tmp-ck-timer.json, the service's leaderboard row, the program's table (stats.point_time of the raw
    samples) and the analysis frames (grouped per file) give each committed point the same time."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = readpoints.load([committed_copy[0].parent.parent.parent])
    runs = loaded.runs[loaded.runs["success"]]
    analysed = stats.point_times_ms(runs.groupby("source")["time_ms"])
    checked = 0
    for path in committed_copy:
        data = json.loads(path.read_text())
        read = point.read(data, path=str(path))
        timer = ckedge._point_characteristics({"point": data, "point_file": str(path)})
        if read.time_ms is None:
            assert timer["run_success"] is False and str(path) not in analysed.index
            continue
        row, _ = store._row("x", data)
        samples = [c["run"]["time_fw_ms_all"] for c in data["characteristics_list"] if c["run"]["run_success"]]
        times = {"timer": timer["time_fw_ms"], "service": 1e3 * read.batch_size / row["images_per_second"],
                 "program": stats.point_time(samples).time_ms, "analysis": analysed[str(path)]}
        assert all(np.isclose(t, read.time_ms, rtol=1e-12) for t in times.values()), (path, read.time_ms, times)
        checked += 1
    assert checked > 0
