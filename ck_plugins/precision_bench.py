"""`precision-bench`: one network (any name models accepts) at every precision and layout, with the reasons
printed; `resnet-fp16`, the seed's ResNet-50 tensor-core benchmark done right, is its ResNet-50 shortcut.

Every precision (fp32 with TF32 off, tf32, autocast fp16, fp16, bf16) in NCHW and channels_last, with
cudnn.benchmark on, warmed up, timed with CUDA events (host clock with synchronisation on a CPU). With a
repository to record into, every mode is also a CK experiment point.
"""
from __future__ import annotations

from pathlib import Path

from dataclasses import dataclass, replace

import torch

from . import backends, engine, models, platform_info
from . import inputs as feeding
from .modelnames import DEFAULT_INPUT_SHAPE
from .backends.base import MEMORY_FORMATS
from .backends.onnxrt import OnnxRuntimeBackend
from .diagnose import Facts, conv_share, depthwise_share, diagnose, unaligned_convs
from .errors import BadInput, check_choice
from .progress import Progress

PRECISION_ORDER = ("fp32", "tf32", "amp", "fp16", "bf16")
CPU_PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
LIB_OF = {"fp32": "torch-cudnn-fp32", "tf32": "torch-cudnn-tf32", "amp": "torch-amp", "fp16": "torch-cudnn-fp16",
          "bf16": "torch-cudnn-bf16"}


@dataclass(frozen=True)
class Mode:
    precision: str
    memory_format: str

    @property
    def label(self) -> str:
        return f"{self.precision} {self.memory_format}"


def resolve_device(name: str) -> torch.device:
    check_choice("device", name, DEVICES)
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("device", name, "'cpu' or 'auto': this machine has no CUDA GPU (torch.cuda.is_available() is False)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def parse_modes(precisions: str) -> list[str]:
    chosen = [p.strip() for p in precisions.split(",") if p.strip()] if precisions not in ("", "all") else list(PRECISION_ORDER)
    for p in chosen:
        check_choice("precision", p, PRECISION_ORDER)
    return ["fp32"] + [p for p in chosen if p != "fp32"]  # fp32 is the baseline every speed-up needs


DISPLAY = {"resnet50": "ResNet-50", "alexnet": "AlexNet", "googlenet": "GoogLeNet", "squeezenet-1.0": "SqueezeNet 1.0",
           "squeezenet-1.1": "SqueezeNet 1.1"}
BRIEF = {"warmup": 1, "iterations": 2, "repetitions": 1}  # what a CPU that emulates bf16 gets: enough to show it


@dataclass(frozen=True)
class Request:
    model: str
    batch_size: int
    device: torch.device
    precisions: list[str]
    warmup: int = 5
    iterations: int = 20
    repetitions: int = 3
    input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE
    min_repetition_ms: float = 0.0  # > 0: repetitions last at least this long (what an exact energy figure needs)
    inputs: feeding.Inputs = feeding.Inputs()  # the weights and images (default: random weights, noise)


def run(request: Request) -> tuple[dict, list[engine.Measurement]]:
    """The table's data, and the measurements (to record as points)."""
    batch_size, device, precisions = request.batch_size, request.device, request.precisions
    runnable = precisions if device.type == "cuda" else [p for p in precisions if p in CPU_PRECISIONS]
    skipped = [{"mode": p, "reason": f"{p} needs a CUDA GPU; this run is on the CPU"} for p in precisions
               if p not in runnable]
    plan = engine.RunPlan(request.model, batch_size, request.warmup, request.iterations, request.repetitions,
                          per_layer=False, profile=False, input_shape=request.input_shape,
                          min_repetition_ms=request.min_repetition_ms, inputs=request.inputs)
    model, failed = _model(request)  # weights that do not fit are a BadInput before anything is drawn
    if failed:
        return _result(request, [], [], skipped, failed), []
    onnx = isinstance(model, models.OnnxModel)
    if onnx:  # the file runs as it is, in ONNX Runtime: one mode
        runnable, skipped = ["fp32"], skipped + [
            {"mode": p, "reason": f"{p}: an ONNX file runs as it is in ONNX Runtime (fp32 here); export or convert "
                                  "the file in that precision to measure it"} for p in runnable if p != "fp32"]
    modes = [Mode(p, f) for p in runnable for f in (("as exported",) if onnx else MEMORY_FORMATS)]
    plans = [_plan_for(mode, plan, device) for mode in modes]
    progress = Progress(1 + sum(engine.steps(p) for p in plans), f"{request.model} batch {batch_size} on {device.type}")
    progress.start("fp32 reference")
    images = feeding.images(request.inputs, batch_size, plan.seed, request.input_shape)
    reference = engine.reference_logits(model, images, device)
    progress.done("done")
    libs = [OnnxRuntimeBackend(device=device.type) if onnx else  # the registry's onnxruntime is the CPU's only
            backends.create(_lib(m.precision, device), backends.Options(memory_format=m.memory_format)) for m in modes]
    measured = []
    for mode, mode_plan, backend in zip(modes, plans, libs):  # every timed pass first,
        progress.start(mode.label + (" (brief: this CPU emulates bf16)" if mode_plan is not plan else ""))
        measured.append(engine.run_point(mode_plan, backend, model, reference, progress.done))
    progress.close()
    if device.type == "cuda":  # then the kernel profiles (they slow what follows); a CPU run has none
        for mode_plan, backend, point in zip(plans, libs, measured):
            engine.profile_point(mode_plan, backend, model, point)
    rows = [_row(mode, point) for mode, point in zip(modes, measured)]
    for mode_plan, row in zip(plans, rows):
        if mode_plan is not plan:
            row["notes"] = row.get("notes", []) + [f"measured briefly ({mode_plan.repetitions}x{mode_plan.iterations} "
                                                   "iterations): this CPU has no bf16 instructions and emulates it"]
    _add_speedups_and_reasons(rows, measured, device, batch_size, [backend.fused for backend in libs])
    return _result(request, rows, measured, skipped, model=model), measured


def _model(request: Request) -> tuple[torch.nn.Module | None, str | None]:
    """The model, checked by one forward pass at the input shape; or the reason it cannot be measured."""
    try:
        model = models.build(request.model, 0, request.inputs.weights)
        models.check_forward(model, request.model, request.input_shape)
        if isinstance(model, models.OnnxModel):
            model.check_batch(request.batch_size)
        return model, None
    except models.ModelError as error:
        return None, str(error)


def _result(request: Request, rows: list[dict], measured: list, skipped: list, error: str | None = None,
            model: torch.nn.Module | None = None) -> dict:
    return {"program": "precision-bench", "model": request.model, "input_shape": list(request.input_shape),
            "batch_size": request.batch_size, "device": request.device.type,
            "measured_at": measured[0].measured_at if measured else None, "warmup": request.warmup,
            "iterations": request.iterations, "repetitions": request.repetitions,
            "platform": platform_info.describe(request.device), "repo": platform_info.repo_state(),
            "inputs": engine.fed_with(model, request.inputs, 0),
            "real_weights": request.inputs.real_weights or isinstance(model, models.OnnxModel),
            "modes": rows, "skipped": skipped, "error": error}


def _plan_for(mode: Mode, plan: engine.RunPlan, device: torch.device) -> engine.RunPlan:
    """The plan as asked, except bf16 on a CPU that emulates it: measured briefly (it is 10-50x slower)."""
    if device.type == "cpu" and mode.precision == "bf16" and not platform_info.cpu_has_bf16():
        return replace(plan, **{k: min(v, getattr(plan, k)) for k, v in BRIEF.items()})
    return plan


def _lib(precision: str, device: torch.device) -> str:
    return LIB_OF[precision] if device.type == "cuda" else f"torch-cpu-{precision}".replace("-fp32", "")


def _row(mode: Mode, m: engine.Measurement) -> dict:
    row = {"precision": mode.precision, "memory_format": mode.memory_format, "lib": m.settings["lib"],
           "run_success": m.run_success, "error": m.error}
    if not m.run_success:
        return row
    summary = m.time
    row.update(time_ms=summary.time_ms, time_ms_spread=summary.spread, noisy=summary.noisy,
               images_per_second=1e3 * m.plan.batch_size / summary.time_ms,
               time_fw_ms_all=m.samples_ms, clock=m.clock,
               memory_mbytes=m.memory.peak_allocated_mbytes if m.memory.peak_allocated_mbytes is not None
               else m.memory.peak_rss_mbytes,
               relative_error=m.accuracy.relative_error, top1_agreement=m.accuracy.top1_agreement, notes=m.notes)
    if m.energy:
        row.update(joules_per_image=m.energy["joules_per_image"], average_power_w=m.energy["average_power_w"],
                   energy_coarse=m.energy["coarse"])
    if m.profile is not None:
        row.update(gpu_busy_share=m.profile.busy_share(summary.time_ms), tensor_core_share=m.profile.tensor_core_share,
                   layout_share=m.profile.layout_share, elementwise_share=m.profile.elementwise_share,
                   top_kernels=m.profile.top_kernels)
    return row


def _add_speedups_and_reasons(rows: list[dict], measured: list, device: torch.device, batch_size: int,
                              fused: list[bool]) -> None:
    def time_of(precision: str, memory_format: str) -> float | None:
        for r in rows:
            if r["precision"] == precision and r["memory_format"] == memory_format and r["run_success"]:
                return r["time_ms"]
        return None

    baseline = time_of("fp32", "nchw") or next((r["time_ms"] for r in rows if r["precision"] == "fp32"
                                                and r["run_success"]), None)  # an ONNX file: fp32 as exported
    unaligned = unaligned_convs(measured[0].layer_work) if measured else []
    has_bf16 = platform_info.cpu_has_bf16()
    depthwise = depthwise_share(measured[0].layer_work) if measured else 0.0
    for r, m, layers_fused in zip(rows, measured, fused):
        if not r["run_success"]:
            r["diagnosis"] = f"{r['precision']} {r['memory_format']} failed: {r['error']}"
            continue
        tf32 = time_of("tf32", r["memory_format"])
        r["speedup_vs_fp32"] = baseline / r["time_ms"] if baseline else None
        facts = Facts(r["precision"], device.type, batch_size, r["memory_format"],
                      speedup_vs_fp32=r["speedup_vs_fp32"],
                      speedup_vs_tf32=tf32 / r["time_ms"] if tf32 else None,
                      gpu_busy_share=r.get("gpu_busy_share"), tensor_core_share=r.get("tensor_core_share"),
                      layout_share=r.get("layout_share"), elementwise_share=r.get("elementwise_share"),
                      unaligned_convs=unaligned, cpu_has_bf16=has_bf16, depthwise_share=depthwise,
                      conv_share=conv_share(m.model_info.get("flops_by_kind", {})),
                      fused=layers_fused)
        m.diagnosis = diagnose(facts)
        r["diagnosis"], r["reasons"] = m.diagnosis.sentence, m.diagnosis.reasons


def summary_table(result: dict) -> str:
    """The seed's table (precision, execution time, throughput, speed-up), then one 'why' line per mode."""
    name = DISPLAY.get(result["model"], result["model"])
    lines = [f"{name}, batch {result['batch_size']}, {result['device']}"
             f" ({result['platform'].get('gpu') or result['platform']['cpu']}), median of "
             f"{result['repetitions']}x{result['iterations']} iterations after {result['warmup']} warm-up"]
    if result.get("error"):
        return "\n".join(lines + ["", f"not measured: {result['error']}"])
    energy = any("joules_per_image" in r for r in result["modes"])
    real = result.get("real_weights", False)
    lines += ["", "| Precision | Layout | Execution time (ms/batch) | Throughput (img/s) | Speed-up vs fp32 | "
              + ("Top-1 agreement, logit error vs fp32 |" if real else "Logit error vs fp32 |")
              + (" Energy (mJ/img) | Power (W) |" if energy else ""),
              "|:---|:---|---:|---:|---:|---:|" + ("---:|---:|" if energy else "")]
    for r in result["modes"]:
        if r["run_success"]:
            noisy = " (noisy)" if r["noisy"] else ""
            noisy += " (brief)" if any("measured briefly" in n for n in r.get("notes", [])) else ""
            line = (f"| {r['precision']} | {r['memory_format']} | {r['time_ms']:.3f}{noisy} | "
                    f"{r['images_per_second']:.1f} | {r['speedup_vs_fp32']:.2f} | {_accuracy_cell(r, real)} |")
            if energy and "joules_per_image" in r:
                coarse = " (coarse)" if r["energy_coarse"] else ""
                line += f" {1e3 * r['joules_per_image']:.3f}{coarse} | {r['average_power_w']:.0f} |"
            elif energy:
                line += " - | - |"
            lines.append(line)
        else:
            lines.append(f"| {r['precision']} | {r['memory_format']} | failed | - | - | - |" + (" - | - |" if energy else ""))
    lines += ["", accuracy_note(result), "", "Why:"] + [f"- {r['diagnosis']}" for r in result["modes"]]
    lines += [f"- {s['mode']}: not run ({s['reason']})" for s in result["skipped"]]
    return "\n".join(lines)


def _accuracy_cell(row: dict, real: bool) -> str:
    error = f"{row['relative_error']:.1e}"
    return f"{100 * row['top1_agreement']:.1f}%, {error}" if real else error


def accuracy_note(result: dict) -> str:
    """What the accuracy column means for these inputs: top-1 agreement only where the weights are real."""
    fed = result.get("inputs") or {}
    if result.get("real_weights"):
        return (f"Accuracy: each mode's output against fp32 (TF32 off) on {fed.get('images', 'the images')}, "
                f"weights {fed.get('weights', 'given')}.")
    return ("Accuracy: the logit error against fp32 only. Top-1 agreement is not shown: with random weights a network "
            "gives nearly the same class for every input, so it would agree trivially; pass --weights FILE (a "
            "state_dict) or CK_PRETRAINED=true, and --images DIR, for a real check.")


def shipped_gpu_tables(root: Path | None = None) -> str:
    """On a machine without a GPU: the same benchmark as measured on the GPUs whose results this repository (or
    `root`) ships in docs/results/<gpu>/resnet-fp16-bs*.json."""
    import json

    from .files import REPO_ROOT

    root = root or REPO_ROOT
    lines = []
    for path in sorted((root / "docs" / "results").glob("*/resnet-fp16-bs*.json"), key=_by_batch):
        result = json.loads(path.read_text())
        modes = [m for m in result["modes"] if m["run_success"]]
        if not modes:
            continue
        best = max(modes, key=lambda m: m["images_per_second"])
        half = next((m for m in modes if m["precision"] == "fp16" and m["memory_format"] == "channels_last"), None)
        lines.append(f"  {result['platform'].get('gpu')}, batch {result['batch_size']}: fastest {best['precision']} "
                     f"{best['memory_format']} {best['images_per_second']:.1f} img/s ({best['speedup_vs_fp32']:.2f}x fp32)"
                     + (f"; fp16 channels_last {half['speedup_vs_fp32']:.2f}x fp32" if half and half is not best else ""))
    if not lines:
        return ""
    return ("\nNo GPU here. The same benchmark on the GPUs this repository has results from "
            "(docs/results/<gpu>/resnet-fp16-bs*.json):" + "".join("\n" + line for line in lines))


def _by_batch(path: Path):
    digits = "".join(c for c in path.stem.rsplit("bs", 1)[-1] if c.isdigit())
    return path.parent.name, int(digits or 0)


def record(measured: list[engine.Measurement], repo: Path) -> list[Path]:
    """Every mode as a CK experiment point of its lib (experiment/<model>-<lib>/), failed ones included."""
    from . import bench

    paths = []
    for m in measured:
        options = backends.Options(memory_format=m.settings.get("memory_format", "nchw"))
        paths.append(bench.record(bench.PointRequest(m.plan, m.settings["lib"], options, repo), m))
    return paths
