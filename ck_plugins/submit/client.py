"""The submission client: validate local points (every problem with its path), bundle them, send them."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path, PurePath
from typing import Callable

from .. import point
from ..libnames import is_harness
from .guard import Budgets, work
from .validate import MAX_POINTS, MIN_REPETITIONS, check_point


def collect(repo: Path, entries: list[str] | None = None) -> tuple[list[dict], list[str], list[tuple[str, str]]]:
    """The points of `repo`'s experiment entries (all, or those named) as they are published, every problem found in
    them, and what is not meant to be sent, as (kind, "<path>: why"): harness checks, brief points, failed points
    (recorded locally, never ranked) and points measured from a checkout without its commit. Only a point that
    should be sendable and is invalid is a problem."""
    points, problems, skipped = [], [], []
    for path in point.repository_files(Path(repo)):
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
    try:
        model = point.env(item).get("CK_MODEL")
    except (KeyError, TypeError, AttributeError):
        return item  # malformed: check_point names the field
    if isinstance(model, str) and model.startswith("onnx:") and ("/" in model or "\\" in model):
        return point.with_model(item, "onnx:" + PurePath(model[5:].replace("\\", "/")).name)
    return item


def _not_for_sending(item) -> tuple[str, str] | None:
    try:
        runs = point.runs(item)
        lib = point.env(item).get("CK_LIB", "")
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


def bundles(points: list[dict], max_points: int = MAX_POINTS, max_work: int = Budgets.max_work) -> list[list[dict]]:
    """The points in request-sized bundles, in order: at most `max_points` each and at most `max_work` numbers of
    repetition data (the service's work limit), a point bigger than that alone in its bundle."""
    out, current, cost = [], [], 0
    for item in points:
        size = work([item])
        if current and (len(current) >= max_points or cost + size > max_work):
            out.append(current)
            current, cost = [], 0
        current.append(item)
        cost += size
    return out + ([current] if current else [])


RETRIES = 5  # a bundle refused for the submitter's rate (429) is sent again after the service's Retry-After


def send(url: str, token: str, points: list[dict], sleep: Callable[[float], None] = time.sleep) -> list[dict]:
    """POST the points in bundles (`bundles`); the service's answers, one per bundle. A 429 waits as long as the
    service says (Retry-After) and tries again, up to RETRIES times."""
    answers = []
    for bundle in bundles(points):
        body = json.dumps({"points": bundle}).encode()
        for attempt in range(RETRIES + 1):
            request = urllib.request.Request(url.rstrip("/") + "/api/submissions", data=body, method="POST",
                                             headers={"Authorization": f"Bearer {token}",
                                                      "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    answers.append(json.loads(response.read()))
                break
            except urllib.error.HTTPError as error:
                detail = json.loads(error.read() or b"{}")
                if error.code == 429 and attempt < RETRIES:
                    sleep(float(error.headers.get("retry-after") or 60))
                    continue
                raise RuntimeError(f"{error.code}: {detail.get('error')}; "
                                   + "; ".join(detail.get("problems", [])[:10])) from None
    return answers
