"""CK repository files: atomic JSON writes, alias files, experiment entries. No torch here."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

MODULE_UIDS = {"program": "b0ac08fe1d3c2615", "os": "0440cb72c2bc5cc6", "experiment": "bc0409fb61f0aa82",
               "script": "84e27ad9dd12e734", "module": "032630d041b4fd8a"}


def write_json_atomic(path: Path | str, data, indent: int | None = 1) -> Path:
    """Write JSON to a temporary file in the same folder, fsync, then rename: readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=indent, sort_keys=False, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
