"""How long every analysis table takes from 1,000,000 points (repetitions), with 10 layers each.

Usage: python benchmarks/analysis_1m.py [POINTS]   (goal: all tables within 10 s on 2 cores)
The frames are generated in readpoints' layout; loading JSON files is not timed here (one file per point).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from ck_plugins import analysis
from ck_plugins.readpoints import INDEX

MODELS = ["resnet50", "alexnet", "googlenet", "squeezenet-1.0", "squeezenet-1.1"]


def generate(points: int, layers_per_point: int = 10, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    libs = [f"lib-{i:02d}" for i in range(20)]
    batches = np.arange(1, 101)
    reps = max(1, points // (len(MODELS) * len(libs) * len(batches)))
    grid = pd.MultiIndex.from_product([MODELS, libs, batches, range(reps)], names=INDEX)[:points]
    n = len(grid)
    batch = grid.get_level_values("batch_size").to_numpy()
    time_ms = (1.0 + 0.05 * batch) * rng.uniform(0.5, 2.0, n)
    runs = pd.DataFrame({"time_ms": time_ms, "success": rng.random(n) > 0.01, "memory_mbytes": 100.0 + batch,
                         "iqr_over_median": rng.uniform(0, 0.1, n), "peak_share": rng.uniform(0, 0.5, n),
                         "flops_per_image": 8e9, "gpu": "NVIDIA H200", "legacy": False, "error": None,
                         "source": "generated"}, index=grid)
    runs.loc[~runs["success"], "time_ms"] = np.nan
    frame = grid.to_frame(index=False)
    layers = frame.loc[frame.index.repeat(layers_per_point)].reset_index(drop=True)
    layers["label"] = np.tile([f"layer{i}" for i in range(layers_per_point)], n)
    layers["direction"] = "forward"
    layers["time_ms"] = np.repeat(time_ms / layers_per_point, layers_per_point) * rng.uniform(0.5, 1.5, len(layers))
    for column in ("model", "lib", "label", "direction"):
        layers[column] = layers[column].astype("category")
    return runs, layers


def main(points: int) -> None:
    start = time.perf_counter()
    runs, layers = generate(points)
    print(f"generated {len(runs):,} points and {len(layers):,} layer rows in {time.perf_counter() - start:.1f} s")
    timings = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        return out

    stats = timed("time_stats (mean, std, CI, noise, memory, peak share)", lambda: analysis.time_stats(runs))
    timed("mean time per batch / per image", lambda: (analysis.mean_time_per_batch(stats),
                                                      analysis.mean_time_per_image(stats)))
    best = timed("best time per image + batch", lambda: analysis.best_time_per_image(stats))
    timed("speed-up over a baseline", lambda: analysis.speedup(best, "lib-00"))
    timed("good-enough batch", lambda: analysis.good_enough_batch(stats))
    timed("compare two models", lambda: analysis.compare_models(best, stats, "alexnet", "resnet50"))
    timed("failures", lambda: analysis.failures(runs))
    timed("per-layer time per image (one model)", lambda: analysis.layer_time_per_image(
        layers, "resnet50", ["lib-00", "lib-01"], [8, 16], lower=0.05))
    timed("ideal adaptive solution (all libs)", lambda: analysis.ideal_adaptive(layers, stats))
    for name, seconds in timings.items():
        print(f"{seconds:8.3f} s  {name}")
    print(f"{sum(timings.values()):8.3f} s  every table, {len(runs):,} points")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
