#!/usr/bin/env python3
"""Benchmark: webhook intake throughput and latency against a running node, and in the same
run the ceiling of the same durable transaction done by `pgbench` on the same PostgreSQL.

    .venv/bin/python bench/ingest.py [--duration 10] [--concurrency 8,32,128] [--rate 500]

It starts its own PostgreSQL (fsync on, synchronous_commit on: every acknowledged delivery
is durable), one RunnerHub node (`runnerhub server`, control loops running), and drives the
node with signed `workflow_job` deliveries from a small raw-socket HTTP/1.1 client (cheap,
so the load generator takes little of the CPU the node and PostgreSQL need). Each job gets
its queued, in_progress and completed deliveries, so queued jobs do not pile up.

Printed: deliveries/s and p50/p99 latency per concurrency (closed loop), p50/p99 at a fixed
rate (open loop, latency measured from the scheduled send time so a stall is not hidden),
pgbench's transactions/s for the same transaction, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from runnerhub.dev.cluster.local import Service
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.postgres import LocalPostgres
from runnerhub.dev.waiting import wait_until_sync
from runnerhub.intake.signature import sign
from runnerhub.store.migrate import migrate

SECRET = secrets.token_hex(16)
LABELS = ["self-hosted", "linux", "x64"]


def payload(job_id: int, action: str) -> bytes:
    """A workflow_job delivery of GitHub's shape and size (about 1.5 KB)."""
    job = {
        "id": job_id,
        "run_id": job_id // 4,
        "run_attempt": 1,
        "status": action,
        "conclusion": "success" if action == "completed" else None,
        "name": "build (ubuntu, 3.11)",
        "workflow_name": "ci",
        "labels": LABELS,
        "head_branch": "main",
        "head_sha": "8d2f6c4b1f0e9a7d3c5b2a1908f7e6d5c4b3a291",
        "url": f"https://api.github.com/repos/acme/web/actions/jobs/{job_id}",
        "html_url": f"https://github.com/acme/web/actions/runs/{job_id // 4}/job/{job_id}",
        "runner_name": "rh-bench" if action != "queued" else None,
        "runner_id": 1 if action != "queued" else None,
        "runner_group_id": 1,
        "runner_group_name": "Default",
        "created_at": "2026-11-27T04:00:00Z",
        "started_at": "2026-11-27T04:00:02Z",
        "completed_at": "2026-11-27T04:01:00Z" if action == "completed" else None,
        "steps": [],
    }
    body = {
        "action": action,
        "workflow_job": job,
        "repository": {
            "id": 42,
            "name": "web",
            "full_name": "acme/web",
            "private": True,
            "owner": {"login": "acme", "id": 7, "type": "Organization"},
            "html_url": "https://github.com/acme/web",
        },
        "organization": {"login": "acme", "id": 7},
        "sender": {"login": "octocat", "id": 1, "type": "User"},
    }
    return json.dumps(body).encode()


def request(host: str, port: int, job_id: int, action: str) -> bytes:
    body = payload(job_id, action)
    head = (
        f"POST /webhooks/github HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nUser-Agent: GitHub-Hookshot/bench\r\n"
        f"X-GitHub-Event: workflow_job\r\nX-GitHub-Delivery: {uuid.uuid4()}\r\n"
        f"X-GitHub-Hook-ID: 1\r\nX-Hub-Signature-256: {sign(SECRET.encode(), body)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def requests(host: str, port: int, start_job: int) -> Iterator[bytes]:
    job = start_job
    while True:
        for action in ("queued", "in_progress", "completed"):
            yield request(host, port, job, action)
        job += 1


_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


class Conn:
    """One keep-alive HTTP/1.1 connection: send a request, read the whole response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        return cls(*await asyncio.open_connection(host, port))

    async def send(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        m = _LENGTH.search(head)
        if m:
            await self.reader.readexactly(int(m.group(1)))
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class Result:
    label: str
    sent: int
    failed: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        return statistics.quantiles(self.latencies, n=1000)[int(p * 10) - 1] * 1000

    def line(self) -> str:
        return (
            f"{self.label:<22} {self.rate:8.0f} deliveries/s   p50 {self.pct(50):6.1f} ms"
            f"   p99 {self.pct(99):6.1f} ms   non-2xx {self.failed}"
        )


async def closed_loop(
    host: str, port: int, gen: Iterator[bytes], concurrency: int, duration: float
) -> Result:
    conns = [await Conn.open(host, port) for _ in range(concurrency)]
    latencies: list[float] = []
    failed = 0
    stop_at = time.perf_counter() + duration

    async def worker(c: Conn) -> None:
        nonlocal failed
        while time.perf_counter() < stop_at:
            raw = next(gen)
            t = time.perf_counter()
            status = await c.send(raw)
            latencies.append(time.perf_counter() - t)
            failed += not 200 <= status < 300

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    return Result(f"concurrency {concurrency}", len(latencies), failed, elapsed, latencies)


async def open_loop(
    host: str, port: int, gen: Iterator[bytes], rate: float, duration: float, connections: int = 64
) -> Result:
    """Send at a fixed rate; latency counts from when each request was due."""
    idle: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await Conn.open(host, port))
    latencies: list[float] = []
    failed = 0
    total = int(rate * duration)
    start = time.perf_counter() + 0.1

    async def one(i: int, raw: bytes) -> None:
        nonlocal failed
        due = start + i / rate
        c = await idle.get()
        status = await c.send(raw)
        latencies.append(time.perf_counter() - due)
        failed += not 200 <= status < 300
        idle.put_nowait(c)

    prepared = [next(gen) for _ in range(total)]  # signing is not part of what is measured
    start = time.perf_counter() + 0.1
    tasks = []
    for i, raw in enumerate(prepared):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, raw)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait().close()
    return Result(f"fixed {rate:.0f}/s", len(latencies), failed, elapsed, latencies)


PGBENCH_SCRIPT = """\
\\set n random(1, 2000000000)
BEGIN;
SELECT pg_advisory_xact_lock(:n);
SELECT 1 FROM webhook_deliveries WHERE delivery_guid = 'pgbench-' || :client_id || '-' || :n;
SELECT * FROM jobs WHERE id = :n FOR UPDATE;
INSERT INTO jobs (id, run_id, run_attempt, repository, name, workflow_name, labels, state,
  pool, hosted, github_created_at, queued_at, last_source)
  VALUES (:n, :n, 1, 'acme/web', 'build', 'ci', ARRAY['self-hosted','linux','x64'],
  'queued', 'linux', false, now(), now(), 'webhook') ON CONFLICT (id) DO NOTHING;
SELECT pg_notify('runnerhub_jobs', :n::text);
INSERT INTO events (node, kind, subject, detail) VALUES ('pgbench', 'job.created',
  'job:' || :n, '{"outcome": "created", "state": "queued", "source": "webhook"}');
INSERT INTO webhook_deliveries (delivery_guid, event, action, hook_id, received_by, payload,
  outcome, job_id) VALUES ('pgbench-' || :client_id || '-' || :n, 'workflow_job', 'queued',
  1, 'pgbench', $payload$PAYLOAD$payload$::jsonb, 'created', :n) ON CONFLICT DO NOTHING;
COMMIT;
"""


def pgbench(pg: LocalPostgres, dbname: str, clients: int, duration: int, tmp: Path) -> float:
    script = tmp / "intake.sql"
    script.write_text(PGBENCH_SCRIPT.replace("PAYLOAD", payload(1, "queued").decode()))
    os.chmod(tmp, 0o755)
    os.chmod(script, 0o644)
    cmd = [
        str(pg.bin_dir / "pgbench"),
        "-n",
        "-f",
        str(script),
        "-c",
        str(clients),
        "-j",
        "2",
        "-T",
        str(duration),
        "-h",
        "127.0.0.1",
        "-p",
        str(pg.port),
        "-U",
        pg.user,
        dbname,
    ]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PGPASSWORD": pg.password},
    )
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{out.stderr[-2000:]}")
    m = re.search(r"tps = ([\d.]+)", out.stdout)
    if not m:
        raise RuntimeError(f"pgbench printed no tps:\n{out.stdout}\n{out.stderr}")
    return float(m.group(1))


def start_node(
    pg: LocalPostgres,
    dsn: str,
    tmp: Path,
    port: int,
    pool_size: int,
    pools: bool = True,
    writers: int = 1,
) -> Service:
    config = {
        "node": {"id": "bench", "host": "127.0.0.1", "port": port, "state_dir": str(tmp / "node")},
        "database": {"dsn": dsn, "pool_min_size": pool_size, "pool_max_size": pool_size},
        "webhook": {"secrets": [SECRET], "batch_writers": writers},
        "github": {
            "api_url": "http://127.0.0.1:9",
            "auth": {"token": "ghp_bench"},
            "organizations": ["acme"],
        },
        "pools": [
            {"name": "linux", "labels": LABELS, "max_runners": 1, "process": {"command": ["true"]}}
        ],
        "reconciler": {"interval_s": 3600},
        "log": {"level": "warning"},
    }
    path = tmp / "runnerhub.yaml"
    path.write_text(yaml.safe_dump(config))
    node = Service(
        "node",
        [sys.executable, "-m", "runnerhub.cli.main", "server", "--config", str(path)],
        tmp / "node.log",
    )
    node.start()
    wait_until_sync(lambda: _ready(port, node), 60, "the node", interval_s=0.1)
    return node


def _ready(port: int, node: Service) -> bool:
    if not node.alive():
        raise RuntimeError(f"node exited:\n{node.tail()}")
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def drive(port: int, concurrencies: list[int], rate: float, duration: float) -> list[Result]:
    gen = requests("127.0.0.1", port, start_job=10_000_000)
    await closed_loop("127.0.0.1", port, gen, 8, 2.0)  # warm-up: connections, caches
    results = [await closed_loop("127.0.0.1", port, gen, c, duration) for c in concurrencies]
    results.append(await open_loop("127.0.0.1", port, gen, rate, duration))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    ap.add_argument("--concurrency", default="8,32,128")
    ap.add_argument("--rate", type=float, default=500.0, help="fixed rate for the p99 check")
    ap.add_argument("--pool-size", type=int, default=16, help="node's database connections")
    ap.add_argument("--pgbench-clients", type=int, default=32)
    ap.add_argument("--writers", type=int, default=1, help="the node's intake batch writers")
    ap.add_argument(
        "--no-pools",
        action="store_true",
        help="no pools: jobs match nothing, so the scheduler stays idle",
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="rh-bench-") as d:
        tmp = Path(d)
        os.chmod(tmp, 0o755)
        pg = LocalPostgres(tmp / "pg")
        pg.init()
        pg.start()
        node: Service | None = None
        try:
            pg.wait_ready()
            dsn = pg.create_database("runnerhub")
            asyncio.run(migrate(dsn))
            port = free_port()
            node = start_node(
                pg, dsn, tmp, port, args.pool_size, pools=not args.no_pools, writers=args.writers
            )
            print(f"node on :{port}, PostgreSQL on :{pg.port} (fsync on, synchronous_commit on)")
            results = asyncio.run(drive(port, concurrencies, args.rate, args.duration))
            node.stop()
            node = None
            pg.create_database("pgb", template="runnerhub")
            tps = pgbench(pg, "pgb", args.pgbench_clients, int(args.duration), tmp)
        finally:
            if node is not None:
                node.stop()
            pg.destroy()

    best = max((r for r in results if r.label.startswith("concurrency")), key=lambda r: r.rate)
    fixed = results[-1]
    print()
    for r in results:
        print(r.line())
    print(f"{'pgbench (same tx)':<22} {tps:8.0f} transactions/s ({args.pgbench_clients} clients)")
    print()
    print(
        f"throughput: {best.rate:.0f} deliveries/s ({best.label}); "
        f"ratio to pgbench ceiling: {best.rate / tps:.2f} (aim >= 0.5); "
        f"aim >= 2000/s: {'met' if best.rate >= 2000 else 'NOT met'}"
    )
    print(
        f"latency at {args.rate:.0f}/s: p99 {fixed.pct(99):.1f} ms "
        f"(aim < 50 ms: {'met' if fixed.pct(99) < 50 else 'NOT met'})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "results": [
                        {
                            "label": r.label,
                            "rate": r.rate,
                            "p50_ms": r.pct(50),
                            "p99_ms": r.pct(99),
                            "failed": r.failed,
                        }
                        for r in results
                    ],
                    "pgbench_tps": tps,
                    "ratio": best.rate / tps,
                },
                indent=2,
            )
        )
    failed = sum(r.failed for r in results)
    if failed:
        print(f"{failed} deliveries were not answered 2xx")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
