"""The result service: validated submissions, a leaderboard dashboard, the results repository over HTTP.

POST /api/submissions        Authorization: Bearer <submitter token>; body {"points": [point, ...]}
POST /api/submissions/{id}/withdraw   Authorization: Bearer <admin token>
GET  /api/leaderboard        JSON
GET  /                       the dashboard
GET  /results.git/...        the results repository (git's dumb HTTP protocol: `ck pull repo --url=.../results.git`)
Every rejection is a 4xx naming the field; nothing invalid is stored.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .store import Store
from .validate import MAX_BODY_BYTES, Rejected, check_bundle, parse


def _error(status: int, message: str, problems: list[str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "problems": problems or []}, status_code=status)


def create_app(data_dir: Path, tokens: dict[str, str], admin_token: str, db_url: str | None = None) -> FastAPI:
    """`tokens` maps each submitter's token to their name."""
    store = Store(Path(data_dir), db_url)
    app = FastAPI(title="ck-precision-bench results", docs_url=None, redoc_url=None)
    digests = {hashlib.sha256(t.encode()).digest(): name for t, name in tokens.items()}

    def submitter(request: Request) -> str | None:
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer "):
            return None
        digest = hashlib.sha256(given[7:].encode()).digest()
        return next((name for known, name in digests.items() if hmac.compare_digest(known, digest)), None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, error):
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def request_error(_request, error):
        return _error(400, "malformed request", [str(e)[:300] for e in error.errors()])

    @app.post("/api/submissions")
    async def submit(request: Request):
        name = submitter(request)
        if name is None:
            return _error(401, "authorization: a valid 'Bearer <token>' header is required")
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            return _error(413, f"content-length: {declared[:20]!r}; at most {MAX_BODY_BYTES} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _error(413, f"body: more than {MAX_BODY_BYTES} bytes")
        try:
            bundle = parse(body)
            problems = check_bundle(bundle)
            if problems:
                raise Rejected(problems)
        except Rejected as rejected:
            return _error(422, "submission rejected: " + rejected.problems[0][:300], rejected.problems[:100])
        return store.accept(name, bundle["points"])

    @app.post("/api/submissions/{sid}/withdraw")
    def withdraw(sid: str, request: Request):
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {admin_token}".encode()):
            return _error(403, "authorization: the admin token is required to withdraw")
        if len(sid) > 36 or not store.withdraw(sid):
            return _error(404, f"submission {sid[:40]!r}: no such submission")
        return {"withdrawn": sid}

    @app.get("/api/leaderboard")
    def leaderboard():
        return store.leaderboard()

    @app.get("/", response_class=HTMLResponse)
    def dashboard():
        return _dashboard(store)

    app.mount("/results.git", StaticFiles(directory=store.bare), name="results")
    app.state.store = store
    return app


def _dashboard(store: Store) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(r['model'])}</td><td>{html.escape(r['precision'])}</td><td>{html.escape(r['gpu'])}</td>"
        f"<td>{html.escape(r['lib'])}</td><td>{r['batch_size']}</td><td>{r['images_per_second']:.1f}</td>"
        f"<td>{html.escape(r['submitter'])}</td></tr>" for r in store.leaderboard())
    plots = "".join(f"<img alt='{html.escape(m)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                    for m, png in _crowd_plots(store))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>ck-precision-bench results</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:2px 8px}"
            "table{border-collapse:collapse}img{max-width:100%}</style></head><body>"
            "<h1>ck-precision-bench: the crowd's results</h1><h2>Leaderboard (best images per second)</h2>"
            "<table id='leaderboard'><tr><th>model</th><th>precision</th><th>GPU</th><th>lib</th><th>batch</th>"
            f"<th>img/s</th><th>submitter</th></tr>{rows}</table><h2>Time per image</h2>{plots}"
            "<p>Results repository: <code>ck pull repo --url=http://HOST:PORT/results.git</code></p></body></html>")


def _crowd_plots(store: Store) -> list[tuple[str, bytes]]:
    """The notebook's time-per-image bars over the published points."""
    import warnings

    from .. import analysis, plots, readpoints

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = readpoints.load([store.work])
    if loaded.runs.empty or not loaded.runs["success"].any():
        return []
    stats = analysis.time_stats(loaded.runs)
    pairs = stats.reset_index()[analysis.MODEL].drop_duplicates().itertuples(index=False)
    return [(f"{m} on {p}", plots.time_per_image_bars(stats, p, m)) for p, m in pairs]
