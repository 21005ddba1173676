"""How long every analysis table takes from 1,000,000 points (repetitions), with 10 layers each, on two GPUs with a
swept dimension (a thread count) that identification folds into the lib labels.

Usage: python benchmarks/analysis_1m.py [POINTS]   (goal: all tables within 10 s on 2 cores)
The raw frames are generated in readpoints' layout; loading JSON files is not timed here (one file per point).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from ck_plugins import analysis, readpoints
from ck_plugins.readpoints import CHOICE

MODELS = ["resnet50", "alexnet", "googlenet", "squeezenet-1.0", "squeezenet-1.1"]
PLATFORMS = ["NVIDIA H200", "NVIDIA H100 80GB HBM3"]
THREADS = ["1", "4"]


def generate(points: int, layers_per_point: int = 10, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw frames as readpoints reads them: two GPUs, a swept thread count in choices, repetitions."""
    rng = np.random.default_rng(seed)
    libs = [f"lib-{i:02d}" for i in range(10)]
    batches = np.arange(1, 51)
    reps = max(1, points // (len(PLATFORMS) * len(MODELS) * len(libs) * len(batches) * len(THREADS)))
    grid = pd.MultiIndex.from_product([PLATFORMS, MODELS, libs, batches, THREADS, range(reps)],
                                      names=["platform", "model", "lib", "batch_size", f"{CHOICE}THREADS", "r"])[:points]
    runs = grid.to_frame(index=False).drop(columns="r")
    n = len(runs)
    batch = runs["batch_size"].to_numpy()
    runs.insert(0, "rid", np.arange(n))
    runs["time_ms"] = (1.0 + 0.05 * batch) * rng.uniform(0.5, 2.0, n)
    runs["success"] = rng.random(n) > 0.01
    runs.loc[~runs["success"], "time_ms"] = np.nan
    runs = runs.assign(memory_mbytes=100.0 + batch, iqr_over_median=rng.uniform(0, 0.1, n),
                       peak_share=rng.uniform(0, 0.5, n), flops_per_image=8e9, legacy=False, error=None,
                       source="generated")
    labels = pd.Categorical.from_codes(np.tile(np.arange(layers_per_point), n), [f"layer{i}" for i in range(layers_per_point)])
    layers = pd.DataFrame({"rid": np.repeat(runs["rid"].to_numpy(), layers_per_point), "label": labels,
                           "direction": pd.Categorical(["forward"]).repeat(n * layers_per_point)})
    layers["time_ms"] = np.repeat(runs["time_ms"].to_numpy() / layers_per_point, layers_per_point) * rng.uniform(
        0.5, 1.5, len(layers))
    return runs, layers[runs["success"].to_numpy().repeat(layers_per_point)]


def main(points: int) -> None:
    start = time.perf_counter()
    raw_runs, raw_layers = generate(points)
    print(f"generated {len(raw_runs):,} points and {len(raw_layers):,} layer rows in {time.perf_counter() - start:.1f} s")
    timings = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        return out

    loaded = timed("identify dimensions (platform, swept choices) and join layers",
                   lambda: readpoints.Loaded(raw_runs, raw_layers, raw=(raw_runs, raw_layers)).select({}))
    runs, layers = loaded.runs, loaded.layers
    assert loaded.dimensions == {"THREADS": THREADS}
    stats = timed("time_stats (point time, mean, std, CI, noise, memory, peak share)", lambda: analysis.time_stats(runs))
    timed("time per batch / per image", lambda: (analysis.time_per_batch(stats), analysis.time_per_image(stats)))
    best = timed("best time per image + batch", lambda: analysis.best_time_per_image(stats))
    timed("speed-up over a baseline", lambda: analysis.speedup(best, "lib-00+THREADS=1"))
    timed("good-enough batch", lambda: analysis.good_enough_batch(stats))
    timed("compare two models", lambda: analysis.compare_models(best, stats, "alexnet", "resnet50"))
    timed("failures", lambda: analysis.failures(runs))
    timed("per-layer time per image (one model)", lambda: analysis.layer_time_per_image(
        layers, PLATFORMS[0], "resnet50", ["lib-00+THREADS=1", "lib-01+THREADS=4"], [8, 16], lower=0.05))
    timed("ideal adaptive solution (all libs)", lambda: analysis.ideal_adaptive(layers, stats))
    for name, seconds in timings.items():
        print(f"{seconds:8.3f} s  {name}")
    print(f"{sum(timings.values()):8.3f} s  every table, {len(runs):,} points")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
