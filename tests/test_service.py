"""Sharing results: `ck pull repo` from git, and the result service (real uvicorn server, SQLite, git over HTTP)."""
import copy
import json
import math
import statistics
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from ck_plugins import readpoints
from conftest import _ck_bin
from ck_plugins.submit.guard import Budgets
from ck_plugins.submit.server import Dashboard, create_app

from fixtures import build as fixtures

REPO = Path(__file__).resolve().parent.parent
LEGACY = REPO.parent / "shared" / "legacy-ck-caffe" / "ck-caffe-nvidia-gtx1080"
TOKEN, ADMIN = "alice-token-0123456789", "admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GENEROUS = Budgets(burst=10**9, per_minute=1e9, processes=0)  # many submissions from one token; validation
# in a worker thread (the real `serve` of the tests below validates in processes)


def valid_point(tag: str = "", batch: int = 16) -> dict:
    """A valid H200 point (tests/fixtures/build.py: schema v1, plausible times, a commit), made distinct by `tag`."""
    return fixtures.valid_point_data("0" * 40 + tag, batch)


def git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout


def commit_all(cwd, message):
    git(cwd, "add", "-A")
    git(cwd, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


# ------------------------------------------------------------------------------------- sharing by git
@pytest.mark.skipif(not LEGACY.is_dir(), reason=f"needs the legacy CK-Caffe data at {LEGACY} (shared/ beside the checkout)")
def test_ck_pull_repo_brings_legacy_points_next_to_ours_and_later_pulls_bring_new_ones(ck_env, tmp_path):
    """A CK installation of its own (not this checkout's points): pull a legacy repository and one of ours, analyse
    every registered repository, then pull a new legacy point."""
    env = dict(ck_env, HOME=str(tmp_path / "home"), CK_REPOS=str(tmp_path / "CK"))
    os.makedirs(env["HOME"])
    ck = lambda *args: subprocess.run([_ck_bin(), *args], env=env, capture_output=True, text=True,  # noqa: E731
                                      timeout=300, stdin=subprocess.DEVNULL)
    source = tmp_path / "src"
    shutil.copytree(LEGACY, source)
    moved = sorted((source / "experiment" / "bvlc-alexnet-cpu").glob("ckp-*"))[-1]
    held = moved.read_bytes()
    moved.unlink()  # published later
    ours = fixtures.build(tmp_path / "fixtures")["sweep"]
    for repo in (source, ours):
        git(tmp_path, "init", "-q", "-b", "main", str(repo))
        commit_all(repo, "results")
        git(tmp_path, "clone", "-q", "--bare", str(repo), str(tmp_path / f"{repo.name}.git"))
        pulled = ck("pull", "repo", f"--url={tmp_path / f'{repo.name}.git'}")
        assert pulled.returncode == 0, pulled.stdout[-2000:] + pulled.stderr[-2000:]

    def count():
        done = subprocess.run([sys.executable, "-m", "ck_plugins", "analyse", "--all-repos", "--out",
                               str(tmp_path / "report")], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads((tmp_path / "report" / "summary.json").read_text())
        return summary["repetitions"], {(m["platform"], m["model"]) for m in summary["models"]}

    before, models = count()
    legacy_gpu = "NVIDIA Corporation Device 1b80 (rev a1)"
    assert {(legacy_gpu, "alexnet"), (legacy_gpu, "squeezenet-1.1"), ("NVIDIA H200", "resnet50")} <= models
    moved.write_bytes(held)
    commit_all(source, "one more point")
    git(source, "push", "-q", str(tmp_path / "src.git"), "main")
    assert ck("pull", "repo:ck-caffe-nvidia-gtx1080").returncode == 0
    after, _ = count()
    assert after == before + 3


# ---------------------------------------------------------------------------------- the real service
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data: Path, db_url: str | None = None, *options: str):
        self.data, self.port, self.proc, self.db_url = data, free_port(), None, db_url
        self.options = options or ("--burst", "1000000")  # serve's own options: budgets
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self):
        env = dict(os.environ, CKPB_TOKENS=f"alice:{TOKEN}", CKPB_ADMIN_TOKEN=ADMIN)
        self.proc = subprocess.Popen([sys.executable, "-m", "ck_plugins", "serve", "--data", str(self.data),
                                      "--port", str(self.port), *(["--db-url", self.db_url] if self.db_url else []),
                                      *self.options],
                                     env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/api/leaderboard", timeout=2)
                self.banner = self.proc.stdout.readline()  # what `serve` says first: its URL and its data
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(self.proc.stderr.read()[-2000:] if self.proc.poll() is not None else "no answer")

    def post(self, points, token=TOKEN):
        request = urllib.request.Request(self.url + "/api/submissions", data=json.dumps({"points": points}).encode(),
                                         headers={"Authorization": f"Bearer {token}"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until every stored submission is published (the service answers once a submission is stored)."""
        deadline = time.monotonic() + timeout
        engine = sa.create_engine(self.db_url or f"sqlite:///{self.data / 'service.db'}")
        query = sa.text("select count(*) from submissions where not published and not withdrawn")
        while True:
            with engine.connect() as db:
                if db.execute(query).scalar() == 0:
                    return
            assert time.monotonic() < deadline, "stored submissions were never published"
            time.sleep(0.1)

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)


def database_counts(data: Path, db_url: str | None = None) -> tuple[int, int]:
    engine = sa.create_engine(db_url or f"sqlite:///{data / 'service.db'}")
    with engine.connect() as db:
        return (db.execute(sa.text("select count(*) from submissions where not withdrawn")).scalar(),
                db.execute(sa.text("select count(*) from points")).scalar())


def published(data: Path) -> tuple[int, int]:
    """(publish commits, point files) in the results repository as served (the bare repository)."""
    log = git(data / "results.git", "log", "--format=%s", "main")
    files = [f for f in git(data / "results.git", "ls-tree", "-r", "--name-only", "main").split() if "/ckp-" in f]
    return sum(line.startswith("publish ") for line in log.splitlines()), len(files)


def test_the_whole_loop_submit_dashboard_and_ck_pull_from_another_installation(tmp_path, ck_env):
    server = Server(tmp_path / "service").start()
    assert server.banner.startswith(f"serving on {server.url}/ (dashboard") and str(tmp_path / "service") in server.banner
    try:
        repo = tmp_path / "mine"
        folder = fixtures.entry(repo, "alexnet-torch-cudnn-fp16", [readpoints.TAG, "alexnet", "torch-cudnn-fp16"])
        for n, batch in enumerate((2, 4, 6, 8, 10, 12, 14, 16)):
            (folder / f"ckp-{n:016x}.0001.json").write_text(json.dumps(valid_point(batch=batch)))
        files = list((repo / "experiment" / "alexnet-torch-cudnn-fp16").glob("ckp-*.json"))
        n, runs = len(files), sum(len(json.loads(f.read_text())["characteristics_list"]) for f in files)
        assert n >= 8
        done = subprocess.run([sys.executable, "-m", "ck_plugins", "submit", "--url", server.url, "--token", TOKEN,
                               "--repo", str(repo)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and f"{n} points accepted" in done.stdout, done.stderr[-2000:]
        server.settle()  # answered once stored; git follows
        board = json.loads(urllib.request.urlopen(server.url + "/api/leaderboard").read())
        assert board[0]["submitter"] == "alice" and board[0]["model"] == "alexnet"
        other = dict(ck_env, CK_REPOS=str(tmp_path / "other-CK"), HOME=str(tmp_path / "other-home"))
        os.makedirs(other["HOME"])
        pulled = subprocess.run(["ck", "pull", "repo", f"--url={server.url}/results.git"], env=other,
                                capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert pulled.returncode == 0, pulled.stdout[-2000:] + pulled.stderr[-2000:]
        clone = Path(other["CK_REPOS"]) / "results"
        assert len(readpoints.load([clone]).runs) == runs
        again = subprocess.run([sys.executable, "-m", "ck_plugins", "submit", "--url", server.url, "--token", TOKEN,
                                "--repo", str(repo)], capture_output=True, text=True, timeout=300)
        assert f"0 points accepted, {n} already there" in again.stdout
        through_ck = subprocess.run(["ck", "submit", "precision-bench", f"--url={server.url}", f"--token={TOKEN}",
                                     f"--repo={repo}", "--out=json"], env=ck_env, capture_output=True, text=True,
                                    timeout=300, stdin=subprocess.DEVNULL)
        answer = json.loads(through_ck.stdout[through_ck.stdout.index("{"):])
        assert through_ck.returncode == 0 and answer["answers"][0]["duplicates"] == n
    finally:
        server.stop()


def test_fifty_concurrent_submitters_are_each_stored_and_published_once(tmp_path, db_url):
    server = Server(tmp_path / "service", db_url).start()
    answers = []
    try:
        def submit(i):
            mine = valid_point(f"-{i}")
            answers.append(server.post([mine]))
            answers.append(server.post([mine]))  # the same again: a duplicate
        threads = [threading.Thread(target=submit, args=(i,)) for i in range(50)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        server.settle()
    finally:
        server.stop()
    assert sorted(status for status, _ in answers) == [200] * 100
    assert sum(a["accepted"] for _, a in answers) == 50 and sum(a["duplicates"] for _, a in answers) == 50
    assert database_counts(tmp_path / "service", db_url) == (50, 50)
    assert published(tmp_path / "service") == (50, 50)


def test_killed_during_submissions_the_service_restarts_consistent(tmp_path, db_url):
    server = Server(tmp_path / "service", db_url).start()
    accepted, stop = [], threading.Event()

    def keep_submitting():
        for i in range(200):
            if stop.is_set():
                return
            try:
                status, answer = server.post([valid_point(f"-k{i}")])
            except OSError:
                return  # the server died mid-request
            if status == 200:
                accepted.append(answer["submission"])

    worker = threading.Thread(target=keep_submitting)
    worker.start()
    while len(accepted) < 5:
        time.sleep(0.05)
    server.stop(signal.SIGKILL)
    stop.set()
    worker.join()
    restarted = Server(tmp_path / "service", db_url)
    restarted.port, restarted.url = server.port, server.url
    restarted.start()
    try:
        submissions, points = database_counts(tmp_path / "service", db_url)
        assert submissions == points >= len(accepted)  # every answered submission is there, whole
        restarted.settle()  # the backlog is published in the background, the service answering meanwhile
        assert published(tmp_path / "service") == (submissions, points)  # and published exactly once
        log = git(tmp_path / "service" / "results.git", "log", "--format=%s", "main")
        assert all(f"publish {sid}" in log for sid in accepted)
        assert git(tmp_path / "service" / "work", "status", "--porcelain") == ""
    finally:
        restarted.stop()


# --------------------------------------------------------------------------------- hostile submissions
@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    app = create_app(tmp_path_factory.mktemp("fuzz"), {TOKEN: "alice"}, ADMIN, budgets=GENEROUS)
    yield TestClient(app), app.state.store
    app.state.store.close()


def json_values():
    return st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                        | st.text(max_size=30), lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


FIELDS = [("choices", "env", "CK_BATCH_SIZE"), ("choices", "env", "CK_LIB"), ("choices", "env", "CK_MODEL"),
          ("features", "schema_version"), ("features", "repo", "commit"), ("features", "platform", "gpu"),
          ("features", "model", "flops_per_image"), ("characteristics_list",),
          ("characteristics_list", 0, "run", "time_fw_ms"), ("characteristics_list", 0, "run", "images_per_second"),
          ("characteristics_list", 1, "run", "time_fw_ms_all"), ("characteristics_list", 2, "run", "run_success")]


def assert_rejected_and_nothing_stored(client, store, body: bytes, headers=AUTH, status=None):
    before = database_counts(store.data_dir)
    response = client.post("/api/submissions", content=body, headers=headers)
    assert 400 <= response.status_code < 500, (response.status_code, body[:200])
    if status:
        assert response.status_code == status
    assert response.json()["error"]
    assert database_counts(store.data_dir) == before


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(FIELDS), value=json_values())
def test_a_wrong_value_in_any_field_is_rejected_naming_the_field(app_client, field, value):
    client, store = app_client
    item = valid_point("-fuzz")
    target = item
    for key in field[:-1]:
        target = target[key]
    if target[field[-1]] == value:
        return
    target[field[-1]] = value
    before = database_counts(store.data_dir)
    response = client.post("/api/submissions", content=json.dumps({"points": [item]}), headers=AUTH)
    if response.status_code == 200:  # a harmless change (e.g. another valid GPU name) is a valid point
        assert response.json()["accepted"] in (0, 1)
        return
    assert response.status_code == 422
    problems = " ".join(response.json()["problems"])
    derived = {"CK_BATCH_SIZE": "images_per_second", "time_fw_ms": "images_per_second",
               "run_success": "successful repetitions"}  # fields that feed a consistency check
    assert str(field[-1]) in problems or derived.get(field[-1], "\0") in problems, problems
    assert database_counts(store.data_dir) == before


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(times=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=5),
       lib=st.sampled_from(["../../etc/passwd", "..", "a/b", "ok..lib", "x" * 70, "UPPER", "tor\x00ch"]))
def test_impossible_times_and_hostile_names_are_rejected(app_client, times, lib):
    client, store = app_client
    item = valid_point("-hostile")
    item["characteristics_list"][0]["run"]["time_fw_ms_all"] = times
    item["choices"]["env"]["CK_LIB"] = lib
    body = json.dumps({"points": [item]}).encode()  # NaN and Infinity written as JSON's non-standard literals
    assert_rejected_and_nothing_stored(client, store, body, status=422)


def test_tokens_sizes_and_shapes(app_client):
    client, store = app_client
    good = json.dumps({"points": [valid_point("-shape")]}).encode()
    assert_rejected_and_nothing_stored(client, store, good, headers={}, status=401)
    assert_rejected_and_nothing_stored(client, store, good, headers={"Authorization": "Bearer wrong"}, status=401)
    assert_rejected_and_nothing_stored(client, store, b"{" * 100000, status=422)
    assert_rejected_and_nothing_stored(client, store, b"\xff\xfe", status=422)
    assert_rejected_and_nothing_stored(client, store, b'{"points": []}', status=422)
    assert_rejected_and_nothing_stored(client, store, json.dumps({"points": [1] * 201}).encode(), status=422)
    huge = valid_point("-huge")
    huge["characteristics_list"][0]["run"]["time_fw_ms_all"] = [1.0] * 60000
    assert_rejected_and_nothing_stored(client, store, json.dumps({"points": [huge]}).encode(), status=422)
    assert_rejected_and_nothing_stored(client, store, b"x" * (9 * 2**20), status=413)
    few = valid_point("-few")
    few["characteristics_list"] = few["characteristics_list"][:2]
    few["features"]["statistical_repetitions"] = 2
    assert_rejected_and_nothing_stored(client, store, json.dumps({"points": [few]}).encode(), status=422)
    fast = valid_point("-fast")
    for c in fast["characteristics_list"]:
        c["run"]["time_fw_ms"] = c["run"]["time_fw_ms"] / 1e4
        c["run"]["images_per_second"] = c["run"]["images_per_second"] * 1e4
    response = client.post("/api/submissions", content=json.dumps({"points": [fast]}), headers=AUTH)
    assert response.status_code == 422 and "above the" in " ".join(response.json()["problems"])
    assert client.post("/api/submissions/nope/withdraw", headers=AUTH).status_code == 403
    assert client.post("/api/submissions/nope/withdraw", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 404


def test_admin_withdraws_a_submission_from_the_results(app_client):
    client, store = app_client
    answer = client.post("/api/submissions", content=json.dumps({"points": [valid_point("-withdraw")]}),
                         headers=AUTH).json()
    store.flush()
    files_before, rows_before = published(store.data_dir)[1], len(store.rows())
    done = client.post(f"/api/submissions/{answer['submission']}/withdraw", headers={"Authorization": f"Bearer {ADMIN}"})
    assert done.status_code == 200 and published(store.data_dir)[1] == files_before - 1
    assert len(store.rows()) == rows_before - 1 and store.status(answer["submission"])["withdrawn"]
    assert client.get(f"/api/submissions/{answer['submission']}").json()["withdrawn"] is True


def test_a_second_gpu_never_changes_the_first_gpus_row(app_client):
    client, _ = app_client
    first = valid_point("-gpu-first")
    assert client.post("/api/submissions", content=json.dumps({"points": [first]}), headers=AUTH).status_code == 200
    rows = lambda gpu: [r for r in client.get("/api/leaderboard").json() if r["gpu"] == gpu]  # noqa: E731
    h200 = rows("NVIDIA H200")
    faster = valid_point("-gpu-second")
    faster["features"]["platform"]["gpu"] = "NVIDIA H100 80GB HBM3"
    for c in faster["characteristics_list"]:
        run = c["run"]
        run["time_fw_ms_all"] = [t / 2 for t in run["time_fw_ms_all"]]
        run["time_fw_ms"], run["images_per_second"] = run["time_fw_ms"] / 2, run["images_per_second"] * 2
    answer = client.post("/api/submissions", content=json.dumps({"points": [faster]}), headers=AUTH)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    assert rows("NVIDIA H200") == h200
    h100 = rows("NVIDIA H100 80GB HBM3")
    best_h200 = max(r["images_per_second"] for r in h200 if r["model"] == first["choices"]["env"]["CK_MODEL"])
    assert h100 and h100[0]["images_per_second"] > best_h200


def test_the_leaderboard_gives_each_rate_its_interval_from_the_repetitions(app_client):
    client, store = app_client
    item = valid_point("-interval")
    assert client.post("/api/submissions", content=json.dumps({"points": [item]}), headers=AUTH).status_code == 200
    row = next(r for r in client.get("/api/leaderboard").json() if r["gpu"] == "NVIDIA H200")
    times = np.array([statistics.median(c["run"]["time_fw_ms_all"]) for c in item["characteristics_list"]])
    half = scipy_stats.t.ppf(0.975, len(times) - 1) * times.std(ddof=1) / np.sqrt(len(times))
    batch = item["choices"]["env"]["CK_BATCH_SIZE"]
    expected = [1e3 * batch / (times.mean() + half), 1e3 * batch / (times.mean() - half)]
    assert row["images_per_second_ci"] == pytest.approx(expected, rel=1e-6)
    assert expected[0] < row["images_per_second"] < expected[1]
    page = Dashboard(store).wait()
    assert f"{row['images_per_second']:.1f} ({expected[0]:.1f}-{expected[1]:.1f})" in page


# ------------------------------------------------------------------------------------------ dashboard
CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`make test` installs it as root)")
def test_dashboard_in_chromium_shows_the_leaderboard_without_console_errors(tmp_path):
    server = Server(tmp_path / "service").start()
    try:
        assert server.post([valid_point("-dash")])[0] == 200
        deadline = time.monotonic() + 120  # plots are drawn outside the request path: wait for them
        while b"data:image/png" not in urllib.request.urlopen(server.url + "/").read():
            assert time.monotonic() < deadline, "the dashboard's plots were never drawn"
            time.sleep(0.2)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0",
                 f"--user-data-dir={tmp_path / 'profile'}"]
        dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", server.url + "/"], capture_output=True, text=True,
                             timeout=180)
        assert "<table id=\"unconfirmed\">" in dom.stdout and "<td>alice</td>" in dom.stdout  # one submitter
        assert "<td>unconfirmed</td>" in dom.stdout
        assert "data:image/png;base64," in dom.stdout
        assert not [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    finally:
        server.stop()


def test_the_dashboard_says_what_is_pending_and_names_the_platform_by_kind(tmp_path):
    from ck_plugins.submit.store import Store

    store = Store(tmp_path / "data")
    try:
        answer = store.accept("alice", [valid_point("-pending")])
        dashboard = Dashboard(store)
        assert "Pending" not in dashboard.wait()
        store._mark(answer["submission"], published=False)  # as between the answer and the publisher's commit
        page = dashboard.page()
        assert "Pending (1)" in page and answer["submission"] in page and "being published" in page
        row = store.leaderboard()[0]
        assert row["platform"] == "GPU NVIDIA H200"
        cpu = valid_point("-cpu")
        cpu["choices"]["settings"]["device"] = "cpu"
        cpu["features"]["platform"]["gpu"] = None
        assert all(not r["platform"].startswith("GPU") for r in best_cpu(store, cpu))
    finally:
        store.close()


def best_cpu(store, item):
    store.accept("bob", [item])
    return [r for r in store.leaderboard() if r["platform"].startswith("CPU")]
