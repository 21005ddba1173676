"""The work of one image, per layer: convolutions, matrix products (linear layers, matmuls) and attention, counted
from the operators that really run (torch's own FLOP formulas, as torch.utils.flop_counter uses), so it holds for
any network. A layer is a module that runs and runs no other module (a leaf, or a module such as
nn.MultiheadAttention whose children are never called); other work counts in the total only."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_flop

aten = torch.ops.aten
CONVOLUTIONS = {aten.convolution, aten._convolution, aten.cudnn_convolution, aten.convolution_overrideable,
                aten._slow_conv2d_forward}
ATTENTION = {aten._scaled_dot_product_efficient_attention, aten._scaled_dot_product_flash_attention,
             aten._scaled_dot_product_cudnn_attention, aten._flash_attention_forward,
             aten._efficient_attention_forward, aten._scaled_dot_product_flash_attention_for_cpu}
FORMULAS = {**flop_registry, aten._scaled_dot_product_flash_attention_for_cpu: sdpa_flop}  # torch counts it on GPUs only
KINDS = ("conv", "gemm", "attention")  # work that tensor cores can do; everything else is "elementwise"


@dataclass(frozen=True)
class LayerWork:
    label: str  # module path, e.g. "layer1.0.conv1"
    type: str  # class name, e.g. "Conv2d"
    flops: float  # per image, all its calls; 1 multiply-add = 2 FLOP; elementwise layers: one per output element
    in_channels: int | None
    out_channels: int | None
    kind: str = "elementwise"  # "conv", "gemm", "attention" or "elementwise" (the largest part of its work)
    depthwise: bool = False  # a convolution with one group per input channel


@dataclass(frozen=True)
class ModelWork:
    layers: list[LayerWork]  # in order of first call
    flops_per_image: float  # convolutions, matrix products and attention, inside layers or not
    flops_by_kind: dict  # kind -> FLOP per image


class _Counter(TorchDispatchMode):
    """Adds each operator's FLOP to the innermost module running (a stack kept by module hooks)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """Never run under torch.compile: without this, the first count imports TorchDynamo (1.4 s)."""
        return False

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.by_module: dict[str, dict[str, float]] = {}
        self.total: dict[str, float] = {kind: 0.0 for kind in KINDS}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        formula = FORMULAS.get(packet)
        if formula is not None and not packet.__name__.endswith("_backward"):
            kind = "conv" if packet in CONVOLUTIONS else "attention" if packet in ATTENTION else "gemm"
            flops = float(formula(*args, **kwargs, out_val=out))
            self.total[kind] += flops
            if self.stack:
                spent = self.by_module.setdefault(self.stack[-1], {})
                spent[kind] = spent.get(kind, 0.0) + flops
        return out


def count_work(model: nn.Module, input_shape=(3, 224, 224)) -> ModelWork:
    """One pass of a zero image on the model's device, in eval mode (restored after), with torch's fast paths for
    attention off (their fused kernels hide the matrix products from the count)."""
    if getattr(model, "counts_its_own_work", False):  # a model torch cannot trace (an ONNX file) says its work
        return model.work(input_shape)
    counter, calls, outputs = _Counter(), [], {}
    modules = {label: module for label, module in model.named_modules() if label}

    def pre(label):
        def hook(_module, _args):
            counter.stack.append(label)
            if label not in outputs:
                calls.append(label)
                outputs[label] = 0.0
        return hook

    def post(label):
        def hook(_module, _args, out):
            counter.stack.pop()
            outputs[label] += sum(float(t[0].numel()) for t in _tensors(out))
        return hook

    handles = [h for label, m in modules.items()
               for h in (m.register_forward_pre_hook(pre(label)), m.register_forward_hook(post(label)))]
    training, fastpath = model.training, torch.backends.mha.get_fastpath_enabled()
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), counter:
            model.eval()(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(training)
        for h in handles:
            h.remove()
    layers = [label for label in calls if not any(other.startswith(label + ".") for other in outputs)]
    found = [_layer(label, modules[label], counter.by_module.get(label, {}), outputs[label]) for label in layers]
    return ModelWork(found, sum(counter.total.values()), dict(counter.total))


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out] if out.dim() > 0 else []
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _tensors(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _tensors(item)]
    return []


def _layer(label: str, module: nn.Module, spent: dict, output_elements: float) -> LayerWork:
    kind = max(spent, key=spent.get) if spent else "elementwise"
    flops = sum(spent.values()) if spent else output_elements
    width = getattr(module, "embed_dim", None)  # attention: the same width in and out
    in_channels = getattr(module, "in_channels", getattr(module, "in_features", width))
    groups = getattr(module, "groups", 1)
    return LayerWork(label, type(module).__name__, flops, in_channels,
                     getattr(module, "out_channels", getattr(module, "out_features", width)), kind,
                     depthwise=groups > 1 and groups == in_channels)


def layer_work(model: nn.Module, input_shape=(3, 224, 224)) -> list[LayerWork]:
    return count_work(model, input_shape).layers
