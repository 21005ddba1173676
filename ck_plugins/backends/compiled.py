"""torch.compile (inductor) backends: fp32, fp16, bf16; layers are fused, so per-layer times come from eager."""
from __future__ import annotations

import torch

from .base import import_compiler
from .torch_eager import EagerBackend, EagerConfig

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompiledBackend(EagerBackend):
    fused = True

    def __init__(self, name: str, config: EagerConfig, mode: str = "default", freezing: bool = False,
                 dynamic_batch: bool = False):
        super().__init__(name, config)
        self.mode, self.freezing, self.dynamic_batch = mode, freezing, dynamic_batch
        self.batch_agnostic = dynamic_batch  # a static compilation is specialised to one batch size
        self._compiled = None

    def prepare_host(self) -> None:
        import_compiler()

    def load(self, model, batch_size: int) -> None:
        super().load(model, batch_size)
        import torch._inductor.config as inductor_config

        inductor_config.freezing = self.freezing
        torch._dynamo.reset()
        self._compiled = torch.compile(self.model, mode=self.mode, dynamic=None if self.dynamic_batch else False)

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        x = super().prepare_input(images)
        if self.dynamic_batch and len(x) > 1:  # batch 1 is specialised by dynamo whatever we ask: its own graph
            torch._dynamo.mark_dynamic(x, 0)
        return x

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._compiled(inputs)

    def unload(self) -> None:
        self._compiled = None
        torch._dynamo.reset()  # dynamo's caches hold the compiled graphs, and through them the weights
        super().unload()

    def version(self) -> str:
        try:
            import triton

            return f"{super().version()}, triton {triton.__version__}"
        except ImportError:
            return f"{super().version()} (inductor C++ on the CPU)"

    def describe(self) -> dict:
        return {**super().describe(), "compile_mode": self.mode, "freezing": self.freezing,
                "dynamic_batch": self.dynamic_batch}

    def layer_model(self):
        return None  # inductor fuses layers: per-layer hooks would time the eager model, not this one
