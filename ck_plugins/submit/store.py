"""Accepted points in a database (SQLite in WAL mode by default, any SQLAlchemy URL otherwise) and their
publication as commits to a git results repository (a CK repository), served read-only over HTTP.

The database is the truth; git follows it. Each accepted submission is published by exactly one commit whose
message names it, so after a crash (SIGKILL included) `reconcile()` drops uncommitted changes, marks what
git already has, and publishes the rest.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from .. import ckrepo, point, stats
from ..files import uid_of
from .validate import NAME_LENGTH

META = sa.MetaData()
CPU_ROW = "CPU: "  # a point without a GPU ranks on a row of its own, whatever its CPU is called
SUBMISSIONS = sa.Table(
    "submissions", META,
    sa.Column("id", sa.String(36), primary_key=True), sa.Column("submitter", sa.String(100), nullable=False),
    sa.Column("created", sa.Float, nullable=False), sa.Column("points", sa.Integer, nullable=False),
    sa.Column("published", sa.Boolean, nullable=False, default=False, index=True),
    sa.Column("withdrawn", sa.Boolean, nullable=False, default=False),
    sa.Column("files", sa.Text, nullable=False, default="[]"))
POINTS = sa.Table(
    "points", META,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("submission_id", sa.String(36), sa.ForeignKey("submissions.id"), nullable=False, index=True),
    sa.Column("model", sa.String(NAME_LENGTH)), sa.Column("lib", sa.String(NAME_LENGTH)),
    sa.Column("gpu", sa.String(NAME_LENGTH + len(CPU_ROW))),
    sa.Column("precision", sa.String(20)), sa.Column("batch_size", sa.Integer),
    sa.Column("images_per_second", sa.Float), sa.Column("body", sa.Text, nullable=False))
INTERVALS = sa.Table(  # each point's 95% interval of images/s, kept at acceptance (a newer table: old databases gain it)
    "point_intervals", META, sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("low", sa.Float), sa.Column("high", sa.Float))
APPROVALS = sa.Table(  # points an admin confirmed by hand
    "approvals", META, sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("created", sa.Float, nullable=False))
HELD_FACTOR = 1.5  # an unconfirmed result this far beyond its row's confirmed best is held for review
RELATIVE_REMOTE = "../results.git"  # the work repository's remote, beside it in the data folder
GIT_ID = ["-c", "user.name=ck-precision-bench service", "-c", "user.email=service@localhost"]


def _widen_columns(engine) -> None:
    """A database made by an older version keeps its narrower name columns (create_all never alters a table): widen
    each to what the table declares now, so a name the service accepts is a name the database stores. SQLite does
    not enforce lengths; PostgreSQL and others do."""
    if engine.dialect.name != "postgresql":  # SQLite does not enforce lengths; the ALTER below is PostgreSQL's
        return
    found = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("points")}
    with engine.begin() as db:
        for column in POINTS.columns:
            wanted, have = getattr(column.type, "length", None), getattr(found.get(column.name), "length", None)
            if wanted and have and have < wanted:
                db.execute(sa.text(f'ALTER TABLE points ALTER COLUMN "{column.name}" TYPE VARCHAR({int(wanted)})'))


def content_hash(item: dict) -> str:
    return hashlib.sha256(json.dumps(item, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Results:
    """The read side of the database: what the dashboard and the API show. A process of its own (the dashboard's
    renderer) opens one by the database's URL."""

    def __init__(self, url: str):
        self.url = url
        self.engine = sa.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", lambda conn, _: conn.execute("PRAGMA journal_mode=WAL"))
        self._read: dict[str, point.Point] = {}  # point hash -> its reading, for `regressions` (bodies never change)

    def pending(self) -> list[dict]:
        """Submissions stored (answered) but not yet in results.git: the dashboard says so until they are."""
        with self.engine.connect() as db:
            rows = db.execute(sa.select(SUBMISSIONS.c.id, SUBMISSIONS.c.points, SUBMISSIONS.c.created)
                              .where(SUBMISSIONS.c.published.is_(False), SUBMISSIONS.c.withdrawn.is_(False))
                              .order_by(SUBMISSIONS.c.created)).mappings().all()
        return [dict(r) for r in rows]

    def status(self, sid: str) -> dict | None:
        with self.engine.connect() as db:
            row = db.execute(sa.select(SUBMISSIONS.c.id, SUBMISSIONS.c.points, SUBMISSIONS.c.published,
                                       SUBMISSIONS.c.withdrawn).where(SUBMISSIONS.c.id == sid)).mappings().first()
        return dict(row) if row else None

    def rows(self) -> list[dict]:
        """Every accepted, not withdrawn point's leaderboard columns (no bodies), its interval and approval."""
        query = (sa.select(POINTS.c.hash, POINTS.c.model, POINTS.c.precision, POINTS.c.gpu, POINTS.c.lib,
                           POINTS.c.batch_size, POINTS.c.images_per_second, SUBMISSIONS.c.submitter,
                           INTERVALS.c.low, INTERVALS.c.high, APPROVALS.c.created.label("approved"))
                 .join(SUBMISSIONS, POINTS.c.submission_id == SUBMISSIONS.c.id)
                 .outerjoin(INTERVALS, INTERVALS.c.hash == POINTS.c.hash)
                 .outerjoin(APPROVALS, APPROVALS.c.hash == POINTS.c.hash)
                 .where(SUBMISSIONS.c.withdrawn.is_(False)))
        with self.engine.connect() as db:
            return [dict(row) for row in db.execute(query).mappings()]

    def regressions(self) -> list[dict]:
        """Steps in time across software versions (compare.regressions) in every accepted, not withdrawn point,
        the significant ones, slower first."""
        from .. import compare, readpoints

        query = (sa.select(POINTS.c.hash).join(SUBMISSIONS, POINTS.c.submission_id == SUBMISSIONS.c.id)
                 .where(SUBMISSIONS.c.withdrawn.is_(False)))
        with self.engine.connect() as db:
            hashes = [digest for (digest,) in db.execute(query)]
            new = [h for h in hashes if h not in self._read]
            for start in range(0, len(new), 500):  # each body read once per process, checked before it was stored
                part = sa.select(POINTS.c.hash, POINTS.c.body).where(POINTS.c.hash.in_(new[start:start + 500]))
                self._read.update((h, point.read(json.loads(body))) for h, body in db.execute(part))
        found = compare.steps(compare.regressions(readpoints.from_points(self._read[h] for h in hashes)))
        return json.loads(found.to_json(orient="records"))

    def leaderboard(self) -> list[dict]:
        """Per (model, precision, platform): the best confirmed result, ranked, and the best unconfirmed one apart
        (status "unconfirmed", or "held for review" when it is over HELD_FACTOR times the confirmed best), each with
        its ratio to the confirmed best, the 95% interval of its images per second, and its platform in words."""
        board = ranked(self.rows())
        with self.engine.connect() as db:
            bodies = dict(db.execute(sa.select(POINTS.c.hash, POINTS.c.body).where(
                POINTS.c.hash.in_([r["hash"] for r in board]))).all()) if board else {}
        return [dict(r, images_per_second_ci=_throughput_ci(bodies.get(r["hash"]), r["images_per_second"]),
                     platform=_platform(bodies.get(r["hash"]), r["gpu"])) for r in board]




class Store(Results):
    """`background=True` (the service): `accept` answers once the points are in the database, and a publisher
    thread commits them to git (a crash in between is repaired at restart: the database is the truth).
    Otherwise `accept` publishes before it returns."""

    def __init__(self, data_dir: Path, db_url: str | None = None, alias: str | None = None, background: bool = False):
        self.data_dir = Path(data_dir)
        self.work, self.bare = self.data_dir / "work", self.data_dir / "results.git"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # each service its own results alias, so one CK installation can pull several services
        self.alias = alias or f"{ckrepo.RESULTS_ALIAS}-{uid_of(str(self.data_dir.resolve()))[:8]}"
        super().__init__(db_url or f"sqlite:///{self.data_dir / 'service.db'}")
        META.create_all(self.engine)
        _widen_columns(self.engine)
        self.lock = threading.Lock()  # the git work tree has one writer at a time
        self.writing = threading.Lock()  # so has the database, from this process: SQLite's busy wait would sleep
        self._queue: list[dict] = []  # insert requests waiting for the next group commit
        self._queued = threading.Lock()
        self.version = 0  # changes whenever what is published changes (the dashboard's cache key)
        self.quarantined: dict[str, str] = {}  # submission id -> why it could not be published (this process)
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._publisher = threading.Thread(target=self._publish_loop, daemon=True) if background else None
        self._init_git()
        if self._publisher:
            self._publisher.start()
            self._wake.set()  # the backlog left by the last run, published while the service answers

    # ------------------------------------------------------------------------------------------- accept
    def accept(self, submitter: str, points: list[dict]) -> dict:
        """Store the new points (duplicates by content hash are skipped), then publish whatever is unpublished:
        a submitter waiting for the git lock usually finds its submission published by the one before (group
        commit), so latency does not grow with the number of submitters or with history."""
        return self.insert(submitter, prepare(points))

    def insert(self, submitter: str, prepared: list[tuple[dict, dict]]) -> dict:
        """`accept` for points already prepared (`prepare`: the service prepares them in its validation processes).
        Group commit: a request queues itself; whoever holds the database next stores every queued request in one
        transaction (one commit, one fsync), so concurrent submitters share the cost instead of queueing on it."""
        request = {"submitter": submitter, "prepared": prepared, "answer": None}
        with self._queued:
            self._queue.append(request)
        with self.writing:
            if request["answer"] is None:
                with self._queued:
                    batch, self._queue = self._queue, []
                self._store_all(batch)
        if isinstance(request["answer"], BaseException):
            raise request["answer"]
        if self._publisher:
            self._wake.set()
        else:
            self.flush()
        return request["answer"]

    def _store_all(self, batch: list[dict]) -> None:
        """Each queued request's answer, all stored in one transaction; if that fails (another process stored one
        of the points first), each alone."""
        try:
            with self.engine.begin() as db:
                self._store(db, batch)
            return
        except sa.exc.IntegrityError:
            pass
        for request in batch:
            for attempt in range(3):  # a concurrent writer may store the same point first (PostgreSQL: a conflict)
                try:
                    with self.engine.begin() as db:
                        self._store(db, [request])
                    break
                except sa.exc.IntegrityError as error:
                    request["answer"] = error if attempt == 2 else None
                except Exception as error:  # noqa: BLE001 - its caller raises it
                    request["answer"] = error
                    break

    def _store(self, db, batch: list[dict]) -> None:
        hashes = [row["hash"] for request in batch for row, _ in request["prepared"]]
        taken = set()
        for start in range(0, len(hashes), 500):
            part = hashes[start:start + 500]
            taken.update(h for (h,) in db.execute(sa.select(POINTS.c.hash).where(POINTS.c.hash.in_(part))))
        submissions, points, intervals = [], [], []
        for request in batch:
            prepared = request["prepared"]
            fresh = {row["hash"]: (row, ci) for row, ci in prepared if row["hash"] not in taken}
            taken.update(fresh)
            if not fresh:
                request["answer"] = {"submission": None, "accepted": 0, "duplicates": len(prepared)}
                continue
            sid = str(uuid.uuid4())
            submissions.append({"id": sid, "submitter": request["submitter"], "created": time.time(),
                                "points": len(fresh), "published": False, "withdrawn": False, "files": "[]"})
            points += [dict(row, submission_id=sid) for row, _ in fresh.values()]
            intervals += [ci for _, ci in fresh.values()]
            request["answer"] = {"submission": sid, "accepted": len(fresh), "duplicates": len(prepared) - len(fresh)}
        if submissions:
            db.execute(SUBMISSIONS.insert(), submissions)
            db.execute(POINTS.insert(), points)
            db.execute(INTERVALS.insert(), intervals)

    def flush(self) -> None:
        """Publish every stored, unpublished submission now."""
        with self.lock:
            self._publish_unpublished()

    def close(self) -> None:
        """Stop the publisher thread promptly (after the commit in progress); what is stored but not yet published
        is published at the next start (reconcile), so a long backlog never delays a shutdown."""
        self._stopping.set()
        self._wake.set()
        if self._publisher:
            self._publisher.join(timeout=120)

    def _publish_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self.flush()
            except (RuntimeError, OSError, sa.exc.SQLAlchemyError) as error:  # retried at the next wake-up
                print(f"publishing failed, will retry: {error}", file=sys.stderr)

    def withdraw(self, sid: str) -> bool:
        with self.lock:
            with self.engine.begin() as db:
                row = db.execute(sa.select(SUBMISSIONS).where(SUBMISSIONS.c.id == sid)).mappings().first()
                if row is None:
                    return False
                db.execute(sa.update(SUBMISSIONS).where(SUBMISSIONS.c.id == sid).values(withdrawn=True))
            if row["published"] and not row["withdrawn"]:
                self._commit_withdrawal(sid)
                self._push()
            return True

    # ------------------------------------------------------------------------------------------- publish
    def _init_git(self) -> None:
        if not self.bare.exists():
            _git(self.data_dir, "init", "-q", "--bare", "-b", "main", str(self.bare))
        if not (self.work / ".git").exists():
            _git(self.data_dir, "init", "-q", "-b", "main", str(self.work))
            ckrepo.init_repo(self.work, self.alias)
            _git(self.work, "add", "-A")
            _git(self.work, *GIT_ID, "commit", "-q", "-m", "results repository")
            _git(self.work, "remote", "add", "origin", RELATIVE_REMOTE)
        _git(self.work, "remote", "set-url", "origin", RELATIVE_REMOTE)  # a copied or moved data folder publishes
        self.reconcile()  # to its own results.git (older folders held an absolute path)

    def reconcile(self) -> None:
        """At start-up, after any crash: remove the locks a killed git left (no git of ours runs now), drop
        uncommitted changes, then make git and the database agree: a publish commit the database did not record
        is recorded with its files, a recorded withdrawal is committed, and unpublished submissions are published."""
        with self.lock:
            for lock in [self.work / ".git" / "index.lock", self.work / ".git" / "packed-refs.lock",
                         self.work / ".git" / "objects" / "maintenance.lock", *self.work.glob(".git/refs/**/*.lock"),
                         *self.bare.glob("refs/**/*.lock"), *self.bare.glob("*.lock")]:
                lock.unlink(missing_ok=True)
            _git(self.work, "reset", "-q", "--hard")
            _git(self.work, "clean", "-q", "-fdx")
            log = dict(line.split(" ", 1) for line in _git(self.work, "log", "--format=%H %s").splitlines())
            published = {s.split(" ")[1]: sha for sha, s in log.items() if s.startswith("publish ")}
            withdrawn = {s.split(" ")[1] for s in log.values() if s.startswith("withdraw ")}
            with self.engine.connect() as db:
                rows = db.execute(sa.select(SUBMISSIONS)).mappings().all()
            for row in rows:
                if row["id"] in published and not row["published"]:
                    files = [f for f in _git(self.work, "show", "--name-only", "--format=", published[row["id"]]).split()
                             if point.is_subpoint_name(Path(f).name)]  # its point files (entry metas and aliases stay)
                    self._mark(row["id"], published=True, files=files)
                if row["withdrawn"] and row["id"] in published and row["id"] not in withdrawn:
                    self._commit_withdrawal(row["id"])
            if self._publisher is None:  # the service listens first: its publisher takes the backlog
                self._publish_unpublished()
            self._push()

    def _publish_unpublished(self) -> None:
        with self.engine.connect() as db:
            rows = db.execute(sa.select(SUBMISSIONS.c.id, SUBMISSIONS.c.submitter)
                              .where(SUBMISSIONS.c.published.is_(False), SUBMISSIONS.c.withdrawn.is_(False))
                              .order_by(SUBMISSIONS.c.created)).mappings().all()
        done: list[tuple[str, list[str]]] = []  # recorded together: one database write a pass, not one a commit
        for row in rows:
            if self._stopping.is_set() and self._publisher:
                break  # shutting down: the rest is published at the next start
            if row["id"] in self.quarantined:
                continue
            try:
                done.append((row["id"], self._commit_submission(row)))
            except Exception as error:  # noqa: BLE001 - one submission never stops publishing the others
                self._quarantine(row["id"], error)
                continue
            if len(done) >= 100:
                self._push()  # served first, then recorded: "published" in the database is always in results.git
                self._mark_published(done)  # a crash in between is repaired by reconcile (git has the commits)
                done = []
        if done:
            self._push()
            self._mark_published(done)

    def _quarantine(self, sid: str, error: Exception) -> None:
        """A submission that cannot be published is set aside (until the next start, which tries it again), said
        once on stderr; what it half-wrote in the work tree is undone."""
        self.quarantined[sid] = f"{type(error).__name__}: {str(error)[:300]}"
        print(f"submission {sid} could not be published and is set aside: {self.quarantined[sid]}", file=sys.stderr)
        _git(self.work, "reset", "-q", "--hard")
        _git(self.work, "clean", "-q", "-fdx")

    def _push(self) -> None:
        _git(self.work, "push", "-q", "origin", "main")
        _git(self.bare, "update-server-info")  # the dumb HTTP protocol: `ck pull repo --url=http://...` works
        self.version += 1

    def _commit_submission(self, row) -> list[str]:
        with self.engine.begin() as db:
            bodies = [r[0] for r in db.execute(sa.select(POINTS.c.body).where(POINTS.c.submission_id == row["id"]))]
        files, metas = [], {"experiment/.cm"}
        for body in bodies:
            item = json.loads(body)
            env = point.env(item)
            entry = ckrepo.ensure_experiment_entry(self.work, env["CK_MODEL"], env["CK_LIB"])
            files.append(str(ckrepo.write_point(entry, item).relative_to(self.work)))
            metas.add(str((entry / ".cm").relative_to(self.work)))
        _git(self.work, "add", "--", *files, *sorted(metas))  # only what changed: no scan of every entry
        _git(self.work, *GIT_ID, "commit", "-q", "-m", f"publish {row['id']} from {row['submitter']}: {len(files)} points")
        return files

    def _mark_published(self, done: list[tuple[str, list[str]]]) -> None:
        if not done:
            return
        with self.writing, self.engine.begin() as db:
            for sid, files in done:
                db.execute(sa.update(SUBMISSIONS).where(SUBMISSIONS.c.id == sid).values(published=True,
                                                                                        files=json.dumps(files)))

    def _commit_withdrawal(self, sid: str) -> None:
        with self.engine.begin() as db:
            files = json.loads(db.execute(sa.select(SUBMISSIONS.c.files).where(SUBMISSIONS.c.id == sid)).scalar())
        if files:
            _git(self.work, "rm", "-q", "--ignore-unmatch", *files)
        _git(self.work, *GIT_ID, "commit", "-q", "--allow-empty", "-m", f"withdraw {sid}")

    def _mark(self, sid: str, **values) -> None:
        if "files" in values:
            values["files"] = json.dumps(values["files"])
        with self.writing, self.engine.begin() as db:
            db.execute(sa.update(SUBMISSIONS).where(SUBMISSIONS.c.id == sid).values(**values))

    # ---------------------------------------------------------------------------------------------- read
    def approve(self, digest: str) -> bool:
        """An admin confirms a point by hand (idempotent); False where no such point is stored."""
        try:
            with self.engine.begin() as db:
                if db.execute(sa.select(POINTS.c.hash).where(POINTS.c.hash == digest)).first() is None:
                    return False
                if db.execute(sa.select(APPROVALS.c.hash).where(APPROVALS.c.hash == digest)).first() is None:
                    db.execute(APPROVALS.insert().values(hash=digest, created=time.time()))
        except sa.exc.IntegrityError:
            pass  # approved at the same moment by another request
        return True

def confirmed(rows: list[dict]) -> set[str]:
    """The points another submitter reproduced (a point of the same model, precision, platform, lib and batch size
    whose interval of images/s overlaps this one's), or an admin approved."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["precision"], row["gpu"], row["lib"], row["batch_size"]), []).append(row)
    found = {r["hash"] for r in rows if r.get("approved")}
    for members in groups.values():
        if len({m["submitter"] for m in members}) < 2:
            continue
        low = np.array([m["low"] if m.get("low") is not None else m["images_per_second"] for m in members])
        high = np.array([m["high"] if m.get("high") is not None else m["images_per_second"] for m in members])
        who = np.unique([m["submitter"] for m in members], return_inverse=True)[1]
        for start in range(0, len(members), 1000):  # bounded memory for a crowd of one configuration
            part = slice(start, start + 1000)
            overlap = (low[part, None] <= high[None, :]) & (low[None, :] <= high[part, None])
            overlap &= who[part, None] != who[None, :]
            found.update(members[start + i]["hash"] for i in np.flatnonzero(overlap.any(axis=1)))
    return found


def ranked(rows: list[dict]) -> list[dict]:
    """Per (model, precision, platform) the best confirmed row and, where faster or alone, the best unconfirmed."""
    sure = confirmed(rows)
    best: dict[tuple, dict[bool, dict]] = {}
    for row in rows:
        slot = best.setdefault((row["model"], row["precision"], row["gpu"]), {})
        kind = row["hash"] in sure
        if kind not in slot or row["images_per_second"] > slot[kind]["images_per_second"]:
            slot[kind] = row
    out = []
    for key in sorted(best, key=lambda k: tuple(map(str, k))):
        top = best[key].get(True)
        for kind in (True, False):
            row = best[key].get(kind)
            if row is None or (not kind and top is not None and row["images_per_second"] <= top["images_per_second"]):
                continue
            ratio = row["images_per_second"] / top["images_per_second"] if top else None
            status = "confirmed" if kind else ("held for review" if ratio and ratio > HELD_FACTOR else "unconfirmed")
            out.append({k: v for k, v in row.items() if k not in ("low", "high", "approved")}
                       | {"status": status, "ratio_to_confirmed_best": ratio})
    return out


def _platform(body: str | None, name: str) -> str:
    """'GPU NVIDIA H200' or 'CPU AMD EPYC 9454': what ran the point, by kind and name."""
    try:
        item = json.loads(body) if body else {"choices": {}, "features": {}}
        device = point.settings(item).get("device")
        gpu = (item.get("features", {}).get("platform") or {}).get("gpu")
    except (ValueError, AttributeError, KeyError, TypeError):
        device, gpu = None, None
    kind = "GPU" if (device == "cuda" or device is None) and gpu else "CPU"
    return f"{kind} {name.removeprefix(CPU_ROW)}"


def _throughput_ci(body: str | None, shown: float) -> list[float] | None:
    """[low, high] images per second of a stored point, None with fewer than two repetitions or no bound."""
    try:
        read = point.read(json.loads(body)) if body else None
    except (ValueError, point.PointError):
        return None
    return _interval_of(read, shown)


def _interval_of(read: point.Point | None, shown: float) -> list[float] | None:
    times = [r.time_ms for r in read.successful] if read else []
    if len(times) < 2:
        return None
    low, high = stats.throughput_interval(np.mean(times), np.std(times, ddof=1), len(times), read.batch_size, shown)
    return [float(low), float(high)] if np.isfinite(low) and np.isfinite(high) else None


def prepare(points: list[dict], reads: list | None = None) -> list[tuple[dict, dict]]:
    """Each valid point as it is stored: migrated to the current schema version, its row (hash, leaderboard columns,
    body) and its interval row; `reads`, the points' readings where the caller has them. Pure and picklable: the
    service runs it in its validation processes."""
    out = []
    for item, read in zip(points, reads or [None] * len(points)):
        current = item if point.version_of(item) == point.SCHEMA_VERSION else point.migrate(copy.deepcopy(item))
        out.append(_row(content_hash(current), current, read if current is item else None))
    return out


def _row(digest: str, item: dict, read: point.Point | None = None) -> tuple[dict, dict]:
    """The leaderboard's columns of a point (its platform and its one time, as images per second) and its interval
    of images/s (its own rate where it has none), from one reading (point.read)."""
    read = read or point.read(item)
    time_ms = read.time_ms
    precision = point.settings(item).get("precision")
    gpu = (item.get("features", {}).get("platform") or {}).get("gpu")
    images = 1e3 * read.batch_size / time_ms if time_ms else 0.0
    ci = _interval_of(read, images)
    return ({"hash": digest, "model": read.model, "lib": read.lib,
             "gpu": read.platform if gpu else CPU_ROW + read.platform,
             "precision": precision.casefold() if isinstance(precision, str) else "fp32",
             "batch_size": read.batch_size, "images_per_second": images, "body": json.dumps(item, sort_keys=True)},
            {"hash": digest, "low": ci[0] if ci else images, "high": ci[1] if ci else images})


BACKGROUND = ["nice", "-n", "15"] if shutil.which("nice") else []  # publishing yields the CPU to answering


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run([*BACKGROUND, "git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:3])} in {cwd}: {done.stderr.strip()[:300]}")
    return done.stdout
