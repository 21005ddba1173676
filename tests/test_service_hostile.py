"""Each case found by attacking the result service, kept as a test: every one failed before its fix."""
import concurrent.futures
import json
import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ck_plugins.submit import server as service
from ck_plugins.submit.server import create_app
from ck_plugins.submit.store import POINTS, Store
from fixtures import build as fixtures
from test_service import ADMIN, AUTH, GENEROUS, TOKEN, git, valid_point


@pytest.fixture()
def client(tmp_path, db_url):
    app = create_app(tmp_path / "service", {TOKEN: "alice"}, ADMIN, db_url, budgets=GENEROUS)
    yield TestClient(app), app.state.store
    app.state.store.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def rejecting(request, tmp_path_factory):
    """One service per database for the cases that must be refused: nothing they send is ever stored, so they
    share it (each asserts that the store stays empty)."""
    db_url = None if request.param == "sqlite" else request.getfixturevalue("postgres_server")()
    app = create_app(tmp_path_factory.mktemp("rejecting"), {TOKEN: "alice"}, ADMIN, db_url, budgets=GENEROUS)
    yield TestClient(app), app.state.store
    app.state.store.close()


def post(client, item, headers=AUTH):
    return client.post("/api/submissions", content=json.dumps({"points": [item]}), headers=headers)


def with_value(tag, path, value):
    item = valid_point(tag)
    target = item
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return item


@pytest.mark.parametrize("path, value, named", [
    (("choices", "settings", "precision"), None, "settings/precision"),
    (("choices", "settings", "precision"), ["x"], "settings/precision"),
    (("choices", "settings", "precision"), {"a": 1}, "settings/precision"),
    (("choices", "settings", "precision"), "fp64", "settings/precision"),
    (("choices", "settings", "plan"), "x", "settings/plan"),
    (("choices", "settings", "plan"), {"configs_used": ["a"]}, "configs_used"),
    (("choices", "env", "CK_LIB"), "torch-amp\n", "CK_LIB"),
    (("choices", "env", "CK_SEED"), 10**400, "CK_SEED"),
    (("choices", "env", "CK_SEED"), 2**63, "CK_SEED"),
    (("features", "platform", "cpu"), "a\udfffb", "platform/cpu"),
    (("features", "platform", "cpu"), "a\x00b", "platform/cpu"),
    (("features", "platform", "gpu"), "NVIDIA Imaginary 9000", "platform/gpu"),
    (("features", "statistical_repetitions"), 99, "statistical_repetitions"),
    (("features", "model", "flops_per_image"), 1.0e6, "flops_per_image"),
    (("characteristics_list", 0, "run", "time_fw_ms"), 0.25, "time_fw_ms"),
    (("choices", "env", "CK_MODEL"), "onnx: ", "CK_MODEL"),  # passed the schema, then stopped the publisher
    (("choices", "env", "CK_MODEL"), "onnx:\t", "CK_MODEL"),
    (("choices", "env", "CK_MODEL"), "timm:resnet18\n", "CK_MODEL"),
    (("choices", "env", "CK_BATCH_SIZE"), 1e19, "CK_BATCH_SIZE"),  # a float the schema took for an integer: a 500
    (("choices", "env", "CK_BATCH_SIZE"), 2**31, "CK_BATCH_SIZE"),  # past PostgreSQL's integer: a 500
    (("choices", "env", "CK_SEED"), 1e300, "CK_SEED"),
    (("features", "repo", "commit"), "unknown\n", "repo/commit"),
    (("features", "platform", "gpu"), "NVIDIA H200\u202e", "platform/gpu"),  # a bidi control
    (("features", "platform", "cpu"), " ", "platform/cpu"),
    (("features", "platform", "gpu"), "Totally Fake GPU (not an H200)", "platform/gpu"),  # matched as a substring
    (("features", "platform", "gpu"), "NVIDIA RTX A1000", "platform/gpu"),  # was taken for an A100
])
def test_what_once_broke_or_fooled_the_service_is_a_4xx_naming_the_field(rejecting, path, value, named):
    http, store = rejecting
    item = with_value(f"-{named}-{value!r}"[:40], path, value)
    body = json.dumps({"points": [item]}, ensure_ascii=True)  # a lone surrogate travels as \\udfff
    response = http.post("/api/submissions", content=body, headers=AUTH)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert named in " ".join(response.json()["problems"] or [response.json()["error"]])
    assert store.rows() == []


def test_invented_results_far_above_the_peak_never_reach_the_top(client):
    http, _ = client
    fake = valid_point("-invented")
    fake["choices"]["settings"]["precision"] = "FP16"  # case-folded: checked against the fp16 peak all the same
    for c in fake["characteristics_list"]:
        run = c["run"]
        run["time_fw_ms_all"] = [t / 1e4 for t in run["time_fw_ms_all"]]
        run["time_fw_ms"], run["images_per_second"] = run["time_fw_ms"] / 1e4, run["images_per_second"] * 1e4
    response = post(http, fake)
    assert response.status_code == 422 and "above the 989.4 TFLOP/s peak" in " ".join(response.json()["problems"])
    assert http.get("/api/leaderboard").json() == []
    honest = valid_point("-honest")
    honest["choices"]["settings"]["precision"] = "FP16"
    assert post(http, honest).status_code == 200
    assert [r["precision"] for r in http.get("/api/leaderboard").json()] == ["fp16"]


def test_every_stored_point_renders_and_labels_are_never_mathtext(client):
    http, store = client
    item = valid_point("-mathtext")
    item["choices"]["settings"]["compile_mode"] = "$\\frac{$"  # becomes part of the lib label
    assert post(http, item).status_code == 200
    assert http.get("/api/leaderboard").status_code == 200
    store.flush()
    page = service.Dashboard(store).wait()
    assert "data:image/png;base64," in page and "Plots unavailable" not in page, re.findall(r"Plots unavailable[^<]*", page)


def test_simultaneous_dashboard_loads_all_succeed(client):
    http, store = client
    assert post(http, valid_point("-concurrent")).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: http.get("/").status_code, range(16)))
    assert codes == [200] * 16


def test_a_crash_between_the_publish_commit_and_the_database_is_repaired_at_restart(tmp_path, monkeypatch, db_url):
    data = tmp_path / "service"
    store = Store(data, db_url)
    original = Store._mark_published

    def crash(self, done):  # the process dies after git committed, before the database noted it
        if done:
            raise SystemExit("killed")

    monkeypatch.setattr(Store, "_mark_published", crash)
    with pytest.raises(SystemExit):
        store.accept("alice", [valid_point("-crash")])
    monkeypatch.setattr(Store, "_mark_published", original)
    restarted = Store(data, db_url)
    sid = _only_submission(data, db_url)
    assert restarted.status(sid)["published"]
    files = _files(data, sid, db_url)
    assert len(files) == 1 and files[0] in git(data / "results.git", "ls-tree", "-r", "--name-only", "main")
    assert restarted.withdraw(sid)
    assert files[0] not in git(data / "results.git", "ls-tree", "-r", "--name-only", "main")


def test_a_stale_git_lock_left_by_a_killed_service_is_removed_at_restart(tmp_path):
    data = tmp_path / "service"
    Store(data)
    (data / "work" / ".git" / "index.lock").write_text("")
    restarted = Store(data)  # failed before: "Unable to create .../index.lock: File exists"
    assert restarted.accept("alice", [valid_point("-after-lock")])["accepted"] == 1


def test_tokens_are_checked_at_start_up():
    with pytest.raises(ValueError, match="also alice's"):
        service.parse_tokens(f"alice:{TOKEN},bob:{TOKEN}")
    with pytest.raises(ValueError, match="equal to the admin token"):
        service.check_tokens({ADMIN: "bob"}, ADMIN)
    with pytest.raises(ValueError, match="characters that are not spaces"):
        service.check_tokens({" " * 16: "bob"}, ADMIN)


def test_the_bearer_scheme_is_case_insensitive(client):
    http, _ = client
    assert post(http, valid_point("-bearer"), headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_each_service_has_its_own_results_alias(tmp_path):
    first, second = Store(tmp_path / "a"), Store(tmp_path / "b")
    aliases = [json.loads((s.work / ".ckr.json").read_text())["data_alias"] for s in (first, second)]
    assert aliases[0] != aliases[1] and all(a.startswith("ck-precision-bench-results-") for a in aliases)
    named = Store(tmp_path / "c", alias="lab-results")
    assert json.loads((named.work / ".ckr.json").read_text())["data_alias"] == "lab-results"


def _only_submission(data, db_url=None) -> str:
    engine = sa.create_engine(db_url or f"sqlite:///{data / 'service.db'}")
    with engine.connect() as db:
        return db.execute(sa.text("select id from submissions")).scalar_one()


def _files(data, sid, db_url=None) -> list[str]:
    engine = sa.create_engine(db_url or f"sqlite:///{data / 'service.db'}")
    with engine.connect() as db:
        return json.loads(db.execute(sa.text("select files from submissions where id = :i"), {"i": sid}).scalar_one())


def test_validation_and_git_run_off_the_event_loop(client, monkeypatch):
    """A large submission must not hold every other request: its blocking work runs in a worker thread."""
    import asyncio

    http, _ = client
    seen = []
    original = service.check_and_read

    def spy(bundle):
        try:
            asyncio.get_running_loop()
            seen.append("event loop")
        except RuntimeError:
            seen.append("worker thread")
        return original(bundle)

    monkeypatch.setattr(service, "check_and_read", spy)
    assert post(http, valid_point("-off-loop")).status_code == 200
    assert seen == ["worker thread"]


def test_a_submission_that_cannot_be_published_is_set_aside_and_publishing_goes_on(tmp_path, db_url, monkeypatch):
    from ck_plugins import ckrepo

    store = Store(tmp_path / "service", db_url)
    original = ckrepo.write_point
    try:
        monkeypatch.setattr(ckrepo, "write_point", lambda *a, **k: (_ for _ in ()).throw(ValueError("unwritable")))
        first = store.accept("alice", [valid_point("-set-aside")])  # answered: stored, then set aside
        assert first["accepted"] == 1 and first["submission"] in store.quarantined
        monkeypatch.setattr(ckrepo, "write_point", original)
        second = store.accept("alice", [valid_point("-goes-on")])
        assert store.status(second["submission"])["published"] is True
        assert store.status(first["submission"])["published"] is False
    finally:
        store.close()
    again = Store(tmp_path / "service", db_url)  # the next start tries it again
    try:
        again.reconcile()
        assert again.status(first["submission"])["published"] is True and not again.quarantined
    finally:
        again.close()


def test_a_stale_maintenance_lock_is_removed_at_start(tmp_path, db_url):
    store = Store(tmp_path / "service", db_url)
    store.close()
    lock = tmp_path / "service" / "work" / ".git" / "objects" / "maintenance.lock"
    lock.write_text("")
    again = Store(tmp_path / "service", db_url)
    try:
        again.reconcile()
        assert not lock.exists()
    finally:
        again.close()


def _scaled(item: dict, factor: float) -> dict:
    """The point made `factor` times faster, every derived figure kept consistent."""
    for c in item["characteristics_list"]:
        run = c["run"]
        run["time_fw_ms_all"] = [t / factor for t in run["time_fw_ms_all"]]
        run["time_fw_ms"], run["images_per_second"] = run["time_fw_ms"] / factor, run["images_per_second"] * factor
        run.pop("flops_per_second", None)
    return item


@pytest.mark.parametrize("change, named", [
    (lambda p: (p["choices"]["env"].update(CK_INPUT_SHAPE="3x224x224"),  # the default spelled out skipped the check
                p["features"]["model"].update(flops_per_image=1.0)), "flops_per_image"),
    (lambda p: (p["choices"]["env"].update(CK_INPUT_SHAPE="3x112x112"),
                p["features"]["model"].update(flops_per_image=1.0)), "flops_per_image"),
    (lambda p: (p["choices"]["env"].update(CK_MODEL="timm:resnet18"), p["features"]["model"].update(
        flops_per_image=1e-300), _scaled(p, 1e290)), "images_per_second"),  # any work claimed: 1e295 img/s
    (lambda p: [c["run"].update(flops_per_second=1.0) for c in p["characteristics_list"]], "flops_per_second"),
])
def test_figures_the_submitter_could_steer_are_checked_against_what_they_derive_from(rejecting, change, named):
    http, store = rejecting
    item = valid_point(f"-steer-{named}")
    change(item)
    response = post(http, item)
    assert response.status_code == 422, response.text[:300]
    assert named in " ".join(response.json()["problems"]) and store.rows() == []


def test_an_older_schema_version_is_stored_migrated(client):
    http, store = client
    item = fixtures.our_point_data("NVIDIA H200", 16, [[0.30 + 0.001 * (i % 7) + 0.002 * r for i in range(20)]
                                                       for r in range(3)], "torch-cudnn-fp16", "alexnet", version=1)
    item["features"]["repo"]["commit"] = "0" * 40 + "-v1"
    assert post(http, item).status_code == 200
    with store.engine.connect() as db:
        [body] = [json.loads(r[0]) for r in db.execute(sa.select(POINTS.c.body))]
    assert body["features"]["schema_version"] == 2


def test_a_point_without_a_gpu_ranks_on_a_cpu_row_whatever_its_cpu_is_called(client):
    http, store = client
    honest = valid_point("-h200-row")
    assert post(http, honest).status_code == 200
    disguised = valid_point("-disguised")
    disguised["features"]["platform"].update(gpu=None, cpu="NVIDIA H200")
    disguised["choices"]["settings"]["device"] = "cpu"
    assert post(http, disguised).status_code == 200
    store.flush()
    rows = {r["gpu"]: r for r in http.get("/api/leaderboard").json()}
    assert set(rows) == {"NVIDIA H200", "CPU: NVIDIA H200"}
    assert rows["CPU: NVIDIA H200"]["platform"] == "CPU NVIDIA H200" and rows["NVIDIA H200"]["platform"].startswith("GPU")


def test_real_long_names_are_stored_and_longer_ones_refused_naming_the_field(client):
    http, store = client
    timm = valid_point("-long-timm")
    timm["choices"]["env"]["CK_MODEL"] = "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k"  # 47: over a 40 column
    response = post(http, timm)
    assert response.status_code == 200, response.text[:300]
    huge = valid_point("-huge-cpu")
    huge["features"]["platform"]["cpu"] = "x" * 201
    response = post(http, huge)
    assert response.status_code == 422 and "platform/cpu: a name of 201 characters" in " ".join(
        response.json()["problems"])


BOB = "bob-token-0123456789abc"


@pytest.fixture()
def two(tmp_path, db_url):
    app = create_app(tmp_path / "service", {TOKEN: "alice", BOB: "bob"}, ADMIN, db_url, budgets=GENEROUS)
    yield TestClient(app), app.state.store
    app.state.store.close()


def _status(http) -> list[tuple[str, str]]:
    return [(r["submitter"], r["status"]) for r in http.get("/api/leaderboard").json()]


def test_a_result_ranks_once_another_contributor_reproduces_it(two):
    http, store = two
    assert post(http, valid_point("-alice-1")).status_code == 200
    assert post(http, valid_point("-alice-2")).status_code == 200  # the same submitter again confirms nothing
    store.flush()
    assert _status(http) == [("alice", "unconfirmed")]
    assert post(http, valid_point("-bob-1"), {"Authorization": f"Bearer {BOB}"}).status_code == 200
    store.flush()
    board = http.get("/api/leaderboard").json()
    assert [r["status"] for r in board] == ["confirmed"] and board[0]["ratio_to_confirmed_best"] == 1.0


def test_a_fabricated_result_far_above_the_confirmed_best_is_held_never_ranked(two):
    http, store = two
    assert post(http, valid_point("-alice")).status_code == 200
    assert post(http, valid_point("-bob"), {"Authorization": f"Bearer {BOB}"}).status_code == 200
    fake = _scaled(valid_point("-fake"), 2.0)  # twice the real rate: under the roofline, above everyone
    assert post(http, fake, {"Authorization": f"Bearer {BOB}"}).status_code == 200
    store.flush()
    board = http.get("/api/leaderboard").json()
    assert [r["status"] for r in board] == ["confirmed", "held for review"]
    assert board[1]["ratio_to_confirmed_best"] == pytest.approx(2.0, rel=0.01)
    page = service.Dashboard(store).wait()
    assert page.index("held for review") > page.index("Not yet confirmed")  # shown apart, below the ranking


def test_an_admin_approval_confirms_a_result(two):
    http, store = two
    assert post(http, valid_point("-approve")).status_code == 200
    store.flush()
    [row] = http.get("/api/leaderboard").json()
    assert http.post(f"/api/points/{row['hash']}/approve", headers=AUTH).status_code == 403
    for wrong in ("nope", "a%00b", "0" * 65):
        assert http.post(f"/api/points/{wrong}/approve", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 404
    done = http.post(f"/api/points/{row['hash']}/approve", headers={"Authorization": f"Bearer {ADMIN}"})
    assert done.status_code == 200 and _status(http) == [("alice", "confirmed")]


def test_a_moved_data_folder_publishes_to_its_own_results(tmp_path, db_url):
    import shutil

    store = Store(tmp_path / "old", db_url)
    store.accept("alice", [valid_point("-before-move")])
    store.close()
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    shutil.rmtree(tmp_path / "old")  # the old place is gone: publishing there would fail
    moved = Store(tmp_path / "new", db_url)
    try:
        moved.accept("alice", [valid_point("-after-move")])
        assert git(tmp_path / "new" / "results.git", "log", "--format=%s", "main").count("publish ") == 2
    finally:
        moved.close()


def test_the_service_answers_before_its_backlog_is_published(tmp_path, db_url, monkeypatch):
    store = Store(tmp_path / "service", db_url)
    answer = store.accept("alice", [valid_point("-backlog")])
    store._mark(answer["submission"], published=False)  # as if killed before publishing
    store.close()
    import threading

    calls = []
    monkeypatch.setattr(Store, "_publish_unpublished", lambda self: calls.append(threading.current_thread()))
    background = Store(tmp_path / "service", db_url, background=True)
    try:
        assert threading.current_thread() not in calls  # never inside the start: only the publisher thread
        assert background._publisher.is_alive()
    finally:
        background.close()


def test_the_dashboard_draws_a_bounded_number_of_plots_however_many_names_arrive():
    rows = [{"gpu": f"CPU: invented {n}", "model": "alexnet", "lib": "torch-cpu", "batch_size": 2,
             "images_per_second": 100.0 + n} for n in range(service.MAX_PLOTS + 5)]
    rows += [{"gpu": "NVIDIA H200", "model": "alexnet", "lib": "torch-cudnn-fp16", "batch_size": b,
              "images_per_second": 1000.0 * b} for b in (1, 2, 4)]
    page = service._plots(rows)
    assert page.count("<img ") == service.MAX_PLOTS and "alexnet on NVIDIA H200" in page  # the busiest first
    assert "6 more (platform, model) pairs are not drawn" in page
