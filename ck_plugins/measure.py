"""All timing lives here: warm-up, synchronisation, CUDA events, per-layer passes, kernel profiles, memory.

Raw per-iteration samples are returned; statistics are derived elsewhere (stats.py).
"""
from __future__ import annotations

import contextlib
import gc
import math
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .models import leaves


@dataclass
class Energy:
    joules: float  # the GPU's energy counter's increase over the timed repetitions (NVML, board energy)
    window_ms: float  # host wall time between the two readings, synchronised


@dataclass
class Timing:
    samples_ms: list[list[float]]  # [repetition][iteration], milliseconds per batch
    clock: str  # "cuda-events" or "host-perf-counter"
    warmup_s: float = 0.0  # host wall time of the warm-up, synchronised (cuDNN autotuning, compilation)
    energy: Energy | None = None  # GPU with NVML's energy counter only


MAX_ITERATIONS = 10_000
SIZING_STEPS = 3  # steps timed together to size a repetition: the warm-up's last ones where it has enough


def now_s() -> float:
    """The host clock in seconds (perf_counter); the one place tests replace with a fake clock."""
    return _host_clock()


_host_clock = time.perf_counter


class PhaseClock:
    """Host wall time of consecutive stages into `phases`: each done(name) closes the stage begun by the last, less
    `minus` (what was counted elsewhere). `phases` may be swapped between stages (a sweep's worker keeps a dict per
    point while its clock runs on)."""

    def __init__(self, phases: dict[str, float]):
        self.phases, self.last = phases, now_s()

    def done(self, name: str, minus: float = 0.0) -> None:
        now = now_s()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last - minus
        self.last = now


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def open_device(device: torch.device) -> None:
    """Create the CUDA context now (a few hundred ms per process) without launching a kernel: a sweep's next worker
    does it while the previous one measures. Nothing where CUDA cannot run: measuring says why."""
    if device.type == "cuda" and torch.cuda.is_available():
        try:
            torch.empty(1, device=device)  # an allocation, no kernel
        except RuntimeError:
            pass


def time_iterations(step: Callable[[], object], device: torch.device, warmup: int, iterations: int,
                    repetitions: int, min_repetition_ms: float = 0.0,
                    done: Callable[[str], None] | None = None) -> Timing:
    """Run `step` warmup times, then repetitions x iterations timed one by one.

    On a GPU each iteration is bracketed by CUDA events recorded on the current stream, with no host
    synchronisation between iterations (so the launch queue stays full); on the CPU by perf_counter.
    With `min_repetition_ms`, `iterations` is a minimum: a repetition runs as many iterations as fill that time,
    estimated (as timeit's autorange) from the warm-up's last SIZING_STEPS steps, timed together after a
    synchronisation (never its first step, which autotunes and compiles), or from as many extra steps where the
    warm-up has only one; at most MAX_ITERATIONS.
    `done` (progress) is called after the warm-up and after each repetition, never inside a timed repetition.
    Python's garbage collector is paused from the sizing steps to the last repetition (see _collector_paused).
    """
    done = done or (lambda _stage: None)
    sizing = min(SIZING_STEPS, warmup - 1) if min_repetition_ms > 0 else 0  # never the first: it autotunes
    start = now_s()
    for _ in range(warmup - sizing):
        step()
    _sync(device)
    with _collector_paused():
        sized = now_s()
        for _ in range(sizing):
            step()
        _sync(device)
        warmup_s = now_s() - start
        done("warm-up")
        if min_repetition_ms > 0:
            per_step_ms = (start + warmup_s - sized) * 1e3 / sizing if sizing else _per_step_ms(step, device)
            iterations = max(iterations, min(MAX_ITERATIONS, math.ceil(min_repetition_ms / max(per_step_ms, 1e-3))))
        samples, energy = _repetitions(step, device, iterations, repetitions, done)
    return Timing(samples, "cuda-events" if device.type == "cuda" else "host-perf-counter", warmup_s, energy)


def _repetitions(step, device: torch.device, iterations: int, repetitions: int, done) -> tuple:
    """The timed repetitions' samples, and the GPU energy they took where NVML can tell."""
    timed = _time_cuda if device.type == "cuda" else _time_host
    meter = energy_meter(device)
    opened = (meter(), now_s()) if meter else None
    samples = []
    for index in range(repetitions):
        samples.append(timed(step, iterations))
        done(f"repetition {index + 1}/{repetitions}")
    energy = None
    if opened:
        _sync(device)
        energy = Energy((meter() - opened[0]) / 1e3, (now_s() - opened[1]) * 1e3)
    return samples, energy


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while steps are sized and timed, as timeit does: a collection in the
    middle of a repetition stalls the launches (a full one scans every object of torch: 0.1-0.2 s). The untimed
    warm-up steps before keep it on (a compilation makes much garbage)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def energy_meter(device: torch.device) -> Callable[[], float] | None:
    """A reader of the GPU's total energy counter in millijoules (NVML, as optimum-benchmark reads it), or None
    on a CPU, without nvidia-ml-py, or where the GPU has no such counter (before Volta)."""
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        props = torch.cuda.get_device_properties(device)
        bus_id = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
        handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus_id)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:  # pynvml's NVMLError and ImportError, older torch without the PCI fields
        return None
    return lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))


def _per_step_ms(step, device: torch.device) -> float:
    """A step's time from SIZING_STEPS synchronised steps, where the warm-up was too short to give it."""
    start = now_s()
    for _ in range(SIZING_STEPS):
        step()
    _sync(device)
    return (now_s() - start) * 1e3 / SIZING_STEPS


def _time_cuda(step, iterations: int) -> list[float]:
    events = [torch.cuda.Event(enable_timing=True) for _ in range(iterations + 1)]
    events[0].record()
    for i in range(iterations):
        step()
        events[i + 1].record()
    events[-1].synchronize()
    return [events[i].elapsed_time(events[i + 1]) for i in range(iterations)]


def _time_host(step, iterations: int) -> list[float]:
    out = []
    for _ in range(iterations):
        start = now_s()
        step()
        out.append((now_s() - start) * 1e3)
    return out


def bare_event_loop_ms(step: Callable[[], object], iterations: int) -> float:
    """One CUDA-event pair around `iterations` steps: the plainest GPU timing, to measure our overhead against."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iterations


# ---------------------------------------------------------------------------------------------- memory
@dataclass
class Memory:
    peak_allocated_mbytes: float | None  # GPU: torch's max_memory_allocated
    peak_reserved_mbytes: float | None  # GPU: torch's max_memory_reserved (what nvidia-smi would show)
    peak_rss_mbytes: float  # the process's peak resident set size since the point's measurement began (Linux;
    # elsewhere since the process began): CPU memory, model and inputs included


def reset_peak_memory(device: torch.device) -> None:
    """Start a point's peak memory from now: the GPU's counters, and on Linux the process's peak RSS (VmHWM), so
    that each point on a CPU reports its own peak rather than the largest of the process so far."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets the peak RSS (Linux 4.0+)
    except OSError:
        pass


def read_peak_memory(device: torch.device) -> Memory:
    rss = _peak_rss_mbytes()
    if device.type != "cuda":
        return Memory(None, None, rss)
    return Memory(torch.cuda.max_memory_allocated(device) / 2**20, torch.cuda.max_memory_reserved(device) / 2**20, rss)


def _peak_rss_mbytes() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------ per layer
@dataclass
class LayerTime:
    label: str
    type: str
    time_ms: float


def layer_modules(model: nn.Module, labels: list[str] | None = None) -> list[tuple[str, nn.Module]]:
    """The layers to time: those named (from the work counter, which finds them in any network), else the leaves."""
    if labels is None:
        return leaves(model)
    found = []
    for label in labels:
        try:
            found.append((label, model.get_submodule(label)))
        except AttributeError:  # folded away (a batch norm folded into its convolution)
            continue
    return found


def per_layer_times(model: nn.Module, step: Callable[[], object], device: torch.device,
                    passes: int = 3, labels: list[str] | None = None) -> list[LayerTime]:
    """Forward time of every leaf module, from hooks, in a pass separate from the timed one.

    Each pass brackets every call of every leaf with events (CUDA) or perf_counter (CPU), summing the calls
    of a module run more than once (a Bottleneck's ReLU); the median over `passes` is kept. Work outside the layers
    (residual additions, concatenations, flatten) is not attributed.
    """
    labelled = layer_modules(model, labels)
    per_pass: list[list[float]] = []
    for _ in range(passes):
        marks: dict[str, list] = {}
        handles = []
        for label, module in labelled:
            handles.append(module.register_forward_pre_hook(_mark(marks, label, 0, device)))
            handles.append(module.register_forward_hook(_mark(marks, label, 1, device)))
        _hooked_pass(handles, step, device)
        per_pass.append([_elapsed_ms(marks.get(label), device) for label, _ in labelled])
    result = []
    for index, (label, module) in enumerate(labelled):
        values = sorted(p[index] for p in per_pass)
        result.append(LayerTime(label, type(module).__name__, values[len(values) // 2]))
    return result


def isolated_layer_times(model: nn.Module, step: Callable[[], object], device: torch.device,
                         replays: int = 20, labels: list[str] | None = None) -> list[LayerTime]:
    """Forward time of every leaf module run alone on the input it received, without the hooks' distortion.

    One pass records every call's inputs; then each call is timed by itself: on a GPU, `replays` copies of it
    captured in one CUDA graph and replayed between two events (pure device time, no launch gaps), on a CPU
    by perf_counter over `replays` runs. A module called more than once gets the sum of its calls.
    """
    labelled = layer_modules(model, labels)
    calls: list[tuple[str, nn.Module, tuple]] = []
    _hooked_pass([module.register_forward_hook(_recorder(calls, label)) for label, module in labelled], step, device)
    totals: dict[str, float] = {}
    for label, module, args in calls:
        totals[label] = totals.get(label, 0.0) + _alone_ms(module, args, device, replays)
    return [LayerTime(label, type(module).__name__, totals.get(label, 0.0)) for label, module in labelled]


def _hooked_pass(handles: list, step: Callable[[], object], device: torch.device) -> None:
    """One synchronised pass of `step` with the hooks in place; the hooks are removed whatever happens."""
    try:
        step()
        _sync(device)
    finally:
        for handle in handles:
            handle.remove()


def _recorder(calls: list, label: str):
    def hook(module, args, _output):
        calls.append((label, module, tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)))
    return hook


def _alone_ms(module: nn.Module, args: tuple, device: torch.device, replays: int) -> float:
    if device.type != "cuda":
        start = now_s()
        for _ in range(replays):
            module(*args)
        return (now_s() - start) * 1e3 / replays
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm up (cuDNN autotuning) outside the capture
            module(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(replays):
            module(*args)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()  # first replay uploads the graph
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / replays


def _mark(marks: dict, label: str, slot: int, device: torch.device):
    """Slot 0 opens a [start, end] pair for this call of the layer, slot 1 closes it (a module may run twice)."""
    def hook(*_args):
        if device.type == "cuda":
            value = torch.cuda.Event(enable_timing=True)
            value.record()
        else:
            value = now_s()
        calls = marks.setdefault(label, [])
        if slot == 0:
            calls.append([value, None])
        elif calls:
            calls[-1][1] = value
    return hook


def _elapsed_ms(calls, device: torch.device) -> float:
    total = 0.0
    for start, end in calls or []:
        if end is not None:
            total += start.elapsed_time(end) if device.type == "cuda" else (end - start) * 1e3
    return total


# ---------------------------------------------------------------------------------------- kernel profile
# GEMM and attention kernels in a tensor-core type (cuBLAS's nvjet kernels except the fp32 SIMT ones, flash and
# memory-efficient attention in half precision) count as tensor-core work.
TENSOR_CORE_PATTERN = re.compile(
    r"hmma|gmma|wgmma|tensorop|s16816|h16816|bf16816|1688gemm|s1688|h1688|884gemm|nvjet_(?!sss)|"
    r"xmma.*(f16|bf16|tf32)|sm(80|86|89|90|100)_.*(f16|bf16|tf32)|cutlass.*(f16|bf16|tf32)|"
    r"(flash|fmha|attention|gemm).*(f16|bf16|half|bfloat|tf32)", re.I)
LAYOUT_PATTERN = re.compile(r"nchwToNhwc|nhwcToNchw|transpose|permute|copy_kernel.*contig", re.I)
# Memory-bound work: normalisation, activations, softmax, additions, and inductor's fused pointwise/reduction kernels.
ELEMENTWISE_PATTERN = re.compile(r"elementwise|batch_norm|bn_fw|clamp|relu|layer_?norm|group_?norm|gelu|softmax|"
                                 r"silu|sigmoid|hardswish|triton_(poi|per|red)_", re.I)


@dataclass
class KernelProfile:
    iterations: int
    wall_ms: float  # host wall time of the profiled iterations, synchronised (inflated by the profiler itself)
    kernel_ms: float  # sum of GPU kernel (and memcpy/memset) durations over all profiled iterations
    tensor_core_ms: float  # kernels whose names say they use tensor cores
    layout_ms: float  # layout transforms and copies
    elementwise_ms: float  # memory-bound kernels: normalisation, activations, softmax, additions
    kernels: int
    top_kernels: list[tuple[str, float]]  # (name, ms), longest first

    def busy_share(self, timed_ms_per_iteration: float) -> float:
        """GPU-busy time per iteration over the unprofiled timed pass's time per iteration."""
        if timed_ms_per_iteration <= 0:
            return 0.0
        return min(1.0, self.kernel_ms / self.iterations / timed_ms_per_iteration)

    @property
    def tensor_core_share(self) -> float:
        return self._share(self.tensor_core_ms)

    @property
    def layout_share(self) -> float:
        return self._share(self.layout_ms)

    @property
    def elementwise_share(self) -> float:
        return self._share(self.elementwise_ms)

    def _share(self, part_ms: float) -> float:
        """A part of the GPU's kernel time, as a share of all of it (0 when no kernel ran)."""
        return part_ms / self.kernel_ms if self.kernel_ms > 0 else 0.0


def kernel_profile(step: Callable[[], object], device: torch.device, iterations: int = 5) -> KernelProfile | None:
    """Which kernels ran and how busy the GPU was, from torch.profiler; None on the CPU.

    CUPTI slows every later kernel launch unless it is torn down (pytorch/pytorch#144455), so we ask Kineto
    to tear it down, and callers run every timed pass of a process before its first profile.
    """
    if device.type != "cuda":
        return None
    import os

    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("TEARDOWN_CUPTI", "1")

    _sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = now_s()
        for _ in range(iterations):
            step()
        _sync(device)
        wall_ms = (now_s() - start) * 1e3
    totals: dict[str, float] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name] = totals.get(event.name, 0.0) + event.time_range.elapsed_us() / 1e3
    kernel_ms = sum(totals.values())
    return KernelProfile(
        iterations=iterations,
        wall_ms=wall_ms,
        kernel_ms=kernel_ms,
        tensor_core_ms=sum(v for k, v in totals.items() if TENSOR_CORE_PATTERN.search(k)),
        layout_ms=sum(v for k, v in totals.items() if LAYOUT_PATTERN.search(k)),
        elementwise_ms=sum(v for k, v in totals.items()
                           if ELEMENTWISE_PATTERN.search(k) and not LAYOUT_PATTERN.search(k)),
        kernels=len(totals),
        top_kernels=sorted(totals.items(), key=lambda kv: -kv[1])[:5],
    )
