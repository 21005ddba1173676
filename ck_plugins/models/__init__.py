"""The five networks of the seeds, built from a seed (no weights can be downloaded), and their work per layer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import check_choice
from .alexnet import alexnet
from .googlenet import googlenet
from .resnet import resnet50
from .squeezenet import squeezenet1_0, squeezenet1_1


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[[], nn.Module]
    torchvision_name: str
    image_size: int = 224


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("resnet50", resnet50, "resnet50"),
        ModelSpec("alexnet", alexnet, "alexnet"),
        ModelSpec("googlenet", googlenet, "googlenet"),
        ModelSpec("squeezenet-1.0", squeezenet1_0, "squeezenet1_0"),
        ModelSpec("squeezenet-1.1", squeezenet1_1, "squeezenet1_1"),
    )
}


def spec(name: str) -> ModelSpec:
    return MODELS[check_choice("model", name, MODELS)]


def build(name: str, seed: int = 0) -> nn.Module:
    """The model in eval mode on the CPU in fp32, its weights drawn deterministically from `seed`."""
    model_spec = spec(name)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = model_spec.builder()
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


@dataclass(frozen=True)
class LayerWork:
    label: str  # module path, e.g. "layer1.0.conv1"
    type: str  # class name, e.g. "Conv2d"
    flops: float  # per image; 1 multiply-add = 2 FLOP
    in_channels: int | None
    out_channels: int | None


def _leaf_flops(module: nn.Module, out: torch.Tensor) -> float:
    per_image_out = out[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return 2.0 * per_image_out * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return 2.0 * module.in_features * module.out_features
    return float(per_image_out)  # elementwise estimate: one operation per output element


def leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())]


def layer_work(model: nn.Module, image_size: int = 224) -> list[LayerWork]:
    """Per-leaf work for one image, in execution order, from one pass of a zero image on the model's device in
    eval mode (restored after). Not the meta device: its concatenation runs through torch's Python references,
    whose first call imports TorchDynamo (1.6 s), more than the pass itself costs on a CPU."""
    found: list[LayerWork] = []

    def hook_for(label):
        def hook(module, _inputs, out):
            found.append(
                LayerWork(label, type(module).__name__, _leaf_flops(module, out),
                          getattr(module, "in_channels", getattr(module, "in_features", None)),
                          getattr(module, "out_channels", getattr(module, "out_features", None)))
            )
        return hook

    training, parameter = model.training, next(model.parameters())
    handles = [m.register_forward_hook(hook_for(n)) for n, m in leaves(model)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    return found


def gmac_per_image(name: str) -> float:
    """Multiply-adds of the convolutions and fully connected layers for one image, in GMAC."""
    work = layer_work(spec(name).builder(), spec(name).image_size)
    return sum(w.flops for w in work if w.type in ("Conv2d", "Linear")) / 2e9
