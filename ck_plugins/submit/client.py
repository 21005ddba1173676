"""The submission client: validate local points (every problem with its path), bundle them, send them."""
from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path, PurePath

from ..libnames import is_harness
from .validate import MAX_POINTS, MIN_REPETITIONS, check_point


def collect(repo: Path, entries: list[str] | None = None) -> tuple[list[dict], list[str], list[tuple[str, str]]]:
    """The points of `repo`'s experiment entries (all, or those named) as they are published, every problem found in
    them, and what is not meant to be sent, as (kind, "<path>: why"): harness checks, brief points, failed points
    (recorded locally, never ranked) and points measured from a checkout without its commit. Only a point that
    should be sendable and is invalid is a problem."""
    points, problems, skipped = [], [], []
    for path in sorted(Path(repo).glob("experiment/*/ckp-*.*.json")):
        if entries and path.parent.name not in entries:
            continue
        try:
            item = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            problems.append(f"{path}: not valid JSON ({error})")
            continue
        why = _not_for_sending(item)
        if why:
            skipped.append((why[0], f"{path}: {why[1]}"))
            continue
        item = published(item)
        found = check_point(item, str(path))
        problems += found
        if not found:
            points.append(item)
    return points, problems, skipped


def skipped_summary(skipped: list[tuple[str, str]]) -> str:
    """'skipped 4: 2 harness checks, 2 brief points' (nothing when nothing was skipped)."""
    counts = Counter(kind for kind, _ in skipped)
    return f"skipped {len(skipped)}: " + ", ".join(f"{n} {kind if n > 1 else kind.rstrip('s')}"
                                                   for kind, n in counts.items()) if skipped else ""


def published(item: dict) -> dict:
    """The point as the service publishes it: an ONNX model named by its file's name (its digest is in
    features/model/sha256), never by a local path; the point on disk keeps the full path."""
    if not isinstance(item, dict) or not isinstance(item.get("choices"), dict):
        return item  # malformed: check_point names the field
    env = item["choices"].get("env")
    model = env.get("CK_MODEL") if isinstance(env, dict) else None
    if isinstance(model, str) and model.startswith("onnx:") and ("/" in model or "\\" in model):
        item = copy.deepcopy(item)
        item["choices"]["env"]["CK_MODEL"] = "onnx:" + PurePath(model[5:].replace("\\", "/")).name
    return item


def _not_for_sending(item) -> tuple[str, str] | None:
    try:
        runs = [c["run"] for c in item["characteristics_list"]]
        lib = item["choices"]["env"].get("CK_LIB", "")
        successful = sum(r.get("run_success") is True for r in runs)
        if not successful:
            return "failed points", "a failed point (kept here, not sent)"
        if isinstance(lib, str) and is_harness(lib):
            return "harness checks", f"a harness check ({lib} runs no network: never ranked)"
        if successful < MIN_REPETITIONS:
            return "brief points", (f"{successful} successful repetitions; the service ranks points of "
                                    f"{MIN_REPETITIONS} or more")
        if item["features"]["repo"]["commit"] in ("", "unknown"):
            return "points without a commit", "measured from a copy without its git commit (set CKPB_COMMIT)"
    except (KeyError, TypeError, AttributeError):
        return None  # malformed: check_point names the field
    return None


def send(url: str, token: str, points: list[dict]) -> list[dict]:
    """POST the points in bundles of at most MAX_POINTS; the service's answers, one per bundle."""
    answers = []
    for start in range(0, len(points), MAX_POINTS):
        body = json.dumps({"points": points[start:start + MAX_POINTS]}).encode()
        request = urllib.request.Request(url.rstrip("/") + "/api/submissions", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                answers.append(json.loads(response.read()))
        except urllib.error.HTTPError as error:
            detail = json.loads(error.read() or b"{}")
            raise RuntimeError(f"{error.code}: {detail.get('error')}; " + "; ".join(detail.get("problems", [])[:10]))
    return answers
