"""The registry: every lib by name, its family (one CK program per family), and how to build it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import BadInput, check_choice
from ..libnames import FAMILY_OF, default_memory_format  # noqa: F401 (default_memory_format re-exported)
from .base import MEMORY_FORMATS, Backend
from .compiled import COMPILE_MODES, CompiledBackend
from .null import NullBackend
from .onnxrt import OnnxRuntimeBackend
from .adaptive import AdaptiveBackend
from .cudnn_graph import CudnnGraphBackend
from .tensorrt import TensorRTBackend
from .torch_eager import EagerBackend, EagerConfig


@dataclass(frozen=True)
class Options:
    memory_format: str = "nchw"
    cuda_graph: bool = False  # capture the forward pass in a CUDA graph (GPU eager backends)
    compile_mode: str = "default"
    freezing: bool = False
    dynamic_batch: bool = False  # compile libs: one compilation for every batch size (a sweep's choice)
    plan: str = ""  # adaptive: the plan file
    fold_bn: bool = False  # eager libs: batch norms folded into the convolutions


def _eager(device: str, precision: str, cudnn: bool = True) -> Callable[[str, Options], Backend]:
    def make(name: str, o: Options) -> Backend:
        return EagerBackend(name, EagerConfig(device, precision, cudnn=cudnn, cudnn_benchmark=cudnn,
                                              memory_format=o.memory_format, cuda_graph=o.cuda_graph,
                                              fold_bn=o.fold_bn))
    return make


def _compiled(precision: str) -> Callable[[str, Options], Backend]:
    def make(name: str, o: Options) -> Backend:
        config = EagerConfig("cuda", precision, memory_format=o.memory_format)
        return CompiledBackend(name, config, o.compile_mode, o.freezing, o.dynamic_batch)
    return make


def _tensorrt(precision: str) -> Callable[[str, Options], Backend]:
    return lambda name, o: TensorRTBackend(name, EagerConfig("cuda", precision, memory_format=o.memory_format))


# lib -> factory; families (one CK program each) are in libnames.
FACTORIES: dict[str, Callable[[str, Options], Backend]] = {
    "null": lambda name, o: NullBackend(),
    "torch-cpu": _eager("cpu", "fp32"),
    "torch-cpu-bf16": _eager("cpu", "bf16"),
    "onnxruntime": lambda name, o: OnnxRuntimeBackend(name, "cpu"),
    "torch-cublas-fp32": _eager("cuda", "fp32", cudnn=False),
    "torch-cublas-fp16": _eager("cuda", "fp16", cudnn=False),
    "torch-cudnn-fp32": _eager("cuda", "fp32"),
    "torch-cudnn-tf32": _eager("cuda", "tf32"),
    "torch-cudnn-fp16": _eager("cuda", "fp16"),
    "torch-cudnn-bf16": _eager("cuda", "bf16"),
    "torch-amp": _eager("cuda", "amp"),
    "torch-compile-fp32": _compiled("fp32"),
    "torch-compile-fp16": _compiled("fp16"),
    "torch-compile-bf16": _compiled("bf16"),
    "tensorrt-fp32": _tensorrt("fp32"),
    "tensorrt-fp16": _tensorrt("fp16"),
    "adaptive": lambda name, o: AdaptiveBackend(name, o.plan, o.cuda_graph),
    "cudnn-graph-fp16": lambda name, o: CudnnGraphBackend(name, "fp16", o.cuda_graph),
    "cudnn-graph-bf16": lambda name, o: CudnnGraphBackend(name, "bf16", o.cuda_graph),
    "cudnn-graph-fp8": lambda name, o: CudnnGraphBackend(name, "fp8", o.cuda_graph),
}
LIBS: dict[str, tuple[str, Callable[[str, Options], Backend]]] = {
    name: (FAMILY_OF[name], factory) for name, factory in FACTORIES.items()}


def runnable(lib: str) -> str | None:
    """None when `lib` can run on this machine, else the reason it cannot."""
    from ..errors import Unsupported

    try:
        create(lib).check()
    except Unsupported as error:
        return str(error)
    return None


def family_of(lib: str) -> str:
    return LIBS[check_choice("lib", lib, LIBS)][0]


def create(lib: str, options: Options = Options(), family: str | None = None) -> Backend:
    lib_family, factory = LIBS[check_choice("lib", lib, LIBS)]
    if family not in (None, "", "any") and family != lib_family:
        accepted = [name for name, (f, _) in LIBS.items() if f == family]
        raise BadInput("lib", lib, f"one of this program's libs: {', '.join(accepted)}")
    check_choice("memory format", options.memory_format, MEMORY_FORMATS)
    check_choice("compile mode", options.compile_mode, COMPILE_MODES)
    return factory(lib, options)
