"""A real result service on the loopback for the service benchmarks (fuzz, load): start, points, stop."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

TOKEN, ADMIN = "bench-submitter-token-0123", "bench-admin-token-0123456"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fixtures.build import valid_point_data  # noqa: E402  (the tests' valid point: one definition)


def point(tag: int, batch: int = 16) -> dict:
    """A valid H200 point, distinct for each tag."""
    return valid_point_data(f"{tag:040x}", batch)


def token(i: int) -> str:
    """Submitter i's token (0 is TOKEN): the rate limit is per submitter, so a crowd has many."""
    return TOKEN if i == 0 else f"bench-submitter-{i:06d}-token"


def auth(i: int) -> dict:
    return {"Authorization": f"Bearer {token(i)}", "Content-Type": "application/json"}


class Service:
    def __init__(self, data: Path | None = None, submitters: int = 1, options: tuple[str, ...] = ()):
        """A real `serve` with `submitters` tokens (token(i)) and serve's `options` (its budgets)."""
        self.data = Path(data or tempfile.mkdtemp(prefix="ckpb-service-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        tokens = ",".join(f"bench{i}:{token(i)}" for i in range(submitters))
        env = dict(os.environ, CKPB_TOKENS=tokens, CKPB_ADMIN_TOKEN=ADMIN)
        self.proc = subprocess.Popen([sys.executable, "-m", "ck_plugins", "serve", "--data", str(self.data),
                                      "--port", str(self.port), *options], env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/api/leaderboard", timeout=2)
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the service did not start") from None
                time.sleep(0.2)

    def post(self, body: bytes, headers=None, path="/api/submissions") -> tuple[int, dict, float]:
        start = time.perf_counter()
        request = urllib.request.Request(self.url + path, data=body, method="POST", headers=headers or AUTH)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        try:
            answer = json.loads(text or b"{}")
        except ValueError:
            answer = {"raw": text[:200].decode(errors="replace")}
        return status, answer, time.perf_counter() - start

    def get(self, path: str) -> tuple[int, float]:
        start = time.perf_counter()
        with urllib.request.urlopen(self.url + path, timeout=120) as response:
            response.read()
            return response.status, time.perf_counter() - start

    def published(self, sid: str) -> bool:
        with urllib.request.urlopen(f"{self.url}/api/submissions/{sid}", timeout=60) as response:
            return json.loads(response.read())["published"]

    def stop(self) -> None:
        """SIGTERM: the service stops after the commit in progress (the rest is published at its next start)."""
        self.proc.terminate()
        self.proc.wait(timeout=120)
