"""Lib names, their families (one CK program each) and usual layouts. No torch: the reading side uses it too."""
from __future__ import annotations

FAMILY_OF = {
    "null": "null",
    "torch-cpu": "cpu", "torch-cpu-bf16": "cpu", "onnxruntime": "cpu",
    "torch-cublas-fp32": "cublas", "torch-cublas-fp16": "cublas",
    "torch-cudnn-fp32": "cudnn", "torch-cudnn-tf32": "cudnn",
    "torch-cudnn-fp16": "fp16", "torch-cudnn-bf16": "fp16", "torch-amp": "fp16",
    "torch-compile-fp32": "compile", "torch-compile-fp16": "compile", "torch-compile-bf16": "compile",
    "tensorrt-fp32": "tensorrt", "tensorrt-fp16": "tensorrt",
    "adaptive": "adaptive",
    "cudnn-graph-fp16": "cudnn-graph", "cudnn-graph-bf16": "cudnn-graph", "cudnn-graph-fp8": "cudnn-graph",
}
HARNESS_LIBS = ("null",)  # libs that run no network: they measure the harness, never ranked beside the others
CHANNELS_LAST_FAMILIES = ("fp16", "compile", "tensorrt", "cudnn-graph")  # where tensor cores want NHWC
HALF_PRECISIONS = ("fp16", "bf16", "amp")  # 16-bit arithmetic (amp: autocast to fp16)
REDUCED_PRECISIONS = HALF_PRECISIONS + ("tf32",)  # below fp32: what the diagnosis explains against fp32


def is_harness(lib: str) -> bool:
    """A lib (label) that measures the harness, not a network: never ranked, compared or drawn beside real libs."""
    return lib.split("+")[0] in HARNESS_LIBS


PRECISION_WORDS = {"fp32": "fp32", "tf32": "TF32", "fp16": "fp16", "bf16": "bf16", "fp8": "fp8", "amp": "autocast fp16"}


def describe(label: str) -> str:
    """A lib label in words: 'cudnn-graph-fp16+graph' -> 'fp16, channels_last, CUDA graph'; other options as
    they are named ('freezing', 'reduce-overhead'); a legacy or unknown lib by its name alone."""
    base, *extras = label.split("+")
    precision = next((word for key, word in PRECISION_WORDS.items() if base.endswith(key)), None)
    if precision is None and base not in FAMILY_OF:
        return ", ".join(extras)
    layout = next((x for x in extras if x in ("nchw", "channels_last")), default_memory_format(base))
    words = [precision or "fp32", layout] + ["CUDA graph" if x == "graph" else x for x in extras
                                              if x not in ("nchw", "channels_last")]
    return ", ".join(words)


def default_memory_format(lib: str) -> str:
    return "channels_last" if FAMILY_OF.get(lib) in CHANNELS_LAST_FAMILIES else "nchw"
