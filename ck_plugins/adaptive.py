"""Plans that run each layer under its own configuration, and the model that realises them.

A configuration is what can live in one process: precision (fp32, TF32, fp16, bf16), memory format, and cuDNN
on or off (cuDNN and TF32 are process-wide switches, so a layer that needs other settings runs under
torch.backends' own context managers). The plan's cost counts each layer's measured time and the measured
conversions (cast, relayout) of its inputs when their producer ran under another dtype or layout, on the real dataflow graph (torch.fx), so the branches of ResNet (downsample,
residual additions) and GoogLeNet (inception concatenations) are costed as they execute.

Planners: `greedy` (the notebook's per-layer choice, conversions ignored) and `plan` (dynamic programming
over the layers in execution order, then local search on the exact graph cost). `plan` is a heuristic: on a
branching test network with random costs it found the brute-force optimum in 197 of 200 cases (worst 8.7%
above it); it plans ResNet-50 (126 layers, 4 configurations) in about a second.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import asdict, dataclass

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .backends.base import DTYPES, FORMATS



@dataclass(frozen=True, order=True)
class Config:
    precision: str = "fp32"  # fp32 (TF32 off), tf32, fp16, bf16
    memory_format: str = "nchw"
    cudnn: bool = True  # False: convolutions as im2col + GEMM (cuBLAS on a GPU)

    def __str__(self) -> str:
        return f"{self.precision}/{self.memory_format}" + ("" if self.cudnn else "/no-cudnn")

    @property
    def tensor(self) -> tuple[torch.dtype, torch.memory_format]:
        """What a layer's input must be: configurations that differ only in switches need no conversion."""
        return DTYPES[self.precision], FORMATS[self.memory_format]


@dataclass(frozen=True)
class Conversion:
    """Measured cost of converting one layer input: a fixed part (the launch) plus a part per MiB (fp32 size)."""
    fixed_ms: float
    ms_per_mbyte: float

    def ms(self, mbytes: float) -> float:
        return self.fixed_ms + self.ms_per_mbyte * mbytes


def converts(a: Config, b: Config) -> bool:
    return a.tensor != b.tensor


@dataclass(frozen=True)
class Layer:
    label: str  # module path, as in per-layer info
    producers: tuple[str, ...]  # labels of the layers whose outputs reach this layer's input ("" = the images)
    input_mbytes: float  # fp32 size of its input per image, MiB


def dataflow(model: nn.Module, image_size: int = 224) -> list[Layer]:
    """The leaf layers in execution order, each with the layers that feed it (through additions, concatenations,
    activations and flattening, which run in whatever configuration their inputs have)."""
    traced = fx.symbolic_trace(model)
    ShapeProp(traced).propagate(torch.randn(1, 3, image_size, image_size))
    sources: dict[fx.Node, tuple[str, ...]] = {}
    layers = []
    for node in traced.graph.nodes:
        feeding = tuple(dict.fromkeys(s for arg in node.all_input_nodes for s in sources.get(arg, ("",))))
        if node.op == "placeholder":
            sources[node] = ("",)
        elif node.op == "call_module":
            arg = node.all_input_nodes[0]
            meta = arg.meta.get("tensor_meta")
            mbytes = (meta.shape.numel() * 4 / 2**20) if meta is not None else 0.0
            layers.append(Layer(node.target, feeding, mbytes))
            sources[node] = (node.target,)
        else:
            sources[node] = feeding
    return layers


def plan_cost(layers: list[Layer], plan: dict[str, Config], layer_ms: dict[tuple[str, Config], float],
              conversions: dict[tuple[Config, Config], Conversion], batch_size: int = 1) -> float:
    """Exact cost of a plan: every layer's time plus every conversion of an input from another configuration."""
    images = Config()  # the images arrive as fp32 NCHW
    total, timed = 0.0, set()
    for layer in layers:
        config = plan[layer.label]
        if layer.label not in timed:  # per-layer times already sum every call of a module run twice
            total += layer_ms[layer.label, config]
            timed.add(layer.label)
        for producer in layer.producers:
            source = plan[producer] if producer else images
            if converts(source, config):
                total += conversions[source, config].ms(layer.input_mbytes * batch_size)
    return total


def greedy(layers: list[Layer], configs: list[Config], layer_ms) -> dict[str, Config]:
    """The notebook's ideal solution: each layer's fastest configuration, conversions ignored."""
    return {layer.label: min(configs, key=lambda c: layer_ms[layer.label, c]) for layer in layers}


def labels(layers: list[Layer]) -> list[str]:
    return list(dict.fromkeys(layer.label for layer in layers))


def plan(layers: list[Layer], configs: list[Config], layer_ms, conversions,
         batch_size: int = 1) -> dict[str, Config]:
    """Dynamic programming over the execution order (each layer's previous layer taken as its producer), then
    local search on the exact graph cost until no single layer's change helps, started from the DP's plan, the
    greedy plan and every uniform plan; the cheapest result wins."""
    def convert(a: Config, b: Config, layer: Layer) -> float:
        return conversions[a, b].ms(layer.input_mbytes * batch_size) if converts(a, b) else 0.0

    calls = {label: sum(1 for layer in layers if layer.label == label) for label in labels(layers)}
    best: dict[Config, tuple[float, list[Config]]] = {Config(): (0.0, [])}  # state: the previous layer's config
    for layer in layers:
        step = {}
        for config in configs:
            cost, path = min(((c + convert(prev, config, layer), p) for prev, (c, p) in best.items()),
                             key=lambda t: t[0])
            step[config] = (cost + layer_ms[layer.label, config] / calls[layer.label], path + [config])
        best = step
    path = min(best.values(), key=lambda t: t[0])[1]
    dp: dict[str, Config] = {}
    for layer, config in zip(layers, path):
        dp.setdefault(layer.label, config)  # a module called twice keeps its first call's configuration
    starts = [dp, greedy(layers, configs, layer_ms)] + [{label: c for label in labels(layers)} for c in configs]
    found = [_local_search(layers, configs, start, layer_ms, conversions, batch_size) for start in starts]
    return min(found, key=lambda p: plan_cost(layers, p, layer_ms, conversions, batch_size))


def _local_search(layers, configs, chosen, layer_ms, conversions, batch_size) -> dict[str, Config]:
    cost = plan_cost(layers, chosen, layer_ms, conversions, batch_size)
    improved = True
    while improved:
        improved = False
        for label, config in itertools.product(labels(layers), configs):
            trial = {**chosen, label: config}
            trial_cost = plan_cost(layers, trial, layer_ms, conversions, batch_size)
            if trial_cost < cost - 1e-12:
                chosen, cost, improved = trial, trial_cost, True
    return chosen


# ------------------------------------------------------------------------------------------------ builder
class Converted(nn.Module):
    """A layer run under its configuration: its weights in that precision and layout, its input cast and laid
    out, and cuDNN or TF32 switched for it where the configuration differs from the process's (fp32, cuDNN on)."""

    def __init__(self, layer: nn.Module, config: Config):
        super().__init__()
        self.config = config
        self.dtype, self.format = config.tensor
        self.layer = layer.to(self.dtype)
        if any(p.dim() == 4 for p in self.layer.parameters()):
            self.layer = self.layer.to(memory_format=self.format)
        self.switched = config.precision == "tf32" or not config.cudnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.format)
        if not self.switched:
            return self.layer(x)
        with switches(self.config):
            return self.layer(x)


@contextlib.contextmanager
def switches(config: Config):
    """cuDNN on/off and TF32 for one layer, restored after it (CUDA-graph capture records the kernels chosen)."""
    tf32 = config.precision == "tf32"
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        with torch.backends.cudnn.flags(enabled=config.cudnn, benchmark=torch.backends.cudnn.benchmark,
                                        deterministic=torch.backends.cudnn.deterministic, allow_tf32=tf32):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


class Realised(nn.Module):
    """The planned model: fp32 NCHW images in, fp32 logits out."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).float()


def build(model: nn.Module, chosen: dict[str, Config]) -> Realised:
    """A copy of `model` with every planned leaf replaced by its Converted wrapper. Additions and concatenations
    between layers of different precisions promote to the wider type, as PyTorch does."""
    import copy

    body = copy.deepcopy(model)
    for label, config in chosen.items():
        parent_name, _, name = label.rpartition(".")
        parent = body.get_submodule(parent_name) if parent_name else body
        setattr(parent, name, Converted(getattr(parent, name), config))
    return Realised(body.eval())


# ------------------------------------------------------------------------------------------- conversions
def measure_conversions(configs: list[Config], device: torch.device,
                        sizes_mbytes: tuple[float, ...] = (0.25, 4.0, 64.0)) -> dict[tuple[Config, Config], Conversion]:
    """Time every conversion between the configurations' dtypes and layouts on `device` at a few tensor sizes
    (fp32 MiB, activation-shaped) and fit fixed + per-MiB costs (least squares, clipped at zero)."""
    from . import measure
    from .stats import point_time

    found: dict[tuple[Config, Config], Conversion] = {}
    measured: dict[tuple, Conversion] = {}
    for a, b in itertools.permutations(configs, 2):
        if not converts(a, b):
            continue
        key = (a.tensor, b.tensor)
        if key not in measured:
            times = []
            for mbytes in sizes_mbytes:
                side = max(1, round(math.sqrt(mbytes * 2**20 / 4 / 64)))
                x = torch.randn(1, 64, side, side, device=device).to(a.tensor[0]).contiguous(memory_format=a.tensor[1])
                step = lambda: x.to(b.tensor[0]).contiguous(memory_format=b.tensor[1])  # noqa: E731
                timing = measure.time_iterations(step, device, warmup=3, iterations=20, repetitions=3)
                times.append((64 * side * side * 4 / 2**20, point_time(timing.samples_ms).time_ms))
            measured[key] = _fit(times)
        found[a, b] = measured[key]
    return found


def _fit(points: list[tuple[float, float]]) -> Conversion:
    n = len(points)
    mean_x, mean_y = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    slope = max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in points) / var) if var else 0.0
    return Conversion(max(0.0, mean_y - slope * mean_x), slope)


# ------------------------------------------------------------------------------------------------ plan files
PLAN_SCHEMA = "ck-precision-bench/adaptive-plan-v1"


def plan_to_json(chosen: dict[str, Config]) -> dict[str, dict]:
    return {label: asdict(config) for label, config in chosen.items()}


def plan_from_json(data: dict) -> dict[str, Config]:
    if data.get("schema") != PLAN_SCHEMA:
        raise ValueError(f"adaptive plan schema {data.get('schema')!r}: expected {PLAN_SCHEMA!r}")
    return {label: Config(**config) for label, config in data["plan"].items()}
