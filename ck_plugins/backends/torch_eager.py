"""PyTorch eager backends: CPU, cuBLAS-style (cuDNN off), cuDNN fp32/tf32/fp16/bf16, autocast; CUDA graphs optional."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import Unsupported
from .base import DTYPES, FORMATS, Backend, capture_cuda_graph


@dataclass(frozen=True)
class EagerConfig:
    device: str  # "cpu" or "cuda"
    precision: str  # fp32 (TF32 off), tf32, fp16 (model.half()), bf16, amp (autocast fp16)
    cudnn: bool = True  # False: convolutions as im2col + GEMM through cuBLAS
    cudnn_benchmark: bool = True
    memory_format: str = "nchw"  # or "channels_last"
    cuda_graph: bool = False
    fold_bn: bool = False  # fold each batch norm into the convolution before it (as TensorRT and inductor freezing do)


def apply_global_flags(config: EagerConfig) -> None:
    """torch's process-wide switches for this configuration (set on every load, so nothing leaks between runs)."""
    tf32 = config.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.enabled = config.cudnn
    torch.backends.cudnn.benchmark = config.cudnn_benchmark


class EagerBackend(Backend):
    batch_agnostic = True  # weights moved and cast once; a CUDA graph is captured per input in prepare_input
    loads_ahead = True  # cast and laid out on the host, then copied: no kernel (see load)

    def __init__(self, name: str, config: EagerConfig):
        self.name, self.config, self.precision = name, config, config.precision
        self.device = torch.device(config.device)
        self.model: nn.Module | None = None
        self._graph = None

    def check(self) -> None:
        c = self.config
        if c.device == "cuda" and not torch.cuda.is_available():
            raise Unsupported(f"{self.name} needs a CUDA GPU and torch.cuda.is_available() is False on this machine")
        if c.device == "cpu" and c.precision in ("tf32", "fp16", "amp"):
            raise Unsupported(f"{self.name}: precision {c.precision} needs a CUDA GPU; a CPU runs fp32 and bf16")
        if c.device == "cpu" and c.cuda_graph:
            raise Unsupported(f"{self.name}: CUDA graphs need a CUDA GPU")

    @property
    def _dtype(self) -> torch.dtype:
        return DTYPES[self.config.precision]

    @property
    def _format(self) -> torch.memory_format:
        return FORMATS[self.config.memory_format]

    def load(self, model: nn.Module, batch_size: int) -> None:
        self.check()
        apply_global_flags(self.config)
        copied = copy.deepcopy(model).eval()
        if self.config.fold_bn:
            from torch.fx.experimental.optimization import fuse

            copied = fuse(copied)  # conv + batch norm -> conv with folded weights and bias (fp32, before the cast)
        # cast and lay out on the host, then one copy: no kernel runs (a sweep's next worker loads while another
        # one measures), and the values are those a cast on the device gives
        self.model = copied.to(self._dtype, memory_format=self._format).to(self.device).eval()
        self._graph = None

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self._dtype).contiguous(memory_format=self._format).to(self.device)  # no kernel: see load()
        if self.config.cuda_graph:
            self._capture(x)
        return x

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.precision == "amp":
            with torch.autocast(self.device.type, dtype=torch.float16):
                return self.model(x)
        return self.model(x)

    def _capture(self, x: torch.Tensor) -> None:
        graph, out = capture_cuda_graph(self._forward, x)
        self._graph, self._static_in, self._static_out = graph, x, out

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        if self._graph is not None:
            if inputs is not self._static_in:
                self._static_in.copy_(inputs)
            self._graph.replay()
            return self._static_out
        return self._forward(inputs)

    def unload(self) -> None:
        self.model = None
        self._graph = self._static_in = self._static_out = None

    def version(self) -> str:
        cudnn = torch.backends.cudnn.version() if self.device.type == "cuda" else None
        return f"torch {torch.__version__}" + (f", cuDNN {cudnn}" if cudnn else "")

    def describe(self) -> dict:
        return {"lib": self.name, **asdict(self.config)}

    def shared_plans(self) -> tuple | None:
        """The convolutions' data type (autocast's are fp16; TF32 has plans of its own) and layout, with cuDNN's
        autotuning on a GPU (torch.compile's convolutions go through the same cuDNN calls)."""
        c = self.config
        if c.device != "cuda" or not (c.cudnn and c.cudnn_benchmark):
            return None
        return ("fp16" if c.precision == "amp" else c.precision, c.memory_format)

    def layer_model(self) -> nn.Module | None:
        return self.model

    def layer_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._forward(inputs)
