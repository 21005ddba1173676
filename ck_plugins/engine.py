"""Measure one point: (model, backend, batch size) -> Measurement. Every backend goes through here."""
from __future__ import annotations

import gc
import hashlib
import inspect
import json
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import inputs as feeding
from . import measure, models, platform_info, stats
from .modelnames import DEFAULT_INPUT_SHAPE, shape_text
from .backends.base import Backend
from .files import write_json_atomic
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
    min_repetition_ms: float = 0.0  # > 0: iterations is a minimum, a repetition lasts at least this long
    per_layer_method: str = "hooks"  # hooks: in the running model (the seed's); isolated: each layer alone
    threads: int = 0  # > 0: torch's intra-op CPU threads for this point (torch.set_num_threads); 0: torch's default
    input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE  # one input, without the batch
    inputs: feeding.Inputs = feeding.Inputs()  # weights and images (default: random weights, noise images)


@dataclass
class Accuracy:
    reference: str  # what the output was compared with
    relative_error: float  # ||out - ref|| / ||ref||
    top1_agreement: float  # share of images whose arg-max class matches the reference
    weights: str = ""  # what the network held (inputs.describe): random, a state_dict file, pretrained
    images: str = ""  # what it was fed: noise from a seed, or a folder's files


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
    model_info: dict = field(default_factory=dict)  # source, input shape, the ONNX file's digest; FLOP by kind
    energy: dict | None = None  # GPU: the timed repetitions' energy (NVML), per image and as average power
    profile: measure.KernelProfile | None = None
    diagnosis: Diagnosis | None = None
    platform: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what could not be measured, and why; what the run shared
    harness: dict | None = None  # our timing against a bare CUDA-event loop (GPU only)
    warmup_s: float | None = None  # wall time of load and warm-up: cuDNN autotuning, compilation
    phases_s: dict[str, float] = field(default_factory=dict)  # host wall time of each stage: load, warmup, timed,
    # accuracy, per_layer, profile (the schema's phases_s), synchronised
    measured_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def time(self) -> stats.PointTime:
        """The point's time (stats.point_time: the median of the repetitions' medians) and its spread."""
        return stats.point_time(self.samples_ms)

    @property
    def time_ms(self) -> float | None:
        return self.time.time_ms if self.run_success and self.samples_ms else None


def seeded_images(batch_size: int, seed: int, input_shape=DEFAULT_INPUT_SHAPE) -> torch.Tensor:
    return feeding.images(feeding.Inputs(), batch_size, seed, input_shape)


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


class ReferenceCache:
    """fp32 references kept in a folder that processes share (a sweep's workers: one per model and device, not one
    per worker). A file is named by what the reference depends on: the model's name, weights, buffers and source
    file, the images, the device and the software; written atomically; an unreadable one is computed again."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def logits(self, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The logits kept under `key` (from key()), else compute() kept there (fp32 values round-trip JSON exactly;
        a reference that is not finite is not kept)."""
        path = self.folder / f"{key}.json"
        try:
            return torch.tensor(json.loads(path.read_text()), dtype=torch.float32)
        except (OSError, ValueError):
            pass  # not there yet, or cut short
        out = compute()
        if torch.isfinite(out).all():
            write_json_atomic(path, out.tolist(), indent=None)
        return out

    @staticmethod
    def key(model: torch.nn.Module, name: str, images: torch.Tensor, device: torch.device) -> str:
        """Host work (hashing the weights: about 0.1 s for ResNet-50), done before the device is granted."""
        digest = hashlib.sha256(name.encode())
        for label, tensor in model.state_dict().items():
            digest.update(f"{label} {tensor.dtype} {tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        digest.update(getattr(model, "sha256", "").encode())  # an ONNX file's bytes
        source = inspect.getsourcefile(type(model))
        digest.update(Path(source).read_bytes() if source else type(model).__qualname__.encode())
        digest.update(images.contiguous().numpy())
        software = (torch.__version__, torch.version.cuda, torch.backends.cudnn.version(),
                    torch.cuda.get_device_name(device) if device.type == "cuda" and torch.cuda.is_available()
                    else platform_info.cpu_model())
        digest.update(repr(software).encode())
        return digest.hexdigest()[:32]


def fed_with(model: torch.nn.Module, inputs: feeding.Inputs, seed: int) -> dict[str, str]:
    """What the network held and was fed (inputs.describe); an ONNX file holds its own weights."""
    described = dict(feeding.describe(inputs, seed))
    if isinstance(model, models.OnnxModel):
        described["weights"] = f"the ONNX file's own ({model.path.name} sha256:{model.sha256[:16]})"
    return described


def compare(out: torch.Tensor, ref: torch.Tensor, reference: str, fed: dict | None = None) -> Accuracy:
    """`out` against the fp32 reference; `fed`: what the network held and was fed (inputs.describe)."""
    out, fed = out.float().cpu(), fed or {}
    if not torch.isfinite(out).all():
        return Accuracy(reference, float("inf"), 0.0, **fed)
    err = float((out - ref).norm() / ref.norm().clamp_min(1e-30))
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    return Accuracy(reference, err, agree, **fed)


def run_point(plan: RunPlan, backend: Backend, model: torch.nn.Module | None = None,
              reference: torch.Tensor | None = None, progress=None) -> Measurement:
    """Measure; a backend that cannot run or fails gives a failed Measurement with the reason, never a crash.

    `model` and `reference` (fp32 logits of the seeded images) may be passed in when several backends share them.
    `progress(stage)` is called after the warm-up, each repetition and each per-layer pass (`steps(plan)` calls).
    """
    session = Session(plan.model, backend, plan.batch_size, plan.seed, model, reference, plan.input_shape,
                      inputs=plan.inputs)
    session.progress = progress
    try:
        return session.measure(plan)
    finally:
        session.close()


class Session:
    """One backend measured at several batch sizes of one model, in one process (what a sweep worker does).

    The model is built and its work counted once; the seeded images are drawn once for the largest batch (a
    batch of b is their first b, as drawing b would give); the fp32 reference is computed once, when first
    needed (or read from `references`, where another process computed it); and a backend whose load does not
    depend on the batch size is loaded once.
    """

    def __init__(self, model_name: str, backend: Backend, max_batch: int, seed: int = 0,
                 model: torch.nn.Module | None = None, reference: torch.Tensor | None = None,
                 input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE, references: ReferenceCache | None = None,
                 inputs: feeding.Inputs = feeding.Inputs()):
        self.backend, self.max_batch, self.references, self.inputs = backend, max_batch, references, inputs
        self.model_name, self.seed, self.input_shape = model_name, seed, tuple(input_shape)
        self._model, self._reference = model, reference
        self._images: torch.Tensor | None = None
        self._work: models.ModelWork | None = None
        self._host_error: models.ModelError | None = None
        self._host_prepared = False  # the backend's prepare_host() done
        self._reference_key: str | None = None  # the reference's name in `references`
        self._loaded_batch: int | None = None
        self.progress = None  # called between timed repetitions: see run_point

    def measure(self, plan: RunPlan) -> Measurement:
        """The expected failures (cannot run here, out of memory, a runtime error of the library) become a failed
        Measurement with the reason; anything else is a bug and is raised."""
        if (plan.batch_size > self.max_batch or plan.seed != self.seed or plan.model != self.model_name
                or tuple(plan.input_shape) != self.input_shape or plan.inputs != self.inputs):
            raise ValueError(f"plan {plan.model} batch {plan.batch_size} seed {plan.seed} input "
                             f"{shape_text(plan.input_shape)} is outside this session ({self.model_name}, batch <= "
                             f"{self.max_batch}, seed {self.seed}, input {shape_text(self.input_shape)})")
        result = Measurement(plan, self.backend.describe(), run_success=False)
        try:
            self.backend.check()
            if plan.threads:
                torch.set_num_threads(plan.threads)  # before the platform is read: it records the count
            result.platform = {**platform_info.describe(self.backend.device), "backend_version": self.backend.version()}
            self._measure(plan, result)
            result.run_success = True
        except Unsupported as error:
            result.error = str(error)
        except torch.cuda.OutOfMemoryError as error:
            result.error = f"out of memory at batch {plan.batch_size}: {str(error).splitlines()[0]}"
        except RuntimeError as error:  # torch's, Triton's, ONNX Runtime's and TensorRT's errors
            result.error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if not result.run_success:
            self.close()  # whatever failed may have left the backend half-loaded: the next plan loads again
        return result

    def close(self) -> None:
        self._loaded_batch = None
        _release(self.backend)

    def prepare_host(self) -> None:
        """What needs no device: the backend's host work (imports), build the model, count its work (its first
        forward pass), draw the images, name the reference in `references`. A model that cannot be built or run at
        this input shape is kept as the error each of its points will record."""
        if not self._host_prepared:
            self.backend.prepare_host()
            self._host_prepared = True
        try:
            if self._model is None:
                self._model = models.build(self.model_name, self.seed, self.inputs.weights)
            if self._work is None:
                self._work = models.check_forward(self._model, self.model_name, self.input_shape)
        except models.ModelError as error:
            self._host_error = error
        if self._images is None:
            self._images = feeding.images(self.inputs, self.max_batch, self.seed, self.input_shape)
        if self.references and self._reference is None and self._reference_key is None and not self._host_error:
            self._reference_key = ReferenceCache.key(self._model, self.model_name, self._images, self.backend.device)

    def sibling(self, backend: Backend) -> "Session":
        """A session of another backend over the same model, batch sizes and images, sharing this one's host work
        (the model, its work, the images, the reference's name): a worker measuring several libs does it once."""
        self.prepare_host()
        other = Session(self.model_name, backend, self.max_batch, self.seed, self._model, self._reference,
                        self.input_shape, self.references, self.inputs)
        other._work, other._images, other._host_error = self._work, self._images, self._host_error
        other._reference_key = self._reference_key
        other.prepare_host()
        return other

    def prepare_ahead(self, batch_size: int):
        """After prepare_host(), what the backend can do for the first batch before the device is granted, launching
        no kernel: load (the weights copied, where the backend `loads_ahead`) and compile. Returns the backend's
        handle, whose go(), once the device is ours, finishes that first call there; or None where there is nothing
        more to do ahead. Expected failures are left for measure() to report."""
        if not self.backend.loads_ahead:
            return None
        try:
            self.backend.check()
            images = self._load(batch_size)
            if type(self.backend).compile_ahead is Backend.compile_ahead:
                return None
            inputs = self.backend.prepare_input(images)
        except (Unsupported, models.ModelError, RuntimeError):
            self.close()
            return None
        return self.backend.compile_ahead(inputs)

    def _load(self, batch_size: int) -> torch.Tensor:
        """The backend loaded for `batch_size` (once for a batch-agnostic one); the images of that batch."""
        self.prepare_host()
        if self._host_error is not None:
            raise self._host_error
        if isinstance(self._model, models.OnnxModel) and not self.backend.runs_onnx:
            raise Unsupported(f"{self.backend.name}: an ONNX file ({self.model_name}) runs only through the "
                              "onnxruntime libs")
        if self._loaded_batch is None or (self._loaded_batch != batch_size and not self.backend.batch_agnostic):
            self._loaded_batch = None
            _release(self.backend)
            self.backend.input_shape = self.input_shape
            self.backend.load(self._model, batch_size)
            self._loaded_batch = batch_size
        return self._images[:batch_size]

    def _reference_for(self, batch_size: int) -> torch.Tensor:
        if self._reference is None or len(self._reference) < batch_size:
            compute = lambda: reference_logits(self._model, self._images, self.backend.device)  # noqa: E731
            self._reference = self.references.logits(self._reference_key, compute) if self._reference_key else compute()
        return self._reference[:batch_size]

    def _measure(self, plan: RunPlan, result: Measurement) -> None:
        backend, clock = self.backend, measure.PhaseClock(result.phases_s)
        measure.reset_peak_memory(backend.device)
        images = self._load(plan.batch_size)
        result.layer_work, result.flops_per_image = self._work.layers, self._work.flops_per_image
        result.model_info = model_info(self._model, self.model_name, self.input_shape, self._work)
        inputs = backend.prepare_input(images)
        result.settings = backend.describe()  # again once loaded: what load() decided (cudnn-graph's torch blocks)
        clock.done("load")
        with torch.inference_mode():
            step = lambda: backend.predict(inputs)  # noqa: E731
            timing = measure.time_iterations(step, backend.device, plan.warmup, plan.iterations, plan.repetitions,
                                             plan.min_repetition_ms, self.progress)
            result.samples_ms, result.clock = timing.samples_ms, timing.clock
            result.energy = energy_per_image(timing.energy, plan.batch_size, timing.samples_ms)
            result.phases_s["warmup"] = timing.warmup_s
            result.warmup_s = result.phases_s["load"] + timing.warmup_s
            if backend.device.type == "cuda" and plan.harness_check:
                result.harness = harness_overhead(step, plan.iterations, timing.samples_ms)
            result.memory = measure.read_peak_memory(backend.device)
            clock.done("timed", minus=timing.warmup_s)
            if plan.accuracy and backend.runs_network:
                out = backend.predict(inputs)
                result.accuracy = compare(out, self._reference_for(plan.batch_size), "fp32 eager, TF32 off, same device",
                                          fed_with(self._model, self.inputs, self.seed))
                clock.done("accuracy")
            self._per_layer(plan, inputs, result)
            clock.done("per_layer")
            if plan.profile:
                profile_loaded(backend, inputs, result)
                clock.done("profile")

    def _per_layer(self, plan: RunPlan, inputs, result: Measurement) -> None:
        backend = self.backend
        if not plan.per_layer or not backend.runs_network:
            return
        layered = backend.layer_model()
        if layered is None:
            result.notes.append(f"per-layer times unavailable: {backend.name} fuses layers; see its kernel profile")
            return
        if backend.layer_note:
            result.notes.append(backend.layer_note)
        layer_step = lambda: backend.layer_forward(inputs)  # noqa: E731
        labels = [w.label for w in self._work.layers]
        done = self.progress or (lambda _stage: None)
        result.per_layer = []
        for index in range(plan.repetitions):
            if plan.per_layer_method == "isolated":
                result.per_layer.append(measure.isolated_layer_times(layered, layer_step, backend.device,
                                                                     plan.iterations, labels))
            else:
                result.per_layer.append(measure.per_layer_times(layered, layer_step, backend.device,
                                                                plan.per_layer_passes, labels))
            done(f"per-layer pass {index + 1}/{plan.repetitions}")


def model_info(model: torch.nn.Module, name: str, input_shape, work: models.ModelWork) -> dict:
    from .modelnames import parse

    info = {"source": parse(name).source, "input_shape": list(input_shape),
            "flops_by_kind": {k: v for k, v in work.flops_by_kind.items() if v}}
    if isinstance(model, models.OnnxModel):
        info["sha256"] = model.sha256
    return info


ENERGY_MIN_WINDOW_MS = 500.0  # five updates of NVML's energy counter (every 100 ms on an H200)


def energy_per_image(energy: measure.Energy | None, batch_size: int, samples_ms: list[list[float]]) -> dict | None:
    """The timed repetitions' energy per image and average power. NVML updates its counter every few tens of ms:
    a window shorter than ENERGY_MIN_WINDOW_MS is flagged coarse (ask for a longer one: min_repetition_ms)."""
    if energy is None:
        return None
    images = batch_size * sum(len(s) for s in samples_ms)
    return {"joules_per_image": energy.joules / images, "average_power_w": energy.joules / (energy.window_ms / 1e3),
            "joules": energy.joules, "window_ms": energy.window_ms, "images": images,
            "coarse": energy.window_ms < ENERGY_MIN_WINDOW_MS, "counter": "nvml total energy consumption"}



def steps(plan: RunPlan) -> int:
    """How many times run_point calls `progress` for this plan (when it succeeds)."""
    return 1 + plan.repetitions + (plan.repetitions if plan.per_layer else 0)


def harness_overhead(step, iterations: int, samples_ms: list[list[float]]) -> dict:
    """Our per-iteration-event median against one event pair around a bare loop of the same steps."""
    bare_ms = measure.bare_event_loop_ms(step, iterations)
    ours_ms = stats.point_time(samples_ms).time_ms
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
        inputs = backend.prepare_input(feeding.images(plan.inputs, plan.batch_size, plan.seed, plan.input_shape))
        with torch.inference_mode():
            measure.time_iterations(lambda: backend.predict(inputs), backend.device, plan.warmup, 1, 1)
        profile_loaded(backend, inputs, result)
    except (RuntimeError, Unsupported) as error:
        result.notes.append(f"kernel profile failed: {type(error).__name__}: {error}")
    finally:
        _release(backend)


def _release(backend: Backend) -> None:
    backend.unload()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
