"""Where a sweep point's warm-up goes: the first call at each new batch size against a steady call, per lib.

Usage (a GPU): python benchmarks/first_call.py --model resnet50 --libs torch-cudnn-fp16 --batch-sizes 2,4,6
                 [--no-benchmark] [--kernels]
The libs run one after the other in this process, as a sweep's worker runs one lib's batch sizes: run one lib per
process to see what a worker pays, two libs in one process to see what they share. For each (lib, batch) it prints
the first call's wall time and the host CPU time the process spent in it (CPU about equal to the wall: host-bound,
such as cuDNN building and compiling plans), then a steady call. --no-benchmark turns cuDNN's autotuning off after
the load (a diagnosis only: the cuDNN libs measure with it on). --kernels profiles the first call with torch.profiler
and prints its GPU kernels' total time instead of the CPU time (the profiler slows the host: its wall is not the
cost). Timing goes through measure.now_s, the one host clock.
"""
from __future__ import annotations

import argparse
import time

import torch

from ck_plugins import backends, models
from ck_plugins.engine import seeded_images
from ck_plugins.measure import now_s


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def first_call(backend, inputs, kernels: bool) -> tuple[float, float]:
    """The first call's wall seconds, and its host CPU seconds (or, with `kernels`, its GPU kernels' seconds)."""
    sync()
    start, cpu = now_s(), time.process_time()
    if not kernels:
        backend.predict(inputs)
        sync()
        return now_s() - start, time.process_time() - cpu
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        backend.predict(inputs)
        sync()
    wall = now_s() - start
    return wall, sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type.name == "CUDA") / 1e6


def steady_ms(backend, inputs, calls: int = 10) -> float:
    sync()
    start = now_s()
    for _ in range(calls):
        backend.predict(inputs)
    sync()
    return (now_s() - start) * 1e3 / calls


def run(model_name: str, libs: list[str], batch_sizes: list[int], benchmark: bool, kernels: bool) -> None:
    model = models.build(model_name)
    images = seeded_images(max(batch_sizes), 0)
    second = "gpu kernels s" if kernels else "host cpu s"
    print(f"| lib | batch | first call s | {second} | steady ms |\n|---|---:|---:|---:|---:|")
    for lib in libs:
        options = backends.Options(memory_format=backends.default_memory_format(lib), dynamic_batch=True)
        backend = backends.create(lib, options)
        backend.check()
        backend.load(model, batch_sizes[0])
        torch.backends.cudnn.benchmark = benchmark and torch.backends.cudnn.benchmark
        for batch in batch_sizes:
            inputs = backend.prepare_input(images[:batch])
            wall, other = first_call(backend, inputs, kernels)
            print(f"| {lib} | {batch} | {wall:.3f} | {other:.3f} | {steady_ms(backend, inputs):.3f} |", flush=True)
        backend.unload()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--libs", default="torch-cudnn-fp16")
    parser.add_argument("--batch-sizes", default="2,4,6,8")
    parser.add_argument("--no-benchmark", action="store_true")
    parser.add_argument("--kernels", action="store_true")
    args = parser.parse_args()
    run(args.model, args.libs.split(","), [int(b) for b in args.batch_sizes.split(",")], not args.no_benchmark,
        args.kernels)


if __name__ == "__main__":
    main()
