"""Where a sweep point's warm-up goes: the first call at each new batch size against a steady call, per lib.

Usage (a GPU): python benchmarks/first_call.py --model resnet50 --libs torch-cudnn-fp16 --batch-sizes 2,4,6
                 [--no-benchmark] [--kernels]
The libs run one after the other in this process, as a sweep's worker runs one lib's batch sizes: run one lib per
process to see what a worker pays, two libs in one process to see what they share. For each (lib, batch) it prints
the first call's wall time and the host CPU time the process spent in it (CPU about equal to the wall: host-bound,
such as cuDNN building and compiling plans), then a steady call. --no-benchmark turns cuDNN's autotuning off after
the load (a diagnosis only: the cuDNN libs measure with it on). --kernels profiles the first call with torch.profiler
and prints its GPU kernels' total time instead of the CPU time (the profiler slows the host: its wall is not the
cost). Timing goes through measure.time_iterations, the one timer.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from ck_plugins import backends, measure, models
from ck_plugins.engine import seeded_images


def first_call(backend, inputs, kernels: bool) -> tuple[float, float]:
    """The first call's wall seconds (measure's warm-up of one step), and the host CPU seconds the process spent in it
    (or, with `kernels`, its GPU kernels' seconds, from torch.profiler)."""
    step = lambda: backend.predict(inputs)  # noqa: E731
    if kernels:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            wall = measure.time_iterations(step, backend.device, 1, 0, 0).warmup_s
        return wall, sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type.name == "CUDA") / 1e6
    cpu = [time.process_time()]
    timing = measure.time_iterations(step, backend.device, 1, 0, 0, done=lambda stage: cpu.append(time.process_time()))
    return timing.warmup_s, cpu[1] - cpu[0]


def steady_ms(backend, inputs, calls: int = 10) -> float:
    """The median of `calls` timed calls (measure's timer: CUDA events on a GPU)."""
    samples = measure.time_iterations(lambda: backend.predict(inputs), backend.device, 0, calls, 1).samples_ms[0]
    return statistics.median(samples)


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
