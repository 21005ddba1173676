"""The service's budgets: what one connection, one request and one submitter may take.

- Connections: a request's headers must arrive within `header_timeout_s` of the connection (or of the last
  response), its body within `body_timeout_s` of its headers; idle keep-alive connections close after uvicorn's
  5 s; past `max_connections` open at once a new connection is answered 503 and closed. Each is a JSON answer
  naming what was exceeded where a response can still be sent (408, 503), as is a request h11 cannot parse (400
  naming the header, e.g. a Content-Length of -1), never uvicorn's plain text.
- Requests: at most `max_work` numbers of repetition data (iteration times and per-layer times over all points
  of one body): 413 naming `work` (validating one body of the limit takes about a second on one core).
- Submitters: a token bucket per submitter, `burst` submissions at once and `per_minute` after: 429 naming
  `rate`, with Retry-After. The clock is injected (tests advance it).
"""
from __future__ import annotations

import json
import math
import os
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import point


@dataclass
class Budgets:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 4096
    max_work: int = 200_000  # numbers of repetition data in one request
    burst: int = 30  # submissions a submitter may send at once
    per_minute: float = 30.0  # and after that, per minute
    # validation processes (one per core), besides one for drawing the dashboard; 0: both in threads of the service
    # process (tests of the application alone, where starting processes would cost more than the work)
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)


def work(points: list) -> int:
    """Numbers of repetition data in a bundle: every iteration time and per-layer time of every repetition (what
    validating it costs), counted on the raw JSON before anything else looks at it."""
    return sum(point.work(item) for item in points)


class RateLimit:
    """A token bucket per submitter: `burst` at once, refilled at `per_minute`."""

    def __init__(self, burst: int, per_minute: float, clock: Callable[[], float] = time.monotonic):
        self.burst, self.rate, self.clock = float(burst), per_minute / 60.0, clock
        self.buckets: dict[str, tuple[float, float]] = {}  # submitter -> (tokens, when)
        self.lock = threading.Lock()

    def take(self, who: str) -> float:
        """0 when `who` may submit now (a token is taken), else the seconds until a token is there."""
        with self.lock:
            now = self.clock()
            tokens, when = self.buckets.get(who, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.rate)
            if tokens >= 1:
                self.buckets[who] = (tokens - 1, now)
                return 0.0
            self.buckets[who] = (tokens, now)
            return (1 - tokens) / self.rate if self.rate > 0 else math.inf


def background_process(niceness: int) -> None:
    """A helper process's initializer: lower its priority by `niceness`, and end it when the service ends, however
    the service ends (a killed service would otherwise leave it waiting for work forever)."""
    import multiprocessing.connection

    if niceness:
        os.nice(niceness)
    parent = multiprocessing.parent_process()
    if parent is not None:
        def watch():
            multiprocessing.connection.wait([parent.sentinel])
            os._exit(0)
        threading.Thread(target=watch, daemon=True).start()


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit of open files towards `wanted` (within the hard limit); the connections the
    service may hold open at once: the limit less a reserve for the database, git and the threads' files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + 512 if hard == resource.RLIM_INFINITY else min(hard, wanted + 512)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(16, min(wanted, soft - 512))


def _json_response(status: int, reason: str, message: str, problems: list[str], extra: bytes = b"") -> bytes:
    body = json.dumps({"error": message, "problems": problems}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


def guarded_protocol(budgets: Budgets) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the connection budgets above (a class per configuration, as uvicorn wants one)."""

    class Guarded(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._guard = None
            self._wrap_parser()
            self._over = len(self.connections) > budgets.max_connections
            if self._over:  # answered once its request is read (closing on unread bytes resets the connection)
                self._guard = self.loop.call_later(1.0, self._refuse)
                return
            self._arm(budgets.header_timeout_s, "headers")

        def _refuse(self) -> None:
            if not self.transport.is_closing():
                self.transport.write(_json_response(503, "Service Unavailable", "too many connections open at once",
                                                    [f"connections: more than {budgets.max_connections} open; retry "
                                                     "in a moment"], b"retry-after: 5\r\n"))
                self.transport.close()

        def _wrap_parser(self) -> None:
            """Keep h11's reason when it refuses a request, to name it in the 400."""
            parse, self._refused = self.conn.next_event, ""

            def next_event():
                try:
                    return parse()
                except h11.RemoteProtocolError as error:
                    self._refused = str(error)[:200]
                    raise
            self.conn.next_event = next_event

        def _arm(self, seconds: float, phase: str) -> None:
            self._disarm()
            self._guard = self.loop.call_later(seconds, self._expired, phase, seconds)

        def _disarm(self) -> None:
            if getattr(self, "_guard", None) is not None:
                self._guard.cancel()
                self._guard = None

        def _expired(self, phase: str, seconds: float) -> None:
            self._guard = None
            if self.transport.is_closing():
                return
            if self.cycle is None:  # a first request still arriving is told why (an idle keep-alive just closes)
                self.transport.write(_json_response(408, "Request Timeout", f"the request's {phase} took too long",
                                                    [f"{phase}: not complete within {seconds:g} s"]))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._over:
                self._disarm()
                self._refuse()
                return
            super().data_received(data)
            self._follow()

        _over = False

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._follow()

        def _follow(self) -> None:
            """The timer for where the connection stands: waiting for headers, for a body, or for nothing."""
            if self.transport.is_closing():
                self._disarm()
            elif self.cycle is None or self.cycle.response_complete:
                if self._guard is None or self._phase_started is not None:
                    self._phase_started = None
                    self._arm(budgets.header_timeout_s, "headers")
            elif self.conn.their_state is h11.SEND_BODY:
                if self._phase_started is not self.cycle:
                    self._phase_started = self.cycle
                    self._arm(budgets.body_timeout_s, "body")
            else:
                self._phase_started = self.cycle
                self._disarm()  # the whole request is in: the application answers it

        _phase_started = None

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            reason = self._refused or "malformed request"
            self.transport.write(_json_response(400, "Bad Request", f"malformed HTTP request: {reason}",
                                                [f"headers: {reason} (HTTP/1.1 framing, e.g. a Content-Length that is "
                                                 "not a non-negative integer)"]))
            self.transport.close()

    return Guarded
