"""Dense peak rates per GPU and precision (ck_plugins/data/peaks.json). No torch."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(resources.files("ck_plugins").joinpath("data/peaks.json").read_text())


PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "amp", "mixed", "fp8", "int8")  # the closed set, lower case


SUFFIX = re.compile(r"^(\d+gb|hbm\d?e?|sxm\d?|pcie|nvl|nvlink)$")  # memory, package: the same chip


def normalised(name: str) -> list[str]:
    """A device name as words: case-folded, '-' and '_' as spaces, the vendor's 'nvidia' dropped."""
    words = re.sub(r"[-_\s]+", " ", str(name).casefold()).split()
    return words[1:] if words[:1] == ["nvidia"] else words


def peak_tflops(gpu: str | None, precision: str) -> float | None:
    """The datasheet's dense TFLOP/s of `gpu` (a device name) at `precision` (case-folded; autocast counts as fp16,
    a mixed-precision plan as its fastest precision); None where the GPU or the precision is unknown. The name must
    be a known chip followed only by memory and package words ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"):
    never a substring ("Totally Fake GPU (not an H200)", "NVIDIA RTX A1000" are unknown)."""
    if not gpu:
        return None
    table = _table()
    key = {"amp": "fp16", "mixed": "fp16"}.get(str(precision).casefold(), str(precision).casefold())
    words = normalised(gpu)
    for fragment, name in table["gpu_names"].items():  # most specific first: "H100 PCIe" before "H100"
        chip = normalised(fragment)
        if words[:len(chip)] == chip and all(SUFFIX.match(w) for w in words[len(chip):]):
            return table["peak_tflops_dense"][name].get(key)
    return None


def known_gpus() -> list[str]:
    return list(_table()["gpu_names"])


def cpu_ceiling_tflops() -> float:
    return float(_table()["cpu_ceiling_tflops"])
