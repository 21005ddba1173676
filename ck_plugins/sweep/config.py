"""A sweep's configuration: the JSON presets (script/explore-batch-size-libs-models/*.json, validated by
schemas/sweep-config-v1.json) and the command line's lists and shard. No torch."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from ..files import REPO_ROOT
from ..errors import BadInput
from ..modelnames import DEFAULT_INPUT_SHAPE, SEED_MODELS, check, parse_input_shape

CONFIG_DIR = REPO_ROOT / "script" / "explore-batch-size-libs-models"


@dataclass(frozen=True)
class SweepConfig:
    name: str
    models: tuple[str, ...]
    libs: tuple[str, ...] | str
    batch_sizes: tuple[int, ...]
    repetitions: int = 3
    iterations: int = 20
    warmup: int = 5
    per_layer: bool = True
    per_layer_passes: int = 1
    memory_format: str = "lib-default"
    time_limit_s: float = 900.0
    min_repetition_ms: float = 0.0  # > 0: iterations is a minimum; a repetition lasts at least this long
    threads: int = 0  # > 0: torch's intra-op CPU threads for every point (recorded as CK_NUM_THREADS)
    input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE  # one input without the batch


def _leaf(error):
    """Inside a oneOf, the error of the alternative that fits the value's type, deepest first: it names the field."""
    if not error.context:
        return error
    candidates = [e for e in error.context if e.validator != "type"] or list(error.context)
    return _leaf(max(candidates, key=lambda e: len(e.absolute_path)))


def load_config(name_or_path: str) -> SweepConfig:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise BadInput("sweep config", name_or_path, f"a preset ({presets}) or a path to a JSON file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BadInput("sweep config", str(path), f"valid JSON ({error})") from None
    schema = json.loads((Path(__file__).parent.parent / "schemas" / "sweep-config-v1.json").read_text())
    errors = [_leaf(e) for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]
    found = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
    if found:
        raise BadInput("sweep config", str(path), "a valid configuration: " + "; ".join(found))
    models = SEED_MODELS if data["models"] == "all" else tuple(check(name).text for name in data["models"])
    libs = data["libs"] if data["libs"] == "available" else tuple(data["libs"])
    options = {k: data[k] for k in ("repetitions", "iterations", "warmup", "per_layer", "per_layer_passes",
                                    "memory_format", "time_limit_s", "min_repetition_ms", "threads") if k in data}
    if "input_shape" in data:
        options["input_shape"] = parse_input_shape(data["input_shape"])
    return SweepConfig(path.stem, models, libs, expand_batch_sizes(data["batch_sizes"]), **options)


def expand_batch_sizes(spec) -> tuple[int, ...]:
    if isinstance(spec, list):
        return tuple(spec)
    if spec.get("powers_of_two"):
        sizes, size = [], 1
        while size <= spec["stop"]:
            if size >= spec["start"]:
                sizes.append(size)
            size *= 2
        return tuple(sizes)
    return tuple(range(spec["start"], spec["stop"] + 1, spec.get("step", 1)))  # stop inclusive, as CK's loop


def parse_list(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise BadInput("shard", text, "I/N with 0 <= I < N, e.g. 0/4 (Slurm: $SLURM_ARRAY_TASK_ID/4)") from None
    if not 0 <= index < count:
        raise BadInput("shard", text, "I/N with 0 <= I < N, e.g. 0/4 (Slurm: $SLURM_ARRAY_TASK_ID/4)")
    return index, count
