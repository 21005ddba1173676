"""Measure one point: (model, backend, batch size) -> Measurement. Every backend goes through here."""
from __future__ import annotations

import gc
from dataclasses import dataclass, field

import torch

from . import measure, models, platform_info, stats
from .backends.base import Backend
from .diagnose import Diagnosis
from .errors import Unsupported


@dataclass(frozen=True)
class RunPlan:
    model: str
    batch_size: int
    warmup: int = 5
    iterations: int = 20
    repetitions: int = 3
    seed: int = 0
    per_layer: bool = True
    profile: bool = True
    accuracy: bool = True
    per_layer_passes: int = 3  # per repetition; the median is kept
    harness_check: bool = True  # also time a bare CUDA-event loop, to report our overhead (GPU only)


@dataclass
class Accuracy:
    reference: str  # what the output was compared with
    relative_error: float  # ||out - ref|| / ||ref||
    top1_agreement: float  # share of images whose arg-max class matches the reference


@dataclass
class Measurement:
    plan: RunPlan
    settings: dict
    run_success: bool
    error: str | None = None
    samples_ms: list[list[float]] = field(default_factory=list)  # [repetition][iteration]
    clock: str = ""
    memory: measure.Memory | None = None
    flops_per_image: float = 0.0
    accuracy: Accuracy | None = None
    per_layer: list[list[measure.LayerTime]] = field(default_factory=list)  # [repetition][layer]
    layer_work: list[models.LayerWork] = field(default_factory=list)
    profile: measure.KernelProfile | None = None
    diagnosis: Diagnosis | None = None
    platform: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what could not be measured, and why
    harness: dict | None = None  # our timing against a bare CUDA-event loop (GPU only)


def seeded_images(batch_size: int, seed: int, image_size: int = 224) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, image_size, image_size, generator=generator)


def reference_logits(model: torch.nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """fp32 logits with TF32 off, on `device`, in chunks so the reference never needs much memory."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False  # one pass: autotuning its algorithms would cost more than it runs
    try:
        ref_model = model.to(device)
        with torch.inference_mode():
            out = torch.cat([ref_model(chunk.to(device)).float().cpu() for chunk in images.split(64)])
        model.to("cpu")
        return out
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def compare(out: torch.Tensor, ref: torch.Tensor, reference: str) -> Accuracy:
    out = out.float().cpu()
    if not torch.isfinite(out).all():
        return Accuracy(reference, float("inf"), 0.0)
    err = float((out - ref).norm() / ref.norm().clamp_min(1e-30))
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    return Accuracy(reference, err, agree)


def run_point(plan: RunPlan, backend: Backend, model: torch.nn.Module | None = None,
              reference: torch.Tensor | None = None) -> Measurement:
    """Measure; a backend that cannot run or fails gives a failed Measurement with the reason, never a crash.

    `model` and `reference` (fp32 logits of the seeded images) may be passed in when several backends share them.
    """
    result = Measurement(plan, backend.describe(), run_success=False)
    try:
        backend.check()
        result.platform = platform_info.describe(backend.device)
        model = model if model is not None else models.build(plan.model, plan.seed)
        _measure(plan, backend, model, result, reference)
        result.run_success = True
    except Unsupported as error:
        result.error = str(error)
    except torch.cuda.OutOfMemoryError as error:
        result.error = f"out of memory at batch {plan.batch_size}: {str(error).splitlines()[0]}"
    except (RuntimeError, ValueError, TypeError, AssertionError) as error:
        result.error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    finally:
        _release(backend)
    return result


def _measure(plan: RunPlan, backend: Backend, model: torch.nn.Module, result: Measurement,
             reference: torch.Tensor | None) -> None:
    images = seeded_images(plan.batch_size, plan.seed)
    result.layer_work = models.layer_work(model)
    result.flops_per_image = sum(w.flops for w in result.layer_work if w.type in ("Conv2d", "Linear"))
    measure.reset_peak_memory(backend.device)
    backend.load(model, plan.batch_size)
    inputs = backend.prepare_input(images)
    with torch.inference_mode():
        step = lambda: backend.predict(inputs)  # noqa: E731
        timing = measure.time_iterations(step, backend.device, plan.warmup, plan.iterations, plan.repetitions)
        result.samples_ms, result.clock = timing.samples_ms, timing.clock
        if backend.device.type == "cuda" and plan.harness_check:
            result.harness = harness_overhead(step, plan.iterations, timing.samples_ms)
        result.memory = measure.read_peak_memory(backend.device)
        if plan.accuracy and backend.name != "null":
            out = backend.predict(inputs)
            ref = reference if reference is not None else reference_logits(model, images, backend.device)
            result.accuracy = compare(out, ref, "fp32 eager, TF32 off, same device")
        layered = backend.layer_model()
        if plan.per_layer and layered is None and backend.name != "null":
            result.notes.append(f"per-layer times unavailable: {backend.name} fuses layers; see its kernel profile")
        if plan.per_layer and layered is not None:
            layer_step = lambda: backend.layer_forward(inputs)  # noqa: E731
            result.per_layer = [measure.per_layer_times(layered, layer_step, backend.device, plan.per_layer_passes)
                                for _ in range(plan.repetitions)]
        if plan.profile:
            profile_loaded(backend, inputs, result)


def harness_overhead(step, iterations: int, samples_ms: list[list[float]]) -> dict:
    """Our per-iteration-event median against one event pair around a bare loop of the same steps."""
    bare_ms = measure.bare_event_loop_ms(step, iterations)
    ours_ms = stats.summarise(samples_ms).median_ms
    return {"bare_event_loop_ms": bare_ms, "harness_median_ms": ours_ms, "overhead_share": ours_ms / bare_ms - 1}


def profile_loaded(backend: Backend, inputs: object, result: Measurement) -> None:
    """Kernel profile of a loaded backend. Never time anything in this process after it (see measure.kernel_profile)."""
    try:
        with torch.inference_mode():
            result.profile = measure.kernel_profile(lambda: backend.predict(inputs), backend.device)
    except (RuntimeError, AttributeError) as error:  # the profiler is optional; the timing stands
        result.notes.append(f"kernel profile unavailable: {type(error).__name__}: {error}")


def profile_point(plan: RunPlan, backend: Backend, model: torch.nn.Module, result: Measurement) -> None:
    """A separate profiling pass for an already timed point: load again, warm up, profile."""
    if not result.run_success:
        return
    try:
        backend.load(model, plan.batch_size)
        inputs = backend.prepare_input(seeded_images(plan.batch_size, plan.seed))
        with torch.inference_mode():
            measure.time_iterations(lambda: backend.predict(inputs), backend.device, plan.warmup, 1, 1)
        profile_loaded(backend, inputs, result)
    except (RuntimeError, Unsupported) as error:
        result.notes.append(f"kernel profile failed: {type(error).__name__}: {error}")
    finally:
        _release(backend)


def _release(backend: Backend) -> None:
    for attribute in ("model", "_graph", "_static_in", "_static_out"):
        if hasattr(backend, attribute):
            setattr(backend, attribute, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
