"""The service's budgets (guard.py): connection timeouts and cap, malformed framing answered in JSON, a rate limit
per submitter and a work limit per request; and the readers and the store past what once stopped them (a crowd's
10,000 subpoints of one configuration, old narrow PostgreSQL columns, a pulled repository of hostile points)."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ck_plugins import ckrepo, point, readpoints
from ck_plugins.cli import main
from ck_plugins.submit.guard import Budgets, RateLimit, work
from ck_plugins.submit.server import create_app
from ck_plugins.submit.store import Store
from conftest import _ck_bin
from fixtures import build as fixtures
from test_service import ADMIN, AUTH, TOKEN, Server, commit_all, database_counts, git, valid_point

HEADER_TIMEOUT_S, MAX_CONNECTIONS = 1.5, 40


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    served = Server(tmp_path_factory.mktemp("budgets") / "service", None, "--header-timeout-s", str(HEADER_TIMEOUT_S),
                    "--body-timeout-s", str(HEADER_TIMEOUT_S), "--max-connections", str(MAX_CONNECTIONS),
                    "--burst", "1000000").start()
    yield served
    served.stop()


def exchange(server, data: bytes, wait: float = 30.0) -> tuple[bytes, float]:
    """Send raw bytes; everything the server answers until it closes the connection, and how long that took."""
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        connection.settimeout(wait)
        start = time.monotonic()
        connection.sendall(data)
        out = b""
        while chunk := connection.recv(65536):
            out += chunk
        return out, time.monotonic() - start


def answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw[:300]
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1e3", b"99999999999999999999999"])
def test_a_content_length_h11_refuses_is_a_json_400_naming_the_header(server, length):
    raw, _ = exchange(server, b"POST /api/submissions HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n")
    status, body = answer(raw)
    assert status == 400 and "Content-Length" in body["problems"][0] and body["problems"][0].startswith("headers:")


def test_headers_that_never_complete_are_answered_408_and_closed(server):
    raw, seconds = exchange(server, b"POST /api/submissions HTTP/1.1\r\nHost: x\r\n")  # and then nothing
    status, body = answer(raw)
    assert status == 408 and body["problems"] == [f"headers: not complete within {HEADER_TIMEOUT_S:g} s"]
    assert seconds >= HEADER_TIMEOUT_S * 0.9  # a lower bound only


def test_a_body_that_never_completes_is_dropped_and_nothing_is_stored(server):
    before = database_counts(server.data)
    raw, seconds = exchange(server, (f"POST /api/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                                     "Content-Length: 5000\r\n\r\n{\"points\": [").encode())
    assert raw == b"" and seconds >= HEADER_TIMEOUT_S * 0.9  # closed: the application never saw a whole body
    assert database_counts(server.data) == before


def test_past_the_connection_cap_a_new_connection_gets_503_and_below_it_answers(server):
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        raw, _ = exchange(server, b"GET /api/leaderboard HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200")  # the last place left (accepted after the idle ones: one queue)
        extra = socket.create_connection(("127.0.0.1", server.port))
        raw, _ = exchange(server, b"GET /api/leaderboard HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = answer(raw)
        assert status == 503 and body["problems"][0].startswith(f"connections: more than {MAX_CONNECTIONS} open")
        extra.close()
    finally:
        for connection in idle:
            connection.close()
    deadline = time.monotonic() + 30
    while not exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0].startswith(b"HTTP/1.1 200"):
        assert time.monotonic() < deadline, "the service did not answer again once the connections closed"
        time.sleep(0.1)


# ----------------------------------------------------------------------------------- rate and work limits
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limit_is_a_token_bucket_per_submitter():
    clock = Clock()
    limit = RateLimit(burst=2, per_minute=60, clock=clock)
    assert limit.take("alice") == 0 and limit.take("alice") == 0
    assert limit.take("alice") == pytest.approx(1.0)  # one a second after the burst
    assert limit.take("bob") == 0  # each submitter their own bucket
    clock.now += 1.0
    assert limit.take("alice") == 0 and limit.take("alice") > 0


@pytest.fixture()
def limited(tmp_path, db_url):
    clock = Clock()
    app = create_app(tmp_path / "service", {TOKEN: "alice"}, ADMIN, db_url,
                     budgets=Budgets(burst=2, per_minute=6, max_work=200, clock=clock, processes=0))
    yield TestClient(app), app.state.store, clock
    app.state.store.close()


def post(http, points):
    return http.post("/api/submissions", content=json.dumps({"points": points}), headers=AUTH)


def test_past_its_rate_a_submitter_gets_429_with_retry_after_and_nothing_is_stored(limited):
    http, store, clock = limited
    assert post(http, [valid_point("-r1")]).status_code == 200
    assert post(http, [valid_point("-r2")]).status_code == 200
    refused = post(http, [valid_point("-r3")])
    assert refused.status_code == 429 and refused.headers["retry-after"] == "10"
    assert refused.json()["problems"] == ["rate: at most 6 submissions a minute per submitter"]
    assert len(store.rows()) == 2
    clock.now += 10.0
    assert post(http, [valid_point("-r3")]).status_code == 200


def test_a_request_over_the_work_limit_is_413_naming_work_and_nothing_is_stored(limited):
    http, store, _ = limited
    one = valid_point("-w1")
    assert work([one]) == 63  # 3 repetitions of 20 iterations, and each repetition itself
    refused = post(http, [one, valid_point("-w2"), valid_point("-w3"), valid_point("-w4")])  # 252 > 200
    assert refused.status_code == 413 and refused.json()["problems"] == ["work: 252 > 200"]
    assert store.rows() == []
    assert post(http, [one, valid_point("-w2"), valid_point("-w3")]).status_code == 200  # 189


def test_the_client_splits_its_points_under_the_work_limit_and_waits_out_the_rate(tmp_path):
    from ck_plugins.submit import client

    points = [valid_point(f"-c{i}") for i in range(7)]
    bundles = client.bundles(points, max_work=200)
    assert [len(b) for b in bundles] == [3, 3, 1] and sum(bundles, []) == points


# --------------------------------------------------------------------------- what once stopped the readers
def test_past_9999_subpoints_of_one_configuration_the_numbering_goes_on(tmp_path):
    entry = fixtures.entry(tmp_path, "alexnet-torch-cudnn-fp16", [fixtures.TAG, "alexnet", "torch-cudnn-fp16"])
    item = valid_point("-crowd")
    first = ckrepo.write_point(entry, item)
    uid = first.name.split(".")[0].removeprefix("ckp-")
    for number in range(2, 10000):  # a crowd's worth of the same configuration, written cheaply
        os.link(first, entry / f"ckp-{uid}.{number:04d}.json")
    started = time.monotonic()
    written = ckrepo.write_point(entry, item)
    assert written.name == f"ckp-{uid}.10000.json"
    assert time.monotonic() - started < 30  # one try, not ten thousand (a generous bound, never a timing test)
    loaded = readpoints.load([tmp_path])
    assert len(loaded.runs) == 3 * 10000 and not loaded.skipped


def test_an_older_postgresql_database_gets_its_name_columns_widened(postgres_server, tmp_path):
    url = postgres_server()
    engine = sa.create_engine(url)
    with engine.begin() as db:  # the table as an older version made it: 40-character model names
        db.execute(sa.text("CREATE TABLE submissions (id VARCHAR(36) PRIMARY KEY, submitter VARCHAR(100) NOT NULL, "
                           "created FLOAT NOT NULL, points INTEGER NOT NULL, published BOOLEAN NOT NULL, "
                           "withdrawn BOOLEAN NOT NULL, files TEXT NOT NULL)"))
        db.execute(sa.text("CREATE TABLE points (hash VARCHAR(64) PRIMARY KEY, submission_id VARCHAR(36) NOT NULL "
                           "REFERENCES submissions(id), model VARCHAR(40), lib VARCHAR(80), gpu VARCHAR(80), "
                           "precision VARCHAR(20), batch_size INTEGER, images_per_second FLOAT, body TEXT NOT NULL)"))
    store = Store(tmp_path / "service", url)
    try:
        item = valid_point("-long-lib")
        item["choices"]["env"]["CK_LIB"] = item["choices"]["settings"]["lib"] = "torch-cudnn-fp16" + "+x" * 60
        store.accept("alice", [item])  # a lib label of 150 characters: a 500 on the old 80-character column
        assert [r["lib"] for r in store.rows()] == [point.read(item).lib] and len(store.rows()[0]["lib"]) > 80
    finally:
        store.close()


def hostile_points() -> list[dict]:
    """One point for each class of hostile input an older service accepted (or a repository holds), as written."""
    cases = []

    def case(change):
        item = valid_point(f"-hostile-{len(cases)}")
        change(item)
        cases.append(item)

    env = lambda item: item["choices"]["env"]  # noqa: E731
    platform = lambda item: item["features"]["platform"]  # noqa: E731
    case(lambda i: platform(i).update(cpu="c" * 4096, gpu=None))  # File name too long, once
    case(lambda i: platform(i).update(gpu="NVIDIA H200\u202e$x^2$ /../../etc"))  # bidi, mathtext, a path
    case(lambda i: platform(i).update(gpu="Totally Fake GPU (not an H200)"))
    case(lambda i: env(i).update(CK_MODEL="onnx: "))
    case(lambda i: env(i).update(CK_MODEL="timm:resnet18\n"))
    case(lambda i: env(i).update(CK_MODEL="timm:" + "v" * 300))
    case(lambda i: env(i).update(CK_LIB="torch-amp\n<script>alert(1)</script>"))
    case(lambda i: env(i).update(CK_BATCH_SIZE=1e19))
    case(lambda i: env(i).update(CK_SEED=1e300))
    case(lambda i: i["features"].update(schema_version=1))  # a v2 body claiming v1
    case(lambda i: i["features"]["model"].update(flops_per_image=1))
    case(lambda i: i["characteristics_list"][0]["run"].update(images_per_second=1e305, flops_per_second=-1))
    return cases


def test_analysing_a_pulled_repository_of_hostile_points_writes_a_report(ck_env, tmp_path):
    source = tmp_path / "hostile"
    for n, item in enumerate(hostile_points()):
        folder = fixtures.entry(source, f"hostile-{n}", [fixtures.TAG, "hostile"])
        (folder / f"ckp-{n:016x}.0001.json").write_text(json.dumps(item))
    fixtures._write(source / ".ckr.json", {"data_uoa": "hostile", "data_alias": "hostile", "dict": {}})
    for file, text in (("alias-a-experiment", fixtures.EXPERIMENT_UID), (f"alias-u-{fixtures.EXPERIMENT_UID}",
                                                                          "experiment")):
        (source / ".cm").mkdir(exist_ok=True)
        (source / ".cm" / file).write_text(text + "\n")  # CK finds the experiment module by these
    git(tmp_path, "init", "-q", "-b", "main", str(source))
    commit_all(source, "hostile results")
    git(tmp_path, "clone", "-q", "--bare", str(source), str(tmp_path / "hostile.git"))
    env = dict(ck_env, HOME=str(tmp_path / "home"), CK_REPOS=str(tmp_path / "CK"))
    os.makedirs(env["HOME"])
    pulled = subprocess.run([_ck_bin(), "pull", "repo", f"--url={tmp_path / 'hostile.git'}"], env=env,
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert pulled.returncode == 0, pulled.stdout[-2000:] + pulled.stderr[-2000:]
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "ck_plugins", "analyse", "--all-repos", "--tags", "hostile",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (out / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page  # escaped, never markup
    assert all(len(path.name.encode()) <= 255 and "/" not in path.name for path in out.iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["repetitions"] + 3 * summary["skipped_count"] == 3 * len(hostile_points())  # read, or listed
    assert main(["compare", str(tmp_path / "CK" / "hostile"), str(tmp_path / "CK" / "hostile"), "--tags",
                 "hostile"]) == 0
