"""The result service: validated submissions, a leaderboard dashboard, the results repository over HTTP.

POST /api/submissions        Authorization: Bearer <submitter token>; body {"points": [point, ...]}
GET  /api/submissions/{id}   whether it is published (or withdrawn)
POST /api/submissions/{id}/withdraw   Authorization: Bearer <admin token>
GET  /api/leaderboard        JSON
GET  /api/regressions        JSON: steps in time between adjacent software versions (compare.regressions)
GET  /                       the dashboard
GET  /results.git/...        the results repository (git's dumb HTTP protocol: `ck pull repo --url=.../results.git`)
Every rejection is a 4xx naming the field; nothing invalid is stored. Validation and git run in worker threads,
so reads stay fast while a submission is processed.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import math
import re
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .guard import Budgets, RateLimit, background_process, work
from .store import HELD_FACTOR, Results, Store, prepare
from .validate import MAX_BODY_BYTES, Rejected, check_and_read, parse

MIN_TOKEN = 16


def _error(status: int, message: str, problems: list[str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "problems": problems or []}, status_code=status)


def check_tokens(tokens: dict[str, str], admin_token: str) -> None:
    """Refuse at start-up what would give credit to the wrong person: short or blank tokens, a token given to two
    submitters, a submitter token equal to the admin token. `tokens` maps token -> name; pairs are checked by
    `parse_tokens` before they become a dict."""
    for who, secret in [("the admin", admin_token)] + [(name, token) for token, name in tokens.items()]:
        if len(secret.strip()) < MIN_TOKEN:
            raise ValueError(f"the token of {who}: at least {MIN_TOKEN} characters that are not spaces")
    if admin_token in tokens:
        raise ValueError(f"the token of {tokens[admin_token]}: equal to the admin token")


def parse_tokens(text: str) -> dict[str, str]:
    """'name:token,name:token' -> {token: name}; a token given twice is refused."""
    found: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, token = item.partition(":")
        if not sep or not name:
            raise ValueError(f"{item[:20]!r}: expected NAME:TOKEN")
        if token in found:
            raise ValueError(f"the token of {name} is also {found[token]}'s: each submitter needs their own")
        found[token] = name
    return found


def create_app(data_dir: Path, tokens: dict[str, str], admin_token: str, db_url: str | None = None,
               alias: str | None = None, budgets: Budgets | None = None) -> FastAPI:
    """`tokens` maps each submitter's token to their name; `budgets` bounds what one request and one submitter
    may take (guard.py; the connection budgets are the server's, see guard.guarded_protocol)."""
    check_tokens(tokens, admin_token)
    budgets = budgets or Budgets()
    rate = RateLimit(budgets.burst, budgets.per_minute, budgets.clock)
    store = Store(Path(data_dir), db_url, alias, background=True)  # answers once stored; git follows
    dashboard = Dashboard(store, own_process=budgets.processes > 0)
    app = FastAPI(title="ck-precision-bench results", docs_url=None, redoc_url=None)
    app.router.on_shutdown.append(store.close)  # the publisher stops; the next start publishes what is left
    app.router.on_startup.append(dashboard.start)
    app.router.on_shutdown.append(dashboard.close)  # the renderer process ends with the service
    digests = {hashlib.sha256(t.encode()).digest(): name for t, name in tokens.items()}

    def bearer(request: Request) -> str | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return given.strip() if scheme.lower() == "bearer" else None

    def submitter(request: Request) -> str | None:
        given = bearer(request)
        if given is None:
            return None
        return digests.get(hashlib.sha256(given.encode()).digest())  # a digest lookup leaks nothing of a token

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, error):
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def request_error(_request, error):
        return _error(400, "malformed request", [str(e)[:300] for e in error.errors()])

    validators = Validators(budgets.processes)
    app.router.on_startup.append(validators.start)  # the processes load their modules before the first submission
    app.router.on_shutdown.append(validators.close)

    def store_prepared(name: str, prepared: list):
        answer = store.insert(name, prepared)
        dashboard.refresh()  # start drawing the new results (when due), outside any page request
        return answer

    @app.post("/api/submissions")
    async def submit(request: Request):
        name = submitter(request)
        if name is None:
            return _error(401, "authorization: a valid 'Bearer <token>' header is required")
        wait = rate.take(name)
        if wait:
            answer = _error(429, f"rate: {name} sent more than {budgets.burst} submissions at once or "
                                 f"{budgets.per_minute:g} a minute; retry in {math.ceil(wait)} s",
                            [f"rate: at most {budgets.per_minute:g} submissions a minute per submitter"])
            answer.headers["retry-after"] = str(math.ceil(wait))
            return answer
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            return _error(413, f"content-length: {declared[:20]!r}; at most {MAX_BODY_BYTES} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _error(413, f"body: more than {MAX_BODY_BYTES} bytes")
        found = await validators.run(body, budgets.max_work)  # validation in processes of its own: no GIL held here
        if isinstance(found, tuple):
            return _error(*found)
        return await run_in_threadpool(store_prepared, name, found)  # the database off the event loop

    @app.get("/api/submissions/{sid}")
    def submission(sid: str):
        found = store.status(sid[:36])
        return found if found else _error(404, f"submission {sid[:40]!r}: no such submission")

    @app.post("/api/submissions/{sid}/withdraw")
    def withdraw(sid: str, request: Request):
        if not hmac.compare_digest((bearer(request) or "").encode(), admin_token.encode()):
            return _error(403, "authorization: the admin token is required to withdraw")
        if len(sid) > 36 or not store.withdraw(sid):
            return _error(404, f"submission {sid[:40]!r}: no such submission")
        return {"withdrawn": sid}

    @app.post("/api/points/{digest}/approve")
    def approve(digest: str, request: Request):
        if not hmac.compare_digest((bearer(request) or "").encode(), admin_token.encode()):
            return _error(403, "authorization: the admin token is required to approve")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not store.approve(digest):
            return _error(404, f"point {digest[:70]!r}: no such point")
        return {"approved": digest}

    @app.get("/api/leaderboard")
    def leaderboard():
        return store.leaderboard()

    @app.get("/api/regressions")
    def regressions():
        """The steps across software versions as last worked out (with the page, outside the request path);
        `current` is false while the newest results are still being analysed."""
        dashboard.page()
        version, steps = dashboard.steps
        return {"current": version == store.version, "regressions": steps}

    @app.get("/", response_class=HTMLResponse)
    def page():
        return dashboard.page()

    app.mount("/results.git", StaticFiles(directory=store.bare), name="results")
    app.state.store = store
    return app


RENDER_INTERVAL_S = 5.0  # at most one drawing of the page this often: a stream of submissions is not redrawn each


def validated(body: bytes, max_work: int) -> tuple[int, str, list[str]] | list:
    """A submission's body checked (parse, the work limit, every point's checks) and prepared for storing
    (store.prepare), or the error to answer (status, message, problems). Pure: run in a validation process."""
    try:
        bundle = parse(body)
        cost = work(bundle["points"])
        if cost > max_work:
            return (413, f"work: {cost} numbers of repetition data (iteration and per-layer times) in one request; at "
                         f"most {max_work}: send fewer points or repetitions at a time", [f"work: {cost} > {max_work}"])
        problems, reads = check_and_read(bundle)
        if problems:
            raise Rejected(problems)
    except Rejected as rejected:
        return 422, "submission rejected: " + rejected.problems[0][:300], rejected.problems[:100]
    return prepare(bundle["points"], reads)


def _warm_validation() -> None:
    from .. import point

    point._compiled(point.SCHEMA_VERSION)
    point._validator(point.SCHEMA_VERSION)


def _warm_drawing() -> None:
    from .. import compare, plots  # noqa: F401 - pandas, matplotlib, scipy: imported before the first drawing


class Validators:
    """Where submissions are validated: `processes` processes of their own (the service: CPU-bound checks in
    parallel, never holding the event loop's GIL), or with 0 a worker thread (tests of the application alone)."""

    def __init__(self, processes: int):
        self.processes = processes
        self.pool: ProcessPoolExecutor | None = None
        self.lock = threading.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        with self.lock:
            if self.pool is None:
                self.pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=background_process, initargs=(0,))
            return self.pool

    def start(self) -> None:
        """Start the processes and have each import and compile what validation needs, before the service listens:
        the first submissions do not wait for it."""
        if self.processes:
            for warm in [self._pool().submit(_warm_validation) for _ in range(self.processes)]:
                warm.result(timeout=120)

    async def run(self, body: bytes, max_work: int):
        if not self.processes:
            return await run_in_threadpool(validated, body, max_work)
        return await asyncio.wrap_future(self._pool().submit(validated, body, max_work))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class Dashboard:
    """The page, rendered outside the request path: one renderer thread at a time (matplotlib is not thread-safe),
    cached per published version of the results. A request never waits for plots: it gets the last page, and
    starts a render when the results changed since and the last render began RENDER_INTERVAL_S ago or more (the
    pending list is filled on every request)."""

    def __init__(self, store: Store, clock=time.monotonic, own_process: bool = False):
        self.store, self.clock, self.own_process = store, clock, own_process
        self.pool: ProcessPoolExecutor | None = None  # the renderer: a process, so drawing never holds our GIL
        self.started = -math.inf  # when the last render began
        self.lock = threading.Lock()
        self.rendered: tuple[int, str] | None = None
        self.steps: tuple[int, list[dict]] = (-1, [])  # the version analysed, and its regressions
        self.rendering = False

    def refresh(self, force: bool = False) -> tuple[int, str] | None:
        """Start drawing the current results if they changed and a render is due; the last page drawn."""
        version = self.store.version
        with self.lock:
            current = self.rendered
            stale = current is None or current[0] != version
            due = force or current is None or self.clock() - self.started >= RENDER_INTERVAL_S
            if stale and due and not self.rendering:
                self.rendering, self.started = True, self.clock()
                threading.Thread(target=self._render, args=(version,), daemon=True).start()
        return current

    def page(self, force: bool = False) -> str:
        current = self.refresh(force)
        page = current[1] if current is not None else _page(self.store.leaderboard(),
                                                            "<p>Plots are being drawn; reload in a moment.</p>")
        return page.replace(PENDING, _pending(self.store.pending()), 1)

    def _render(self, version: int) -> None:
        steps = self.steps[1]
        try:
            if not self.own_process:
                html_page, steps = render(self.store.url)
            else:
                if self.pool is None:  # drawing yields the CPU to answering requests
                    self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                    initializer=background_process, initargs=(15,))
                html_page, steps = self.pool.submit(render, self.store.url).result()
        except Exception as error:  # noqa: BLE001 - a page that cannot be drawn still shows the table
            html_page = _page(self.store.leaderboard(), f"<p>Plots unavailable: {html.escape(str(error)[:300])}</p>")
        with self.lock:
            self.rendered, self.steps, self.rendering = (version, html_page), (version, steps), False

    def start(self) -> None:
        """Start the drawing process and have it import what drawing needs, before the service listens."""
        if self.own_process:
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=background_process, initargs=(15,))
            self.pool.submit(_warm_drawing).result(timeout=120)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def wait(self, timeout: float = 60.0) -> str:
        """The page of the current version, drawn if need be (for callers that must see the latest results)."""
        deadline = time.monotonic() + timeout
        while True:
            self.page(force=True)
            with self.lock:
                if self.rendered and self.rendered[0] == self.store.version:
                    return self.rendered[1]
            if time.monotonic() > deadline:
                raise TimeoutError("the dashboard was not drawn in time")
            time.sleep(0.05)


_RESULTS: dict[str, Results] = {}  # in the renderer process: one reader per database, its readings cached


def render(url: str) -> tuple[str, list[dict]]:
    """The page and the regressions, from the database at `url` (run in the renderer process)."""
    results = _RESULTS.setdefault(url, Results(url))
    steps = results.regressions()
    return _page(results.leaderboard(), _plots(results.rows()) + _regressions(steps)), steps


MAX_PLOTS = 12  # the dashboard draws the (platform, model) pairs with the most points, never one per name sent
PENDING = "<!-- pending -->"  # filled on every request: what is stored but not yet published


def _pending(rows: list[dict]) -> str:
    if not rows:
        return ""
    items = "".join(f"<li>submission <code>{html.escape(str(r['id']))}</code>: {int(r['points'])} points</li>"
                    for r in rows[:20])
    more = f"<li>... and {len(rows) - 20} more</li>" if len(rows) > 20 else ""
    return (f"<div id='pending'><h2>Pending ({len(rows)})</h2><p>Accepted and stored; being published to results.git "
            f"(seconds to a minute): they join the leaderboard then.</p><ul>{items}{more}</ul></div>")


def _page(board: list[dict], plots: str) -> str:
    ranked = [r for r in board if r.get("status", "confirmed") == "confirmed"]
    apart = [r for r in board if r.get("status", "confirmed") != "confirmed"]
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>ck-precision-bench results</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:2px 8px}"
            "table{border-collapse:collapse}img{max-width:100%}.held{color:#a00}</style></head><body>"
            f"<h1>ck-precision-bench: the crowd's results</h1>{PENDING}"
            "<h2>Leaderboard (confirmed results: best images per second, per platform)</h2>"
            "<p>A result is confirmed once another contributor reproduces it (the same model, precision, platform, "
            "lib and batch size, within its interval) or an admin approves it.</p>"
            + _board_table("leaderboard", ranked) +
            "<h2>Not yet confirmed</h2><p>Shown apart, never ranked, with their ratio to the confirmed best of "
            f"their row; over {HELD_FACTOR}x that best a result is held for review.</p>"
            + _board_table("unconfirmed", apart) +
            f"<h2>Time per image</h2>{plots}"
            "<p>Results repository: <code>ck pull repo --url=http://HOST:PORT/results.git</code></p></body></html>")


def _board_table(name: str, board: list[dict]) -> str:
    if not board:
        return f"<p id='{name}'>none</p>"
    rows = "".join(
        f"<tr class='{'held' if r.get('status') == 'held for review' else ''}'>"
        + "".join(f"<td>{html.escape(str(r.get(k, r.get('gpu'))))}</td>"
                  for k in ("model", "precision", "platform", "lib", "batch_size"))
        + f"<td>{_throughput(r)}</td><td>{html.escape(str(r['submitter']))}</td>"
        + f"<td>{html.escape(_standing(r))}</td></tr>" for r in board)
    return (f"<table id='{name}'><tr><th>model</th><th>precision</th><th>platform</th><th>lib</th><th>batch</th>"
            f"<th>img/s (95% interval)</th><th>submitter</th><th>status</th></tr>{rows}</table>")


def _standing(row: dict) -> str:
    ratio = row.get("ratio_to_confirmed_best")
    status = row.get("status", "confirmed")
    return status + (f" ({ratio:.2f}x the confirmed best)" if ratio is not None and status != "confirmed" else "")


def _throughput(row: dict) -> str:
    ci = row.get("images_per_second_ci")
    return f"{row['images_per_second']:.1f}" + (f" ({ci[0]:.1f}-{ci[1]:.1f})" if ci else " (no interval: one repetition)")


def _regressions(steps: list[dict]) -> str:
    """The dashboard's regressions view: where a configuration's time moved between adjacent software versions."""
    from .. import compare

    head = (f"<h2 id='regressions-view'>Regressions across software versions</h2><p>Per GPU, model, lib and batch "
            f"size measured under several versions of torch, cuDNN, CUDA or the driver: the steps between adjacent "
            f"versions of at least {compare.THRESHOLD:.0%} whose 95% interval excludes 1 (Mann-Whitney p &lt; "
            f"{compare.ALPHA}). The ratio is the later version's time over the earlier one's.</p>")
    if not steps:
        return head + "<p id='regressions'>none found</p>"
    cells = ("verdict", "model", "platform", "lib", "batch_size", "software", "before", "after")
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(s[k]))}</td>" for k in cells)
                   + f"<td>{html.escape(compare.ratio_text(s))}</td><td>{html.escape(s['also_changed'] or '-')}</td>"
                   "</tr>" for s in steps[:50])
    more = f"<p>... and {len(steps) - 50} more (GET /api/regressions)</p>" if len(steps) > 50 else ""
    return (head + "<table id='regressions'><tr>" + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cells)
            + "<th>ratio (95% interval)</th><th>also changed</th></tr>" + rows + "</table>" + more)


def _plots(rows: list[dict]) -> str:
    """The notebook's time per image per (GPU, model), from the stored points' one time (no file reads): the
    median of the submitted points of each configuration, and their range."""
    import pandas as pd

    from .. import plots

    if not rows:
        return "<p>No results yet.</p>"
    frame = pd.DataFrame(rows).rename(columns={"gpu": "platform"})
    frame["time_per_image_ms"] = 1e3 / frame["images_per_second"]
    stats = frame.groupby(["platform", "model", "lib", "batch_size"])["time_per_image_ms"].agg(["median", "min", "max"])
    stats.columns = ["time_per_image_ms", "time_per_image_ms_low", "time_per_image_ms_high"]
    pairs = frame.groupby(["platform", "model"]).size().sort_values(ascending=False, kind="stable")
    out = []
    for platform, model in pairs.index[:MAX_PLOTS]:  # however many names arrive, the page stays bounded
        png = plots.time_per_image(stats, platform, model, band="the range of the submitted points")
        out.append(f"<img alt='{html.escape(f'{model} on {platform}')}' "
                   f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    if len(pairs) > MAX_PLOTS:
        out.append(f"<p>{len(pairs) - MAX_PLOTS} more (platform, model) pairs are not drawn: the {MAX_PLOTS} with "
                   "the most points are; <code>ck pull repo</code> and <code>analyse</code> draw them all.</p>")
    return "".join(out)
