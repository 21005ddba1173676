"""The submission client: validate local points (every problem with its path), bundle them, send them."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from .validate import MAX_POINTS, check_point


def collect(repo: Path, entries: list[str] | None = None) -> tuple[list[dict], list[str], list[str]]:
    """The points of `repo`'s experiment entries (all, or those named), every problem found in them, and what is
    not meant to be sent ("<path>: why"): failed points (a failure is recorded locally, not ranked) and points
    measured from a checkout without its commit."""
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
            skipped.append(f"{path}: {why}")
            continue
        found = check_point(item, str(path))
        problems += found
        if not found:
            points.append(item)
    return points, problems, skipped


def _not_for_sending(item) -> str | None:
    try:
        runs = [c["run"] for c in item["characteristics_list"]]
        if not any(r.get("run_success") is True for r in runs):
            return "a failed point (kept here, not sent)"
        if item["features"]["repo"]["commit"] in ("", "unknown"):
            return "measured from a copy without its git commit (set CKPB_COMMIT when measuring)"
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
