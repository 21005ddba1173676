"""Where this checkout is, and how we write files: atomically, as JSON, named by deterministic UIDs. A leaf
module (it imports nothing of ours), so anything may use it without an import circle."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # this checkout
OUT_ROOT = REPO_ROOT / "out"  # where commands write by default (ignored by git): reports, results, service data


def json_text(data, indent: int | None = 1) -> str:
    """JSON as we write it: indented, or compact (no spaces at all) with indent=None; NaN refused."""
    return json.dumps(data, indent=indent, separators=None if indent is not None else (",", ":"), allow_nan=False) + "\n"


def write_json_atomic(path: Path | str, data, indent: int | None = 1) -> Path:
    """Write JSON to a temporary file in the same folder, fsync, then rename: readers see all or nothing."""
    path = Path(path)
    text = json_text(data, indent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def uid_of(text: str) -> str:
    """A deterministic 16-hex CK UID: the same name or features give the same UID on every machine."""
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:16]
