"""Hostile requests against a real result service: how many got a 5xx, how many invalid points were stored, and
whether every rejection named the field.

Usage: python benchmarks/fuzz_service.py [REQUESTS] [SEED]     (default 10,000 requests, 8 at a time)
Each request is a valid point with one field replaced by a hostile value (wrong types, huge or non-finite numbers,
NUL and lone surrogates, trailing newlines, bidi controls, deep nesting, long strings, invented results), one of
the attacks issue 35 lists (a model `onnx: `, the default shape spelled out with a work of 1, a GPU named only in
host_gpu, GPU names that contain a real one, networks by name claiming any work, figures that contradict their
times, a v2 body calling itself v1, one configuration from many hosts, a body past the work limit), a broken body
or token, or raw HTTP with a Content-Length h11 refuses. Prints the counts and exits non-zero if any request got a
5xx, any 4xx did not name its field, or any stored point fails the service's own checks now.
"""
from __future__ import annotations

import concurrent.futures
import json
import random
import socket
import sys
from collections import Counter

import sqlalchemy as sa

from service_common import AUTH, Service, point

from ck_plugins.submit.validate import check_point

PATHS = [("choices", "env", k) for k in ("CK_MODEL", "CK_LIB", "CK_BATCH_SIZE", "CK_ITERATIONS", "CK_SEED",
                                         "CK_MEMORY_FORMAT", "CK_CUDA_GRAPH", "CK_ADAPTIVE_PLAN")] + [
    ("choices", "settings", "precision"), ("choices", "settings", "plan"), ("choices", "settings", "compile_mode"),
    ("features", "schema_version"), ("features", "statistical_repetitions"), ("features", "platform", "gpu"),
    ("features", "platform", "cpu"), ("features", "repo", "commit"), ("features", "model", "flops_per_image"),
    ("characteristics_list",), ("characteristics_list", 0, "run", "time_fw_ms"),
    ("characteristics_list", 1, "run", "time_fw_ms_all"), ("characteristics_list", 2, "run", "run_success"),
    ("characteristics_list", 0, "run", "images_per_second"), ("characteristics_list", 0, "run", "per_layer_info")]
HOSTILE = [None, True, 0, -1, 2**63, 10**400, 1e308, -0.0, "", " ", "x" * 5000, "torch-amp\n", "a\x00b", "\udfff",
           "../../etc/passwd", "$\\frac{$", "<script>alert(1)</script>", "FP16", "fp64", "NVIDIA Imaginary 9000",
           ["x"], {"a": 1}, [], {}, [1.0] * 60000, {"configs_used": ["a"]}, "'; drop table points; --",
           "onnx: ", "onnx:\t", "timm:resnet18\n", "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k", "v" * 300,
           1e19, 2**31, 1e300, "unknown\n", "NVIDIA H200\u202e", "Totally Fake GPU (not an H200)", "NVIDIA RTX A1000"]


def _env(item):
    return item["choices"]["env"]


def _platform(item):
    return item["features"]["platform"]


def _scale_rate(item, factor: float) -> None:
    for c in item["characteristics_list"]:
        run = c["run"]
        run["time_fw_ms_all"] = [t / factor for t in run["time_fw_ms_all"]]
        run["time_fw_ms"], run["images_per_second"] = run["time_fw_ms"] / factor, run["images_per_second"] * factor


ATTACKS = {  # issue 35's fabrications and exhaustion, each a change to a valid point (rng: its own choices)
    "default shape spelled out, work 1": lambda i, rng: (_env(i).update(CK_INPUT_SHAPE="3x224x224"),
                                                         i["features"]["model"].update(flops_per_image=1)),
    "GPU only in host_gpu": lambda i, rng: (_platform(i).update(gpu=rng.choice([None, ""]), host_gpu="NVIDIA H200"),
                                            _scale_rate(i, 20.0)),
    "a network by name claiming any work": lambda i, rng: (
        _env(i).update(CK_MODEL=rng.choice(["torchvision:resnet18", "timm:resnet50", "py:fake.net"])),
        i["features"]["model"].update(flops_per_image=rng.choice([1.0, 1e3, 1e15]))),
    "flops_per_second contradicting the times": lambda i, rng: i["characteristics_list"][0]["run"].update(
        flops_per_second=rng.choice([1.0, 1e18, -5.0])),
    "a v2 body calling itself v1": lambda i, rng: i["features"].update(schema_version=1),
    "one configuration from many hosts": lambda i, rng: _platform(i).update(hostname=f"host-{rng.randrange(10**6)}"),
    "twice the best real rate": lambda i, rng: _scale_rate(i, 2.0),
    "past the work limit": lambda i, rng: i.update(characteristics_list=[
        {"run": dict(i["characteristics_list"][0]["run"], time_fw_ms_all=[0.3] * 5000)} for _ in range(50)]),
}
RAW = [b"-1", b"abc", b"1e3", b"99999999999999999999999"]  # Content-Length values h11 refuses


def hostile_value(rng: random.Random):
    choice = rng.randrange(len(HOSTILE) + 2)
    if choice == len(HOSTILE):
        return [[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]
    if choice == len(HOSTILE) + 1:
        return rng.uniform(-1e9, 1e9)
    return HOSTILE[choice]


def request(n: int, rng: random.Random) -> tuple[bytes, dict]:
    item = point(10**6 + n)
    kind = rng.random()
    if kind < 0.01:
        return rng.choice(RAW), {"raw": "content-length"}
    if kind < 0.03:
        return rng.choice([b"{", b"\xff\xfe", b"[]", b'{"points": 1}', b"null"]), AUTH
    if kind < 0.05:
        return json.dumps({"points": [item]}).encode(), {"Authorization": rng.choice(["", "Bearer", "Basic x", "Bearer nope"])}
    if kind < 0.10:  # an invented result: times divided, throughput multiplied
        _scale_rate(item, rng.choice([10.0, 1e3, 1e6]))
    elif kind < 0.25:
        ATTACKS[rng.choice(sorted(ATTACKS))](item, rng)
    else:
        path = rng.choice(PATHS)
        target = item
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = hostile_value(rng)
    return json.dumps({"points": [item]}, allow_nan=True).encode(), AUTH


def names_a_field(answer: dict) -> bool:
    text = " ".join([str(answer.get("error", ""))] + [str(p) for p in answer.get("problems", [])])
    return "/" in text or ":" in text


def send(service: Service, body: bytes, headers: dict) -> tuple[int, dict, float]:
    if "raw" not in headers:
        return service.post(body, headers)
    with socket.create_connection(("127.0.0.1", service.port), timeout=60) as connection:
        connection.sendall(b"POST /api/submissions HTTP/1.1\r\nHost: x\r\nContent-Length: " + body + b"\r\n\r\n")
        raw = b""
        while chunk := connection.recv(65536):
            raw += chunk
    head, _, text = raw.partition(b"\r\n\r\n")
    try:
        return int(head.split()[1]), json.loads(text), 0.0
    except (ValueError, IndexError):
        return 400, {"raw": raw[:200].decode(errors="replace")}, 0.0  # not JSON: counted as not naming its field


def main(count: int, seed: int) -> int:
    rng = random.Random(seed)
    bodies = [request(n, rng) for n in range(count)]
    service = Service(options=("--burst", "1000000"))  # the rate limit has a test of its own; here every body counts
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda b: send(service, *b), bodies))
    finally:
        service.stop()
    codes = Counter(status for status, _, _ in results)
    unnamed = sum(1 for status, answer, _ in results if 400 <= status < 500 and not names_a_field(answer))
    engine = sa.create_engine(f"sqlite:///{service.data / 'service.db'}")
    with engine.connect() as db:
        bodies_stored = [json.loads(row[0]) for row in db.execute(sa.text("select body from points"))]
    invalid = sum(1 for item in bodies_stored if check_point(item, "stored"))
    server_errors = sum(n for status, n in codes.items() if status >= 500)
    print(f"{count} hostile requests (seed {seed}): status codes {dict(sorted(codes.items()))}")
    print(f"5xx: {server_errors}; 4xx not naming a field: {unnamed}; points stored: {len(bodies_stored)}, "
          f"invalid among them: {invalid}; data: {service.data}")
    return 1 if server_errors or invalid or unnamed else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000, int(sys.argv[2]) if len(sys.argv) > 2 else 0))
