#!/usr/bin/env python3
"""Benchmark: how fast a runner starts, in a container next to a process, in the same run.

    .venv/bin/python bench/runner_start.py [--runners 30] [--concurrency 8]

Each backend starts `--runners` runners one after another (latency: `provision` called →
it returns with the runner's process running — for the container backend, create and start
through Podman's Engine API, runc having started the container's process; for the process
backend, fork and exec), then as many again `--concurrency` at a time (throughput: starts
per second). The runner is `sleep` in both (what a runner does once up is not the
backend's cost). The process backend is the baseline: the ratio says what a container's
isolation costs.

Podman's API service runs with storage of its own (runc), the image made from Debian's
packages (`make runner-image`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from runnerhub.backends.base import RunnerBackend, RunnerSpec
from runnerhub.backends.container import ContainerBackend
from runnerhub.backends.process import ProcessBackend
from runnerhub.config import ContainerBackendSettings, ProcessBackendSettings
from runnerhub.dev.cluster.podman import RUNNER_IMAGE, LocalPodman, build_runner_rootfs

ROOTFS = Path(__file__).resolve().parents[1] / "build" / "runner-rootfs.tar"


def spec(i: int, pool: str) -> RunnerSpec:
    return RunnerSpec(f"rh-{i}-1", pool, ("self-hosted",), i, "not-a-jit-config")


async def measure(
    backend: RunnerBackend, pool: str, runners: int, concurrency: int, first: int
) -> tuple[list[float], float]:
    latencies = []
    for i in range(first, first + runners):
        began = time.perf_counter()
        await backend.provision(spec(i, pool))  # returns once the runner's process runs
        latencies.append(time.perf_counter() - began)
    for r in await backend.list():
        await backend.terminate(r.name)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await backend.provision(spec(i, pool))

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(first + runners, first + 2 * runners)))
    rate = runners / (time.perf_counter() - began)
    for r in await backend.list():
        await backend.terminate(r.name)
    return latencies, rate


def report(name: str, latencies: list[float], rate: float) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100)
    row = {"p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "starts_per_s": rate}
    print(
        f"{name:9} start latency p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
        f"throughput {rate:6.1f} starts/s"
    )
    return row


async def main(runners: int, concurrency: int) -> int:
    with tempfile.TemporaryDirectory(prefix="rh-bench-start-") as tmp:
        base = Path(tmp)
        rootfs = ROOTFS if ROOTFS.exists() else build_runner_rootfs(base / "rootfs.tar")
        engine = LocalPodman(base / "podman")
        engine.start()
        try:
            engine.build_runner_image(rootfs)
            process = ProcessBackend(
                base / "process",
                {"p": ProcessBackendSettings(command=["sleep", "300"], stop_grace_s=1)},
            )
            container = ContainerBackend(
                {
                    "c": ContainerBackendSettings(
                        image=RUNNER_IMAGE,
                        endpoint=engine.endpoint,
                        network="host",
                        command=["sleep", "300"],
                        stop_timeout_s=1,
                    )
                }
            )
            try:
                p = report("process", *await measure(process, "p", runners, concurrency, 1000))
                c = report("container", *await measure(container, "c", runners, concurrency, 2000))
            finally:
                await container.close()
        finally:
            engine.destroy()
    throughput = c["starts_per_s"] / p["starts_per_s"]
    print(
        f"container / process: start latency p50 x{c['p50_ms'] / p['p50_ms']:.1f}, "
        f"p99 x{c['p99_ms'] / p['p99_ms']:.1f}; throughput x{throughput:.2f}"
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runners", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.runners, args.concurrency)))
