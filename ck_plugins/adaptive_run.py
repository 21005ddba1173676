"""The adaptive solution, made real: measure the candidate libs layer by layer, plan, build, measure.

For one model and batch size, in one process: every candidate lib (one configuration each: precision, layout,
cuDNN on or off) is measured and recorded as a point with its per-layer times; the conversions between their
dtypes and layouts are measured; the greedy plan (the notebook's ideal solution) and the planned one (with
conversions) are computed from those per-layer medians; the plan is written next to the adaptive entry's
points, and the `adaptive` lib runs it as a point of its own. Its settings carry the predicted (greedy, no
conversions), greedy-with-conversions and planned times, and the best single lib measured in the same run.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import adaptive, backends, bench, ckrepo, engine, files, models
from .errors import BadInput
from .progress import Progress
from .stats import point_time_ms

CANDIDATES = {
    "cuda": ("torch-cudnn-fp32", "torch-cudnn-tf32", "torch-cublas-fp32", "torch-cudnn-fp16", "torch-cublas-fp16",
             "torch-cudnn-bf16"),
    "cpu": ("torch-cpu", "torch-cpu-bf16"),
}


@dataclass
class Outcome:
    model: str
    batch_size: int
    cuda_graph: bool
    best_single_lib: str
    best_single_lib_ms: float
    predicted_ms: float  # greedy per-layer minima, conversions ignored (the notebook's ideal)
    greedy_ms: float  # the greedy plan with its conversions counted
    planned_ms: float  # the planner's plan, conversions counted
    measured_ms: float | None  # the built adaptive model, timed; None when it failed
    configs_used: dict[str, int]
    plan_file: Path
    error: str | None = None

    def line(self) -> str:
        measured = f"{self.measured_ms:.3f}" if self.measured_ms else f"FAILED ({self.error})"
        ratio = f" ({self.measured_ms / self.best_single_lib_ms:.3f}x)" if self.measured_ms else ""
        return (f"{self.model} batch {self.batch_size}{' graph' if self.cuda_graph else ''}: best single "
                f"{self.best_single_lib} {self.best_single_lib_ms:.3f} ms | predicted {self.predicted_ms:.3f} | "
                f"greedy+conversions {self.greedy_ms:.3f} | planned {self.planned_ms:.3f} | measured {measured}{ratio}"
                f" | {self.configs_used}")


def config_of(measured: engine.Measurement) -> adaptive.Config:
    s = measured.settings
    return adaptive.Config(s["precision"], s.get("memory_format", "nchw"), bool(s.get("cudnn", True)))


@dataclass(frozen=True)
class Effort:
    """How much measuring: the candidates' plan and the conversion sizes (fp32 MiB) the cost model is fitted on."""
    repetitions: int = 3
    iterations: int = 20
    warmup: int = 5
    per_layer_passes: int = 3
    min_repetition_ms: float = 250.0
    conversion_mbytes: tuple[float, ...] = (0.25, 4.0, 64.0)


def run(model_name: str, batch_size: int, repo: Path, device: str, cuda_graph: bool = False,
        libs: tuple[str, ...] | None = None, effort: Effort = Effort()) -> Outcome:
    model = models.build(model_name)
    run_id = {"id": f"adaptive-{int(time.time())}", "config": "adaptive"}
    plan = engine.RunPlan(model_name, batch_size, warmup=effort.warmup, iterations=effort.iterations,
                          repetitions=effort.repetitions, profile=False, per_layer_passes=effort.per_layer_passes,
                          harness_check=False, min_repetition_ms=effort.min_repetition_ms, per_layer_method="isolated")
    reference = engine.reference_logits(model, engine.seeded_images(batch_size, 0), torch.device(device))
    medians, layer_ms, configs = {}, {}, []
    candidates = libs or CANDIDATES[device]
    progress = Progress(len(candidates) * engine.steps(plan), f"adaptive {model_name} batch {batch_size}: candidates")
    for lib in candidates:
        options = backends.Options(memory_format=backends.default_memory_format(lib), cuda_graph=cuda_graph)
        progress.start(lib)
        measured = engine.run_point(plan, backends.create(lib, options), model, reference, progress.done)
        bench.record(bench.PointRequest(plan, lib, options, repo), measured, run_id)
        if not measured.run_success or not measured.per_layer:
            print(f"  {lib}: left out ({measured.error or 'no per-layer times'})", flush=True)
            continue
        config = config_of(measured)
        medians[lib] = measured.time_ms
        configs.append(config)
        for label in {t.label for t in measured.per_layer[0]}:
            layer_ms[label, config] = point_time_ms([t.time_ms for rep in measured.per_layer for t in rep
                                                     if t.label == label])  # one time per repetition
    progress.close()
    if not configs:
        raise BadInput("candidate libs", ",".join(libs or CANDIDATES[device]), "at least one that runs here")
    conversions = adaptive.measure_conversions(configs, torch.device(device), effort.conversion_mbytes)
    return _plan_build_measure(model, plan, repo, device, cuda_graph, medians, layer_ms, (configs, conversions),
                               reference, run_id)


def _plan_build_measure(model, plan, repo, device, cuda_graph, medians, layer_ms, costs, reference, run_id):
    layers = adaptive.dataflow(model)
    configs, conversions = costs
    greedy = adaptive.greedy(layers, configs, layer_ms)
    chosen = adaptive.plan(layers, configs, layer_ms, conversions, plan.batch_size)
    best = min(medians, key=medians.get)
    data = {
        "schema": adaptive.PLAN_SCHEMA, "model": plan.model, "batch_size": plan.batch_size, "device": device,
        "cuda_graph": cuda_graph, "best_single_lib": best, "best_single_lib_ms": medians[best],
        "predicted_ms": sum(layer_ms[label, greedy[label]] for label in adaptive.labels(layers)),
        "greedy_ms": adaptive.plan_cost(layers, greedy, layer_ms, conversions, plan.batch_size),
        "planned_ms": adaptive.plan_cost(layers, chosen, layer_ms, conversions, plan.batch_size),
        "configs_used": _count(chosen), "candidates_ms": medians,
        "conversions": [{"from": str(a), "to": str(b), "fixed_ms": c.fixed_ms, "ms_per_mbyte": c.ms_per_mbyte}
                        for (a, b), c in conversions.items()],
        "plan": adaptive.plan_to_json(chosen),
    }
    data["digest"] = files.uid_of(json.dumps(data["plan"], sort_keys=True))
    entry = ckrepo.ensure_experiment_entry(repo, plan.model, "adaptive")
    path = entry / f"plan-b{plan.batch_size}{'-graph' if cuda_graph else ''}-{data['digest'][:8]}.json"
    files.write_json_atomic(path, data)
    options = backends.Options(cuda_graph=cuda_graph, plan=str(path))
    timed = engine.RunPlan(plan.model, plan.batch_size, plan.warmup, plan.iterations, plan.repetitions,
                           per_layer=False, profile=False, harness_check=False,
                           min_repetition_ms=plan.min_repetition_ms)
    measured = engine.run_point(timed, backends.create("adaptive", options), model, reference)
    bench.record(bench.PointRequest(timed, "adaptive", options, repo), measured, run_id)
    return Outcome(plan.model, plan.batch_size, cuda_graph, best, medians[best], data["predicted_ms"],
                   data["greedy_ms"], data["planned_ms"],
                   measured.time_ms, data["configs_used"], path, measured.error)


def _count(chosen: dict[str, adaptive.Config]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for config in chosen.values():
        counts[str(config)] = counts.get(str(config), 0) + 1
    return counts
