"""The cuDNN execution plans the cudnn-graph libs chose by timing, kept on disk so that a second run does not tune
again: one JSON file (caches.cudnn_plans()), keyed by GPU, cuDNN version and the block's shapes and types.
No torch, no cuDNN: the file is plain data."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

VERSION = 1


@dataclass(frozen=True)
class PlanChoice:
    plan: str  # cuDNN's name of the execution plan (engine and knobs)
    ms: float  # its median time per execution when it was chosen
    tried: int  # how many candidate plans were timed


def block_key(gpu: str, cudnn_version: int, dtype: str, x_shape, w_shape, stride, padding, dilation,
              add: bool, relu: bool) -> str:
    """One graph's identity: everything that changes which plans exist or which is fastest."""
    dims = lambda v: "x".join(str(int(n)) for n in v)  # noqa: E731
    return (f"{gpu}|cudnn {cudnn_version}|{dtype}|in {dims(x_shape)}|w {dims(w_shape)}|s {dims(stride)}"
            f"|p {dims(padding)}|d {dims(dilation)}|{'add' if add else 'noadd'}|{'relu' if relu else 'norelu'}")


class PlanCache:
    """Choices by key; put() writes the file at once (merged with what other processes wrote, replaced atomically)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._choices = self._read()

    def get(self, key: str) -> PlanChoice | None:
        return self._choices.get(key)

    def put(self, key: str, choice: PlanChoice) -> None:
        self._choices = {**self._read(), key: choice}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": VERSION, "plans": {k: asdict(v) for k, v in sorted(self._choices.items())}}
        handle, tmp = tempfile.mkstemp(prefix=".plans-", dir=self.path.parent)
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=1)
        os.replace(tmp, self.path)

    def __len__(self) -> int:
        return len(self._choices)

    def _read(self) -> dict[str, PlanChoice]:
        """The file's choices; a missing file is empty, an unreadable one is ignored (and said) and rewritten."""
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
            return {k: PlanChoice(str(v["plan"]), float(v["ms"]), int(v["tried"])) for k, v in data["plans"].items()}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            print(f"warning: ignoring the cuDNN plan cache {self.path}: {error}", file=sys.stderr)
            return {}
