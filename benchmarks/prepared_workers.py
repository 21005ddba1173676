"""Do the workers that wait prepared beside the measuring one disturb its points? The same part of a sweep measured
with N workers prepared and with none (`explore --prepared`), in turn, each run into a repository of its own; prints
each run's wall time, ratio, harness share and share of points whose repetitions spread over 5%, then each lib's
median ratio of point times against the first run with none prepared (1.00: the same), and its 10th-90th percentile.

Usage (a GPU, after benchmarks/on-gpu.sh has installed the project there):
    python benchmarks/prepared_workers.py --out DIR [--runs 3,0,3] [--config default]
        [--models squeezenet-1.1,alexnet] [--batch-sizes 2,6,10,16]
The first run finds whatever caches there are: on a fresh machine it is cold, and its compile workers compile beside
the measurement; later runs find inductor's caches warm. Launch-bound models (small ones at small batches) are the
ones whose times depend on the host, hence the default models. Each run's summary is printed as soon as it ends.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from ck_plugins import readpoints


def run(out: Path, index: int, prepared: int, args) -> Path:
    repo = out / f"run-{index}-prepared-{prepared}"
    command = [sys.executable, "-m", "ck_plugins", "explore", "--config", args.config, "--device", "cuda", "--fresh",
               "--prepared", str(prepared), "--repo", str(repo), "--models", args.models,
               "--batch-sizes", args.batch_sizes]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return repo


def point_times(repo: Path) -> pd.DataFrame:
    """Each point's median repetition time and whether its repetitions spread over 5% of it."""
    runs = readpoints.load([repo]).runs
    runs = runs[runs["success"]].reset_index()
    grouped = runs.groupby(["model", "lib", "batch_size"])["time_ms"]
    times = grouped.median().rename("time_ms").to_frame()
    times["spread"] = (grouped.max() - grouped.min()) / times["time_ms"] > 0.05
    return times


def summary(repo: Path, prepared: int, times: pd.DataFrame) -> str:
    journal = json.loads(next((repo / ".ck-sweeps").glob("*.json")).read_text())
    return (f"{repo.name}: prepared {prepared}, {len(times)} points, wall {journal['wall_s']:.1f} s, measured "
            f"{journal['measured_s']:.1f} s, ratio {journal['wall_over_measured']:.2f}, harness "
            f"{journal['harness_share']:.1%} (waiting {journal['waiting_s']:.1f} s), spread over 5%: "
            f"{times['spread'].mean():.0%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for one results repository per run")
    parser.add_argument("--runs", default="3,0,3", help="workers prepared in each run, in turn")
    parser.add_argument("--config", default="default")
    parser.add_argument("--models", default="squeezenet-1.1,alexnet")
    parser.add_argument("--batch-sizes", default="2,6,10,16")
    args = parser.parse_args()
    try:
        counts = [int(x) for x in args.runs.split(",")]
    except ValueError:
        counts = []
    if 0 not in counts or min(counts) < 0:
        parser.error(f"--runs {args.runs!r}: expected counts of 0 or more, one of them 0 (the reference run)")
    measured = []
    for index, prepared in enumerate(counts):
        repo = run(args.out, index, prepared, args)
        measured.append((repo.name, prepared, point_times(repo)))
        print(summary(repo, prepared, measured[-1][2]), flush=True)
    reference_name, _, reference = next(m for m in measured if m[1] == 0)
    print(f"\nper lib: median (10th-90th percentile) of point time / {reference_name}'s")
    for name, prepared, times in measured:
        if name == reference_name:
            continue
        ratio = (times["time_ms"] / reference["time_ms"]).dropna().groupby(level="lib")
        cells = [f"{lib} {r.median():.2f} ({r.quantile(0.1):.2f}-{r.quantile(0.9):.2f})" for lib, r in ratio]
        print(f"{name}:\n  " + "\n  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
