"""Latency of the result service under load, on this machine: 50 concurrent one-point submitters, single-point
latency as the history grows, and the dashboard's load time at the end.

Usage: python benchmarks/load_service.py [HISTORY]   (default 2,000 submissions of history; the goal is checked up
to 10,000: python benchmarks/load_service.py 10000)
Goals on 2 cores: p99 at most 1 s for 50 concurrent submitters and 2 s for 200, each with its own token;
with 2,000 half-open connections open, a GET within 1 s; single-point latency flat as history grows; GET / at
most 0.5 s.
"""
from __future__ import annotations

import json
import socket
import statistics
import sys
import threading
import time

from service_common import Service, auth, point

SUBMITTERS = 200  # tokens: the rate limit is per submitter, and a crowd has many


def concurrent_submitters(service: Service, n: int = 50, first_tag: int = 0) -> list[float]:
    """n submitters, each with its own token, all at once."""
    bodies = [json.dumps({"points": [point(first_tag + i)]}).encode() for i in range(n)]
    latencies, go = [0.0] * n, threading.Event()

    def submit(i: int) -> None:
        go.wait()
        status, answer, seconds = service.post(bodies[i], auth(i))
        assert status == 200, (status, answer)
        latencies[i] = seconds

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    print(f"{n} concurrent one-point submitters: p50 {percentile(latencies, 50):.2f} s, "
          f"p99 {percentile(latencies, 99):.2f} s, {n / wall:.1f} requests/s")
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def history(service: Service, total: int, first_tag: int) -> None:
    """Sequential one-point submissions; the median latency of each stretch of history; then how long git took
    to publish the last one (the service answers once a submission is stored)."""
    stretch, done, window = max(100, total // 10), 0, []
    while done < total:
        body = json.dumps({"points": [point(first_tag + done)]}).encode()
        status, answer, seconds = service.post(body, auth(done % SUBMITTERS))  # a crowd: each within its rate
        assert status == 200, (status, answer)
        last = answer["submission"]
        window.append(seconds)
        done += 1
        if done % stretch == 0 or done == total:
            print(f"  after {done:>6} submissions: single-point latency median {statistics.median(window):.3f} s")
            window = []
    start = time.perf_counter()
    while not service.published(last):
        time.sleep(0.5)
    print(f"  the last submission was published {time.perf_counter() - start:.1f} s after it was answered")


def half_open(service: Service, connections: int = 2000, gets: int = 20) -> None:
    """`connections` connections that send part of a request's headers and then nothing (slow loris), and GET
    /api/leaderboard while they are open (the service closes them after its header timeout, 10 s by default)."""
    idle = []
    for _ in range(connections):
        connection = socket.create_connection(("127.0.0.1", service.port))
        connection.sendall(b"POST /api/submissions HTTP/1.1\r\nHost: x\r\n")
        idle.append(connection)
    try:
        first = service.get("/api/leaderboard")[1]  # queued behind the connections the server is still accepting
        time.sleep(1.0)  # all of them accepted and waiting for the rest of their headers
        times = [service.get("/api/leaderboard")[1] for _ in range(gets)]
        print(f"GET /api/leaderboard with {connections} half-open connections open: median "
              f"{statistics.median(times):.3f} s, max {max(times):.3f} s (the first, sent while the server was still "
              f"accepting them: {first:.3f} s)")
    finally:
        for connection in idle:
            connection.close()


def main(total: int) -> None:
    service = Service(submitters=SUBMITTERS)
    try:
        print("warm-up (the first requests after start, reported, not part of the goal):", end=" ")
        concurrent_submitters(service, 10, first_tag=5 * 10**7)
        concurrent_submitters(service)
        concurrent_submitters(service, 200, first_tag=10**7)
        half_open(service)
        print(f"history of {total} submissions:")
        history(service, total, 1000)
        concurrent_submitters(service, first_tag=10**6)
        service.get("/")  # starts the drawing of the latest results
        time.sleep(5)
        loads = [service.get("/")[1] for _ in range(20)]
        print(f"GET / with {total + 100} points: median {statistics.median(loads):.3f} s, max {max(loads):.3f} s")
    finally:
        service.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
