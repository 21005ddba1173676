"""The null backend: returns at once. Measures the harness's own overhead; lets CI run the whole pipeline."""
from __future__ import annotations

import torch
from torch import nn

from .base import Backend


class NullBackend(Backend):
    name = "null"
    precision = "none"
    runs_network = False

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self._logits = torch.zeros(1, 1000)

    def check(self) -> None:
        return None

    def load(self, model: nn.Module, batch_size: int) -> None:
        self._logits = torch.zeros(batch_size, 1000)

    def prepare_input(self, images: torch.Tensor) -> object:
        return images

    def predict(self, inputs: object) -> torch.Tensor:
        return self._logits

    def unload(self) -> None:
        self._logits = torch.zeros(1, 1000)

    def version(self) -> str:
        return "none (returns at once)"
