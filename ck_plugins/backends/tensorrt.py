"""TensorRT through Torch-TensorRT (dynamo IR). TensorRT 10+/11 is strongly typed: precision is the network's.

Not installed on any machine of this project: check() then raises Unsupported with the import error, and the
point is recorded as failed. tests/test_backends.py runs the real path where `torch_tensorrt` imports.
"""
from __future__ import annotations

import torch

from ..errors import Unsupported
from .torch_eager import EagerBackend, EagerConfig


class TensorRTBackend(EagerBackend):
    fused = True
    loads_ahead = False  # building the engine times kernels on the device
    batch_agnostic = False  # the engine is built for one batch size (EagerBackend's True would reuse it at others)

    def __init__(self, name: str, config: EagerConfig):
        super().__init__(name, config)
        self._engine = None

    def check(self) -> None:
        super().check()
        try:
            import torch_tensorrt  # noqa: F401
        except ImportError as error:
            raise Unsupported(f"{self.name}: TensorRT is not installed here (import torch_tensorrt: {error})") from None

    def load(self, model, batch_size: int) -> None:
        super().load(model, batch_size)  # the model is cast to fp16 for tensorrt-fp16: strongly typed
        import torch_tensorrt

        example = torch.randn(batch_size, *self.input_shape, device=self.device, dtype=self._dtype)
        example = example.contiguous(memory_format=self._format)
        self._engine = torch_tensorrt.compile(self.model, ir="dynamo", inputs=[example], use_explicit_typing=True,
                                              min_block_size=1)

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._engine(inputs)

    def unload(self) -> None:
        self._engine = None
        super().unload()

    def version(self) -> str:
        import torch_tensorrt

        return f"{super().version()}, torch_tensorrt {torch_tensorrt.__version__}"

    def shared_plans(self) -> None:
        return None  # TensorRT picks its own kernels when it builds the engine

    def layer_model(self):
        return None  # TensorRT fuses layers; its own profiler would be needed for per-layer times
