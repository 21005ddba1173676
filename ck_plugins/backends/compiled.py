"""torch.compile (inductor) backends: fp32, fp16, bf16; layers are fused, so per-layer times come from eager."""
from __future__ import annotations

import torch

from .torch_eager import EagerBackend, EagerConfig

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompiledBackend(EagerBackend):
    fused = True

    def __init__(self, name: str, config: EagerConfig, mode: str = "default", freezing: bool = False):
        super().__init__(name, config)
        self.mode, self.freezing = mode, freezing
        self._compiled = None

    def load(self, model, batch_size: int) -> None:
        super().load(model, batch_size)
        import torch._inductor.config as inductor_config

        inductor_config.freezing = self.freezing
        torch._dynamo.reset()
        self._compiled = torch.compile(self.model, mode=self.mode, dynamic=False)

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._compiled(inputs)

    def describe(self) -> dict:
        return {**super().describe(), "compile_mode": self.mode, "freezing": self.freezing}

    def layer_model(self):
        return None  # inductor fuses layers: per-layer hooks would time the eager model, not this one
