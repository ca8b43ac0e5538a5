"""A standby region: a Patroni standby cluster (region B, its own etcd) that streams from
region A's primary through a link the test can cut, and replays A's archive (repo2)
when it cannot; and a RunnerHub node of region B (`node.role: standby`) that serves reads
from it, refuses writes and webhooks, runs no control loops, and says how far behind
region A it is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY

from runnerhub.config import Settings
from runnerhub.dev.cluster.etcd import LocalEtcd
from runnerhub.dev.cluster.patroni import LocalPatroni, StandbyOf
from runnerhub.dev.waiting import wait_until
from runnerhub.node import Node
from runnerhub.store.migrate import migrate
from tests.conftest import make_settings
from tests.integration.test_step_down import Proxy
from tests.payloads import signed, workflow_job

READ = {"Authorization": "Bearer read-token-0123456789"}
ADMIN = {"Authorization": "Bearer admin-token-0123456789"}


@dataclass
class Regions:
    a: LocalPatroni
    b: LocalPatroni
    link: Proxy  # B's replication connection to A's primary runs through it
    dsn_a: str


@pytest.fixture(scope="module")
async def regions(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Regions]:
    base = tmp_path_factory.mktemp("regions")
    etcd_a, etcd_b = LocalEtcd(base / "etcd-a", members=1), LocalEtcd(base / "etcd-b", members=1)
    a = LocalPatroni(base / "a", [], members_count=2, backups=True)
    b: LocalPatroni | None = None
    try:
        for e in (etcd_a, etcd_b):
            await asyncio.to_thread(e.start)
        a.etcd_hosts = etcd_a.endpoints
        await asyncio.to_thread(a.start)
        dsn_a = await asyncio.to_thread(a.create_database, "runnerhub")
        await migrate(dsn_a)
        primary = a.primary()
        assert primary is not None and a.pgbackrest is not None
        link = Proxy(primary.pg_port)
        port = await link.start()
        # When it cannot stream, region B replays what region A archived into repo2.
        pgbr = a.pgbackrest
        archive = (
            f"{pgbr.run_command_prefix()} --repo=2 --pg1-path=$PWD --no-archive-async "
            'archive-get %f "%p"'
        )
        b = LocalPatroni(
            base / "b",
            etcd_b.endpoints,
            members_count=1,
            scope="runnerhub-b",
            namespace="/runnerhub-b/",
            synchronous_mode=False,
            standby_of=StandbyOf("127.0.0.1", port, archive),
            standby_credentials=a.credentials,
        )
        await asyncio.to_thread(b.start)
        yield Regions(a, b, link, dsn_a)
    finally:
        if b is not None:
            await asyncio.to_thread(b.destroy)
        await asyncio.to_thread(a.destroy)
        for e in (etcd_a, etcd_b):
            await asyncio.to_thread(e.destroy)


def standby_settings(r: Regions, tmp: Path) -> Settings:
    return make_settings(
        r.b.dsn("runnerhub"),
        node={"id": "node-b1", "role": "standby", "state_dir": str(tmp / "node-b1")},
        health={"interval_s": 0.2, "timeout_s": 0.5, "github_interval_s": 30},
        database={
            "dsn": r.b.dsn("runnerhub"),
            "pool_min_size": 1,
            "pool_max_size": 4,
            "replication_check_s": 0.2,
            "standby_lag_alert_s": 30,
        },
    )


@pytest.fixture
async def node_b(regions: Regions, tmp_path: Path) -> AsyncIterator[Node]:
    node = Node(standby_settings(regions, tmp_path))
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def write_job_on_a(r: Regions, job_id: int) -> None:
    async with await psycopg.AsyncConnection.connect(r.dsn_a, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO jobs (id, run_id, repository, labels, state, last_source) "
            "VALUES (%s, %s, 'acme/app', '{self-hosted}', 'queued', 'webhook')",
            (job_id, job_id),
        )


def check(node: Node, name: str) -> Callable[[], Any]:
    def read() -> Any:
        r = node.health.result(name)
        return r if r is not None and r.status == "ok" else None

    return read


async def test_a_standby_node_serves_reads_refuses_the_rest_and_reports_its_lag(
    regions: Regions, node_b: Node
) -> None:
    await write_job_on_a(regions, 9001)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node_b.app), base_url="http://b"
    ) as c:

        async def replicated() -> bool:
            return (await c.get("/api/v1/jobs/9001", headers=READ)).status_code == 200

        await wait_until(replicated, 30, "job 9001 to reach region B")
        assert (await c.get("/readyz")).json() == {"status": "standby"}
        assert (await c.get("/readyz")).status_code == 503
        body, headers = signed(workflow_job(9002))
        webhook = await c.post("/webhooks/github", content=body, headers=headers)
        assert (webhook.status_code, webhook.json()["outcome"]) == (503, "standby")
        for method, path in (
            ("POST", "/api/v1/nodes/node-1/drain"),
            ("POST", "/api/v1/leader/handoff"),
            ("POST", "/api/v1/reconcile"),
        ):
            refused = await c.request(method, path, headers=ADMIN)
            assert refused.status_code == 409 and "stands by" in refused.json()["detail"]
        lag = await wait_until(check(node_b, "standby_region"), 20, "the standby's lag")
        assert lag.detail["streaming"] is True and lag.detail["replay_lag_s"] < 30
        database = await wait_until(check(node_b, "database"), 20, "the read-only database")
        assert database.status == "ok"
        cluster = (await c.get("/api/v1/cluster", headers=READ)).json()
        assert cluster["region"]["role"] == "standby"
        assert cluster["region"]["standby"]["streaming"] is True
    assert REGISTRY.get_sample_value("runnerhub_standby_streaming") == 1
    assert not node_b.ctx.leadership.is_leader and node_b.elector is None
    assert all(loop.cycles == 0 for loop in node_b.loops)  # no control loop ran
    async with await psycopg.AsyncConnection.connect(regions.dsn_a, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM webhook_deliveries")
        assert (await cur.fetchone() or [None])[0] == 0  # nothing was stored anywhere


async def test_cut_off_from_region_a_the_standby_replays_its_archive_and_says_so(
    regions: Regions, node_b: Node
) -> None:
    await wait_until(check(node_b, "standby_region"), 20, "the standby streaming")
    await regions.link.cut()  # region B can no longer reach region A's primary
    await write_job_on_a(regions, 9101)
    async with await psycopg.AsyncConnection.connect(regions.dsn_a, autocommit=True) as conn:
        await conn.execute("SELECT pg_switch_wal()")  # archived at once, not in a minute

    async def replayed_from_the_archive() -> bool:
        async with await psycopg.AsyncConnection.connect(regions.b.dsn("runnerhub")) as conn:
            cur = await conn.execute("SELECT count(*) FROM jobs WHERE id = 9101")
            return (await cur.fetchone() or [0])[0] == 1

    await wait_until(replayed_from_the_archive, 90, "job 9101 to reach B through the archive")

    async def says_so() -> bool:
        r = node_b.health.result("standby_region")
        return r is not None and "not streaming" in (r.message or "")

    await wait_until(says_so, 30, "/health to say region B replays the archive only")
    assert REGISTRY.get_sample_value("runnerhub_standby_streaming") == 0
