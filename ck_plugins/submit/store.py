"""Accepted points in a database (SQLite in WAL mode by default, any SQLAlchemy URL otherwise) and their
publication as commits to a git results repository (a CK repository), served read-only over HTTP.

The database is the truth; git follows it. Each accepted submission is published by exactly one commit whose
message names it, so after a crash (SIGKILL included) `reconcile()` drops uncommitted changes, marks what
git already has, and publishes the rest.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from .. import ckrepo, point

META = sa.MetaData()
SUBMISSIONS = sa.Table(
    "submissions", META,
    sa.Column("id", sa.String(36), primary_key=True), sa.Column("submitter", sa.String(100), nullable=False),
    sa.Column("created", sa.Float, nullable=False), sa.Column("points", sa.Integer, nullable=False),
    sa.Column("published", sa.Boolean, nullable=False, default=False),
    sa.Column("withdrawn", sa.Boolean, nullable=False, default=False),
    sa.Column("files", sa.Text, nullable=False, default="[]"))
POINTS = sa.Table(
    "points", META,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("submission_id", sa.String(36), sa.ForeignKey("submissions.id"), nullable=False, index=True),
    sa.Column("model", sa.String(40)), sa.Column("lib", sa.String(80)), sa.Column("gpu", sa.String(200)),
    sa.Column("precision", sa.String(20)), sa.Column("batch_size", sa.Integer),
    sa.Column("images_per_second", sa.Float), sa.Column("body", sa.Text, nullable=False))
GIT_ID = ["-c", "user.name=ck-precision-bench service", "-c", "user.email=service@localhost"]


def content_hash(item: dict) -> str:
    return hashlib.sha256(json.dumps(item, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Store:
    def __init__(self, data_dir: Path, db_url: str | None = None):
        self.data_dir = Path(data_dir)
        self.work, self.bare = self.data_dir / "work", self.data_dir / "results.git"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        url = db_url or f"sqlite:///{self.data_dir / 'service.db'}"
        self.engine = sa.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", lambda conn, _: conn.execute("PRAGMA journal_mode=WAL"))
        META.create_all(self.engine)
        self.lock = threading.Lock()  # one writer at a time: accept and publish stay in order
        self._init_git()

    # ------------------------------------------------------------------------------------------- accept
    def accept(self, submitter: str, points: list[dict]) -> dict:
        """Store the new points (duplicates by content hash are skipped) and publish them; all or nothing."""
        with self.lock:
            hashes = [content_hash(p) for p in points]
            with self.engine.begin() as db:
                known = {row[0] for row in db.execute(sa.select(POINTS.c.hash).where(POINTS.c.hash.in_(hashes)))}
                fresh = {h: p for h, p in zip(hashes, points) if h not in known}
                if not fresh:
                    return {"submission": None, "accepted": 0, "duplicates": len(points)}
                sid = str(uuid.uuid4())
                db.execute(SUBMISSIONS.insert().values(id=sid, submitter=submitter, created=time.time(),
                                                       points=len(fresh), published=False, withdrawn=False, files="[]"))
                db.execute(POINTS.insert(), [_row(h, sid, p) for h, p in fresh.items()])
            self._publish_pending()
            return {"submission": sid, "accepted": len(fresh), "duplicates": len(points) - len(fresh)}

    def withdraw(self, sid: str) -> bool:
        with self.lock:
            with self.engine.begin() as db:
                found = db.execute(sa.update(SUBMISSIONS).where(SUBMISSIONS.c.id == sid)
                                   .values(withdrawn=True)).rowcount
            self._publish_pending()
            return bool(found)

    # ------------------------------------------------------------------------------------------- publish
    def _init_git(self) -> None:
        if not self.bare.exists():
            _git(self.data_dir, "init", "-q", "--bare", "-b", "main", str(self.bare))
        if not (self.work / ".git").exists():
            _git(self.data_dir, "init", "-q", "-b", "main", str(self.work))
            ckrepo.init_repo(self.work, ckrepo.RESULTS_ALIAS)
            _git(self.work, "add", "-A")
            _git(self.work, *GIT_ID, "commit", "-q", "-m", "results repository")
            _git(self.work, "remote", "add", "origin", str(self.bare))
        self.reconcile()

    def reconcile(self) -> None:
        with self.lock:
            _git(self.work, "reset", "-q", "--hard")
            _git(self.work, "clean", "-q", "-fdx")
            self._publish_pending()

    def _publish_pending(self) -> None:
        log = _git(self.work, "log", "--format=%s")
        with self.engine.begin() as db:
            rows = db.execute(sa.select(SUBMISSIONS).order_by(SUBMISSIONS.c.created)).mappings().all()
        for row in rows:
            published = f"publish {row['id']}" in log
            retracted = f"withdraw {row['id']}" in log
            if row["withdrawn"] and published and not retracted:
                self._commit_withdrawal(row)
            elif not row["withdrawn"] and not published:
                self._commit_submission(row)
            elif published and not row["published"]:
                self._mark(row["id"], published=True)
        _git(self.work, "push", "-q", "origin", "main")
        _git(self.bare, "update-server-info")  # the dumb HTTP protocol: `ck pull repo --url=http://...` works

    def _commit_submission(self, row) -> None:
        with self.engine.begin() as db:
            bodies = [r[0] for r in db.execute(sa.select(POINTS.c.body).where(POINTS.c.submission_id == row["id"]))]
        files = []
        for body in bodies:
            item = json.loads(body)
            env = item["choices"]["env"]
            entry = ckrepo.ensure_experiment_entry(self.work, env["CK_MODEL"], env["CK_LIB"],
                                                   ["explore-batch-size-libs-models", env["CK_MODEL"], env["CK_LIB"]])
            files.append(str(ckrepo.write_point(entry, item).relative_to(self.work)))
        _git(self.work, "add", "-A")
        _git(self.work, *GIT_ID, "commit", "-q", "-m", f"publish {row['id']} from {row['submitter']}: {len(files)} points")
        self._mark(row["id"], published=True, files=files)

    def _commit_withdrawal(self, row) -> None:
        with self.engine.begin() as db:
            files = json.loads(db.execute(sa.select(SUBMISSIONS.c.files).where(SUBMISSIONS.c.id == row["id"])).scalar())
        if files:
            _git(self.work, "rm", "-q", "--ignore-unmatch", *files)
        _git(self.work, *GIT_ID, "commit", "-q", "--allow-empty", "-m", f"withdraw {row['id']}")

    def _mark(self, sid: str, **values) -> None:
        if "files" in values:
            values["files"] = json.dumps(values["files"])
        with self.engine.begin() as db:
            db.execute(sa.update(SUBMISSIONS).where(SUBMISSIONS.c.id == sid).values(**values))

    # ---------------------------------------------------------------------------------------------- read
    def leaderboard(self) -> list[dict]:
        """Per (model, precision, GPU): the fastest accepted point, with its lib, batch size and submitter."""
        query = (sa.select(POINTS.c.model, POINTS.c.precision, POINTS.c.gpu, POINTS.c.lib, POINTS.c.batch_size,
                           POINTS.c.images_per_second, SUBMISSIONS.c.submitter)
                 .join(SUBMISSIONS, POINTS.c.submission_id == SUBMISSIONS.c.id)
                 .where(SUBMISSIONS.c.withdrawn.is_(False)))
        best: dict[tuple, dict] = {}
        with self.engine.connect() as db:
            for row in db.execute(query).mappings():
                key = (row["model"], row["precision"], row["gpu"])
                if key not in best or row["images_per_second"] > best[key]["images_per_second"]:
                    best[key] = dict(row)
        return sorted(best.values(), key=lambda r: (r["model"], r["precision"], r["gpu"] or ""))


def _row(digest: str, sid: str, item: dict) -> dict:
    """The leaderboard's columns of a point: its platform and its one time (point.read), as images per second."""
    read = point.read(item)
    time_ms = read.time_ms
    precision = item["choices"].get("settings", {}).get("precision")
    return {"hash": digest, "submission_id": sid, "model": read.model, "lib": read.lib, "gpu": read.platform,
            "precision": precision if isinstance(precision, str) else "fp32",
            "batch_size": read.batch_size, "images_per_second": 1e3 * read.batch_size / time_ms if time_ms else 0.0,
            "body": json.dumps(item, sort_keys=True)}


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:3])} in {cwd}: {done.stderr.strip()[:300]}")
    return done.stdout
