"""The adaptive backend: a plan file's per-layer configurations built into one model (see adaptive.py)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import Unsupported
from .torch_eager import EagerBackend, EagerConfig, apply_global_flags


class AdaptiveBackend(EagerBackend):
    """fp32 NCHW images in, fp32 logits out; each layer under its planned precision, layout and switches.

    The plan file (written by `ck_plugins adaptive`) names the model, the batch size and the device it was
    planned for; the process runs fp32 with cuDNN on and TF32 off, and layers that want otherwise switch.
    """
    loads_ahead = False  # its layers are cast and moved by the plan's wrappers, not checked to launch no kernel

    def __init__(self, name: str, plan_path: str, cuda_graph: bool = False):
        self.plan_path, self.plan, self.problem = plan_path, {}, None
        try:
            self.plan = self._read(plan_path)
        except Unsupported as error:
            self.problem = error  # check() raises it: a bad plan is a failed point, not a crash
        super().__init__(name, EagerConfig(self.plan.get("device", "cpu"), "fp32", cuda_graph=cuda_graph))

    def check(self) -> None:
        if self.problem:
            raise self.problem
        super().check()

    @staticmethod
    def _read(path: str) -> dict:
        if not path:
            raise Unsupported("adaptive needs a plan file (--plan, CK_ADAPTIVE_PLAN): `ck_plugins adaptive` writes one")
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise Unsupported(f"adaptive plan {path}: unreadable ({error})") from None
        from .. import adaptive

        try:
            adaptive.plan_from_json(data)
            if data.get("device") not in ("cpu", "cuda"):
                raise ValueError(f"device {data.get('device')!r}: expected cpu or cuda")
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise Unsupported(f"adaptive plan {path}: {error}") from None
        return data

    def load(self, model: torch.nn.Module, batch_size: int) -> None:
        from .. import adaptive

        self.check()
        apply_global_flags(self.config)
        missing = sorted(set(self.plan["plan"]) - {name for name, _ in model.named_modules()})
        if missing:
            raise Unsupported(f"adaptive plan {self.plan_path} is for {self.plan.get('model')}: layers {missing[:3]} "
                              "are not in this model")
        self.model = adaptive.build(model, adaptive.plan_from_json(self.plan)).to(self.device)
        self._graph = None

    def describe(self) -> dict:
        keys = ("model", "batch_size", "digest", "predicted_ms", "greedy_ms", "planned_ms", "best_single_lib",
                "best_single_lib_ms", "configs_used", "cuda_graph")
        return {**super().describe(), "precision": "mixed", "plan": {k: self.plan.get(k) for k in keys}}

    def shared_plans(self) -> None:
        return None  # each layer runs its planned lib's settings: no one key

    def layer_model(self):
        return None  # the layers are wrapped: the plan's per-layer predictions come from the candidate libs' points
