"""Model names: the five seed networks, or a source and a reference (torchvision:vit_b_16, timm:resnet18,
onnx:path/to/model.onnx, py:package.module:function). Parsing, checking (with the closest matches when a name
is unknown), the CK entry name a model gets, and input shapes. No torch here: torchvision, timm or the user's
module are imported only to check a name of theirs."""
from __future__ import annotations

import difflib
import hashlib
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput

SEED_MODELS = ("resnet50", "alexnet", "googlenet", "squeezenet-1.0", "squeezenet-1.1")
SOURCES = ("torchvision", "timm", "onnx", "py")
DEFAULT_INPUT_SHAPE = (3, 224, 224)
SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_ENTRY_MODEL = 60  # characters of a model's part of a CK entry name


@dataclass(frozen=True)
class ModelName:
    text: str  # as given: the point's CK_MODEL
    source: str  # "seed", "torchvision", "timm", "onnx" or "py"
    ref: str  # the name within the source, the path, or module:function


def parse(text: str) -> ModelName:
    """Syntax only: a seed name, or <source>:<ref> with a known source and a non-empty reference."""
    text = str(text).strip()
    if text in SEED_MODELS:
        return ModelName(text, "seed", text)
    source, colon, ref = text.partition(":")
    if not colon or source not in SOURCES or not ref.strip():
        raise BadInput("model", text, f"one of {', '.join(SEED_MODELS)}, or torchvision:<name>, timm:<name>, "
                                      "onnx:<path> or py:<module>:<function>" + _closest(text, SEED_MODELS))
    if source == "py" and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", ref):
        raise BadInput("model", text, "py:<module>:<function>, e.g. py:mypackage.nets:build (a function returning "
                                      "an nn.Module)")
    return ModelName(text, source, ref.strip())


def check(text: str) -> ModelName:
    """parse, then make sure the model exists where its source says; an unknown one is a BadInput that says where
    it looked and what is closest."""
    name = parse(text)
    if name.source in ("torchvision", "timm"):
        known = available(name.source)
        if name.ref not in known:
            where = ("torchvision.models (classification)" if name.source == "torchvision"
                     else "timm.list_models()")
            raise BadInput("model", text, f"a model in {where}{_closest(name.ref, known, name.source + ':')}")
    elif name.source == "onnx":
        path = Path(name.ref)
        if not path.is_file():
            raise BadInput("model", text, f"an ONNX file; {path.resolve()} does not exist")
    elif name.source == "py":
        _py_function(name)
    return name


def available(source: str) -> list[str]:
    """The names a source has; BadInput when the package cannot be imported here."""
    try:
        if source == "torchvision":
            import torchvision

            return list(torchvision.models.list_models(module=torchvision.models))
        import timm

        return list(timm.list_models())
    except Exception as error:  # torchvision's import fails in several ways where its C++ ops do not match torch
        raise BadInput("model source", source, f"an importable {source} package (import failed: "
                                               f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None


def _py_function(name: ModelName):
    module_name, _, function = name.ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BadInput("model", name.text, f"an importable module on sys.path ({error})") from None
    found = getattr(module, function, None)
    if not callable(found):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise BadInput("model", name.text, f"a function in module {module_name}"
                                           + _closest(function, public, f"py:{module_name}:"))
    return found


def py_function(text: str):
    """The function a py: name refers to (imported)."""
    return _py_function(parse(text))


def _closest(value: str, candidates, prefix: str = "") -> str:
    matches = difflib.get_close_matches(value, list(candidates), n=3, cutoff=0.6)
    return f" (closest: {', '.join(prefix + m for m in matches)})" if matches else ""


def entry_model(text: str) -> str:
    """The model's part of a CK entry name: letters, digits, '-', '_' and '.' only. A seed name is itself; a
    source's colon becomes '-', every other run of unsafe characters '_'; an ONNX path keeps only its file name;
    a long name or an ONNX path is made unique with 8 hex digits of its hash (the point keeps the full name)."""
    name = parse(text)
    if name.source == "seed":
        return name.text
    ref = Path(name.ref).stem if name.source == "onnx" else name.ref
    safe = SAFE.sub("_", ref).strip("._-") or "model"
    digest = hashlib.sha256(name.text.encode()).hexdigest()[:8]
    if name.source == "onnx" or len(safe) > MAX_ENTRY_MODEL:
        safe = f"{safe[:MAX_ENTRY_MODEL]}-{digest}"
    return f"{name.source}-{safe}"


def parse_input_shape(text) -> tuple[int, ...]:
    """'3x224x224' (also with ',' or spaces) -> (3, 224, 224): the shape of one input, without the batch."""
    parts = [p for p in re.split(r"[x,\s]+", str(text).strip().lower()) if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or len(shape) > 4 or any(d <= 0 for d in shape):
        raise BadInput("input shape", text, "positive sizes without the batch, e.g. 3x224x224")
    return shape


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)
