"""One point, end to end: measure, baseline, profile, diagnose, record. What every bench-* CK program runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import backends, ckrepo, engine, models, platform_info, point
from .roofline import peak_tflops
from .diagnose import Facts, conv_share, depthwise_share, diagnose, unaligned_convs
from .errors import Unsupported
from .libnames import REDUCED_PRECISIONS
from .progress import Progress


@dataclass(frozen=True)
class PointRequest:
    plan: engine.RunPlan
    lib: str
    options: backends.Options
    repo: Path  # the CK repository that receives experiment/<model>-<lib>/
    family: str | None = None


def measure_point(request: PointRequest) -> engine.Measurement:
    """Baseline first, then the point, then its kernel profile: no timed pass ever follows a profile."""
    backend = backends.create(request.lib, request.options, request.family)
    try:
        model = models.build(request.plan.model, request.plan.seed, request.plan.inputs.weights)
    except models.ModelError:
        model = None  # the session tries again and records why, as a failed point
    baseline_ms = _baseline_ms(request, backend, model)
    progress = Progress(engine.steps(request.plan), f"{request.plan.model} {request.lib} batch {request.plan.batch_size}")
    progress.start("measuring")
    try:
        result = engine.run_point(request.plan, backend, model, progress=progress.done)
    finally:
        progress.close()
    if result.run_success and backend.runs_network:
        result.diagnosis = _diagnose(result, backend, baseline_ms)
    return result


def _baseline_ms(request: PointRequest, backend, model) -> float | None:
    """fp32 (TF32 off) on cuDNN, same layout and batch, briefly timed: what a reduced precision is compared with."""
    if model is None or backend.device.type != "cuda" or backend.precision not in REDUCED_PRECISIONS:
        return None
    try:
        backend.check()
    except Unsupported:
        return None
    plan = engine.RunPlan(request.plan.model, request.plan.batch_size, warmup=3, iterations=10, repetitions=1,
                          per_layer=False, profile=False, accuracy=False, input_shape=request.plan.input_shape)
    fp32 = backends.create("torch-cudnn-fp32", backends.Options(memory_format=request.options.memory_format))
    measured = engine.run_point(plan, fp32, model)
    return measured.time_ms


def _diagnose(m: engine.Measurement, backend, baseline_ms: float | None):
    median = m.time_ms
    p = m.profile
    facts = Facts(
        precision=backend.precision, device=backend.device.type, batch_size=m.plan.batch_size,
        memory_format=m.settings.get("memory_format", "nchw"), cudnn=m.settings.get("cudnn", True),
        cudnn_benchmark=m.settings.get("cudnn_benchmark", True),
        speedup_vs_fp32=baseline_ms / median if baseline_ms else None,
        gpu_busy_share=p.busy_share(median) if p else None,
        tensor_core_share=p.tensor_core_share if p else None,
        layout_share=p.layout_share if p else None,
        elementwise_share=p.elementwise_share if p else None,
        unaligned_convs=unaligned_convs(m.layer_work), depthwise_share=depthwise_share(m.layer_work),
        conv_share=conv_share(m.model_info.get("flops_by_kind", {})),
        cpu_has_bf16=platform_info.cpu_has_bf16(),
        fused=backend.fused,
    )
    return diagnose(facts)


def record(request: PointRequest, m: engine.Measurement, sweep: dict | None = None) -> Path:
    """Validate and write the point into experiment/<model>-<lib>/ of the request's repository."""
    gpu = (m.platform or {}).get("gpu")
    data = point.from_measurement(m, peak_tflops(gpu, m.settings.get("precision", "fp32")),
                                  platform_info.repo_state(), sweep)
    ckrepo.init_repo(request.repo, ckrepo.RESULTS_ALIAS)
    entry = ckrepo.ensure_experiment_entry(request.repo, request.plan.model, request.lib)
    return ckrepo.write_point(entry, data)


def summary_line(m: engine.Measurement) -> str:
    head = f"{m.plan.model} {m.settings['lib']} batch {m.plan.batch_size}"
    if not m.run_success:
        return f"{head}: FAILED: {m.error}"
    s = m.time
    line = (f"{head}: {s.time_ms:.3f} ms/batch (repetitions spread {s.spread:.1%}{', noisy' if s.noisy else ''}), "
            f"{1e3 * m.plan.batch_size / s.time_ms:.1f} img/s")
    if m.harness:
        line += f", harness overhead {m.harness['overhead_share']:+.2%}"
    if m.per_layer:
        layer_sum = sum(t.time_ms for t in m.per_layer[0])
        line += f", per-layer sum {layer_sum:.3f} ms ({layer_sum / s.time_ms:.0%} of the timed pass)"
    if m.diagnosis:
        line += f"\n  why: {m.diagnosis.sentence}"
    return line
