"""Latency of the result service under load, on this machine: 50 concurrent one-point submitters, single-point
latency as the history grows, and the dashboard's load time at the end.

Usage: python benchmarks/load_service.py [HISTORY]   (default 2,000 submissions of history; the goal is checked up
to 10,000: python benchmarks/load_service.py 10000)
Goals on 2 cores: p99 at most 2 s for 50 concurrent submitters; single-point latency flat as history grows;
GET / at most 0.5 s.
"""
from __future__ import annotations

import json
import statistics
import sys
import threading
import time

from service_common import Service, point


def concurrent_submitters(service: Service, n: int = 50, first_tag: int = 0) -> list[float]:
    bodies = [json.dumps({"points": [point(first_tag + i)]}).encode() for i in range(n)]
    latencies, go = [0.0] * n, threading.Event()

    def submit(i: int) -> None:
        go.wait()
        status, answer, seconds = service.post(bodies[i])
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
        status, answer, seconds = service.post(json.dumps({"points": [point(first_tag + done)]}).encode())
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


def main(total: int) -> None:
    service = Service()
    try:
        concurrent_submitters(service)
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
