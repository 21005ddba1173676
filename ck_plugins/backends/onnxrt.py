"""ONNX Runtime: the model exported to ONNX, run by the CPU execution provider (CUDA's where installed)."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

from ..errors import BadInput, Unsupported
from .base import Backend


class OnnxRuntimeBackend(Backend):
    fused = True
    precision = "fp32"
    runs_onnx = True

    def __init__(self, name: str = "onnxruntime", device: str = "cpu"):
        self.name, self.device = name, torch.device("cpu")  # inputs and outputs live on the host
        self.provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
        self._session = None

    def check(self) -> None:
        try:
            import onnxruntime
        except ImportError as error:
            raise Unsupported(f"{self.name}: onnxruntime is not installed ({error})") from None
        if self.provider not in onnxruntime.get_available_providers():
            raise Unsupported(f"{self.name}: {self.provider} is not available "
                              f"(have {', '.join(onnxruntime.get_available_providers())})")

    def load(self, model: torch.nn.Module, batch_size: int) -> None:
        self.check()
        import onnxruntime

        from ..models import OnnxModel

        if isinstance(model, OnnxModel):  # an ONNX file: run as it is
            try:
                model.check_batch(batch_size)
            except BadInput as error:
                raise Unsupported(f"{self.name}: {error}") from None
            data = model.data
        else:
            buffer = io.BytesIO()
            example = torch.randn(batch_size, *self.input_shape)
            torch.onnx.export(model, (example,), buffer, input_names=["images"], output_names=["logits"],
                              dynamo=False, opset_version=17)
            data = buffer.getvalue()
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        with self._errors():
            self._session = onnxruntime.InferenceSession(data, options, providers=[self.provider])
        self._input, self._output = self._session.get_inputs()[0].name, self._session.get_outputs()[0].name

    def prepare_input(self, images: torch.Tensor) -> np.ndarray:
        return images.numpy()

    def predict(self, inputs: np.ndarray) -> torch.Tensor:
        with self._errors():
            return torch.from_numpy(self._session.run([self._output], {self._input: inputs})[0])

    @contextlib.contextmanager
    def _errors(self):
        """ONNX Runtime's errors derive from Exception only: they become RuntimeError, a library failure."""
        try:
            yield
        except Exception as error:
            if type(error).__module__.startswith("onnxruntime"):
                raise RuntimeError(f"{self.name}: {type(error).__name__}: {error}") from error
            raise

    def unload(self) -> None:
        self._session = None

    def version(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} ({self.provider})"

    def describe(self) -> dict:
        return {"lib": self.name, "precision": self.precision, "device": self.device.type, "provider": self.provider}
