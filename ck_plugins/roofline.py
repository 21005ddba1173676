"""Dense peak rates per GPU and precision (ck_plugins/data/peaks.json). No torch."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(resources.files("ck_plugins").joinpath("data/peaks.json").read_text())


PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "amp", "mixed", "fp8", "int8")  # the closed set, lower case


def peak_tflops(gpu: str | None, precision: str) -> float | None:
    """The datasheet's dense TFLOP/s of `gpu` (a device name) at `precision` (case-folded; autocast counts as fp16,
    a mixed-precision plan as its fastest precision); None where the GPU or the precision is unknown."""
    if not gpu:
        return None
    table = _table()
    key = {"amp": "fp16", "mixed": "fp16"}.get(str(precision).casefold(), str(precision).casefold())
    for fragment, name in table["gpu_names"].items():  # most specific first: "H100 PCIe" before "H100"
        if fragment in gpu:
            return table["peak_tflops_dense"][name].get(key)
    return None


def known_gpus() -> list[str]:
    return list(_table()["gpu_names"])


def cpu_ceiling_tflops() -> float:
    return float(_table()["cpu_ceiling_tflops"])
