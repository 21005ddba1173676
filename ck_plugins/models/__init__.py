"""Networks by name: the five of the seeds (built here), torchvision, timm, ONNX files and your own module
(see modelnames), built from a seed (no weights are downloaded); their work per layer is in work.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .. import inputs, modelnames
from ..errors import BadInput, check_choice
from .onnxfile import OnnxModel
from .work import LayerWork, ModelWork, count_work, layer_work  # noqa: F401 (the package's interface)
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


MODELS: dict[str, ModelSpec] = {  # the seed models, in modelnames.SEED_MODELS's order
    spec.name: spec
    for spec in (
        ModelSpec("resnet50", resnet50, "resnet50"),
        ModelSpec("alexnet", alexnet, "alexnet"),
        ModelSpec("googlenet", googlenet, "googlenet"),
        ModelSpec("squeezenet-1.0", squeezenet1_0, "squeezenet1_0"),
        ModelSpec("squeezenet-1.1", squeezenet1_1, "squeezenet1_1"),
    )
}


if tuple(MODELS) != modelnames.SEED_MODELS:  # the names are said once, in modelnames (which needs no torch)
    raise ImportError(f"models.MODELS {tuple(MODELS)} differs from modelnames.SEED_MODELS {modelnames.SEED_MODELS}")


def spec(name: str) -> ModelSpec:
    return MODELS[check_choice("model", name, MODELS)]


class ModelError(RuntimeError):
    """The model could not be built, or its forward pass failed: recorded as a failed point with the reason."""


def build(name: str, seed: int = 0, weights: str = "") -> nn.Module:
    """The model (any name modelnames accepts) in eval mode on the CPU in fp32, its weights drawn
    deterministically from `seed`, or loaded from `weights`: a state_dict file, or "pretrained" for the zoo's
    (torchvision, timm: a download, where the machine can make one). A name that does not exist or weights that
    do not fit are a BadInput; a model that fails to build is a ModelError."""
    model_name = modelnames.check(name)
    if model_name.source == "onnx":
        if weights:
            raise BadInput("weights", weights, f"none for an ONNX file ({name} holds its own weights)")
        return OnnxModel(model_name.ref)
    if weights == inputs.PRETRAINED and model_name.source not in ("torchvision", "timm"):
        raise BadInput("CK_PRETRAINED", "true", f"a torchvision: or timm: model ({name} has no zoo weights; give "
                                                "a state_dict file with --weights)")
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = _builder(model_name, weights == inputs.PRETRAINED)()
    except BadInput:
        raise
    except Exception as error:
        raise ModelError(f"model {name} could not be built: {type(error).__name__}: {error}") from error
    finally:
        torch.random.set_rng_state(state)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {name}: {model_name.ref} returned a {type(model).__name__}, not a torch.nn.Module")
    if weights and weights != inputs.PRETRAINED:
        inputs.load_state(model, weights, name)
    return model.eval()


def _builder(name: modelnames.ModelName, pretrained: bool = False) -> Callable[[], nn.Module]:
    if name.source == "seed":
        return spec(name.text).builder
    if name.source == "torchvision":
        import torchvision

        return lambda: torchvision.models.get_model(name.ref, weights="DEFAULT" if pretrained else None)
    if name.source == "timm":
        import timm

        return lambda: timm.create_model(name.ref, pretrained=pretrained)
    return modelnames.py_function(name.text)


def check_forward(model: nn.Module, name: str, input_shape) -> ModelWork:
    """Count the work of one image; a forward pass that fails at this input shape is a ModelError saying so."""
    try:
        return count_work(model, input_shape)
    except Exception as error:
        raise ModelError(f"the forward pass of {name} failed at input shape 1x{modelnames.shape_text(input_shape)}: "
                         f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from error


def leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules without children: the layers of a network whose every module runs its children (the seed models);
    `work.count_work` finds the layers of any network from a pass."""
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())]


def gmac_per_image(name: str) -> float:
    """Multiply-adds of the convolutions, matrix products and attention for one image, in GMAC."""
    return count_work(build(name)).flops_per_image / 2e9
