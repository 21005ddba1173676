"""Dense peak rates per GPU and precision (ck_plugins/data/peaks.json). No torch."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(resources.files("ck_plugins").joinpath("data/peaks.json").read_text())


def peak_tflops(gpu: str | None, precision: str) -> float | None:
    """The datasheet's dense TFLOP/s of `gpu` (a device name) at `precision`; None where unknown."""
    if not gpu:
        return None
    table = _table()
    key = {"amp": "fp16"}.get(precision, precision)
    for fragment, name in table["gpu_names"].items():  # most specific first: "H100 PCIe" before "H100"
        if fragment in gpu:
            return table["peak_tflops_dense"][name].get(key)
    return None
