#!/usr/bin/env python3
"""Benchmark: health endpoint latency, fresh and while a dependency hangs (I8).

    .venv/bin/python bench/health.py [--requests 300]

Starts the local HA cluster without the demo (3 etcd members, PostgreSQL, HAProxy, 3
RunnerHub nodes, the GitHub simulator) and asks one node `--requests` times each for
`/livez`, `/readyz` and `/health`, one request at a time: first with everything healthy,
then with PostgreSQL hung (SIGSTOP of the postmaster and every backend), every etcd member
hung, and the GitHub simulator hung, each resumed (SIGCONT) before the next. It prints
p50/p99/max per endpoint and phase, how long `/health` took to report the hung dependency
as failing, and the ratio of each p99 to `/livez`'s p99 in the healthy phase of the same
run (the baseline: an endpoint that does nothing).

Targets (issue 5): every answer under 1 s in every phase; `/readyz` and `/health` p99 under
20 ms from fresh results.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from runnerhub.dev.cluster import chaos
from runnerhub.dev.cluster.local import LocalCluster
from runnerhub.dev.waiting import wait_until_sync

ENDPOINTS = ("/livez", "/readyz", "/health")
BUDGET_MS = 1000.0
FRESH_P99_MS = 20.0


def measure(client: httpx.Client, path: str, n: int) -> list[float]:
    ms = []
    for _ in range(n):
        began = time.perf_counter()
        client.get(path)
        ms.append((time.perf_counter() - began) * 1000)
    return ms


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[98]


def failing_check(client: httpx.Client, check: str, failing: bool = True) -> bool:
    """Does /health report `check` failing (or, with failing=False, not failing)?"""
    try:
        body = client.get("/health").json()
    except (httpx.HTTPError, ValueError):
        return False
    return bool((body["checks"].get(check, {}).get("status") == "failing") == failing)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rh-bench-health-") as tmp:
        cluster = LocalCluster.for_faults(Path(tmp) / "state")
        cluster.start()
        try:
            node_url = cluster.node_urls["node-1"]
            pg_pids = lambda: chaos.postgres_tree(str(cluster.pg.data_dir))  # noqa: E731
            phases: list[tuple[str, str | None, Callable[[], list[int]]]] = [
                ("healthy", None, lambda: []),
                ("postgres hung", "database", pg_pids),
                (
                    "etcd hung",
                    "etcd",
                    lambda: [
                        p
                        for i in (1, 2, 3)
                        for p in chaos.LiveCluster.load(cluster.state_dir).resolve(f"etcd:{i}").pids
                    ],
                ),
                (
                    "github hung",
                    "github",
                    lambda: list(
                        chaos.LiveCluster.load(cluster.state_dir).resolve("github-sim").pids
                    ),
                ),
            ]
            results: dict[tuple[str, str], list[float]] = {}
            detection: dict[str, float] = {}
            with httpx.Client(base_url=node_url, timeout=5) as client:
                wait_until_sync(
                    lambda: client.get("/health").json()["status"] == "ok", 60, "a healthy node"
                )
                for phase, check, pids in phases:
                    stopped = pids()
                    began = time.monotonic()
                    for pid in stopped:
                        os.kill(pid, signal.SIGSTOP)
                    try:
                        if check is not None:
                            wait_until_sync(
                                functools.partial(failing_check, client, check),
                                30,
                                f"/health to report {check} failing",
                            )
                            detection[phase] = time.monotonic() - began
                        for path in ENDPOINTS:
                            results[(phase, path)] = measure(client, path, args.requests)
                    finally:
                        for pid in stopped:
                            os.kill(pid, signal.SIGCONT)
                    if check is not None:
                        wait_until_sync(
                            functools.partial(failing_check, client, check, False),
                            60,
                            f"{check} back",
                        )
        finally:
            cluster.stop()
            cluster.pg.destroy()

    base = p99(results[("healthy", "/livez")])
    header = ("phase", "endpoint", "p50 ms", "p99 ms", "max ms", "vs livez")
    print("\n{:<15} {:<9} {:>8} {:>8} {:>8} {:>7}".format(*header))
    worst = 0.0
    for (phase, path), ms in results.items():
        worst = max(worst, max(ms))
        print(
            f"{phase:<15} {path:<9} {statistics.median(ms):8.2f} {p99(ms):8.2f} "
            f"{max(ms):8.2f} {p99(ms) / base:7.2f}"
        )
    for phase, seconds in detection.items():
        print(f"{phase}: /health reported it failing after {seconds:.2f} s")
    fresh = max(p99(results[("healthy", p)]) for p in ("/readyz", "/health"))
    ok = worst < BUDGET_MS and fresh < FRESH_P99_MS
    print(
        f"\nslowest answer {worst:.1f} ms (budget {BUDGET_MS:.0f}); fresh /readyz,/health p99 "
        f"{fresh:.2f} ms (target {FRESH_P99_MS:.0f}); baseline /livez p99 {base:.2f} ms: "
        + ("within budget" if ok else "OVER BUDGET")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
