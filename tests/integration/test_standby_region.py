"""A standby region: a Patroni standby cluster (region B, its own etcd) that streams from
region A's primary through a link the test can cut, and replays A's archive (repo2)
when it cannot; and a RunnerHub node of region B (`node.role: standby`) that serves reads
from it, refuses writes and webhooks, runs no control loops, and says how far behind
region A it is. Last, region A is lost and region B promoted (`runnerhub dr promote`):
GitHub's hook re-pointed, the jobs queued meanwhile each run once, and region A's leader,
back, fenced by its epoch."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from prometheus_client import REGISTRY
from psycopg.rows import dict_row

from runnerhub.config import Settings
from runnerhub.dev.cluster.etcd import LocalEtcd
from runnerhub.dev.cluster.local import Service
from runnerhub.dev.cluster.patroni import LocalPatroni
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.postgres import SERVICE_USER
from runnerhub.dev.cluster.region import StandbyRegion
from runnerhub.dev.waiting import wait_until
from runnerhub.dr.promote import PromotionRefused, promote
from runnerhub.ha.leadership import era_of
from runnerhub.node import Node
from runnerhub.paths import write_private
from runnerhub.store.migrate import migrate
from tests.conftest import make_settings
from tests.github_process import LINUX, GitHub, github_sim, node_config
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
    etcd_a: LocalEtcd
    etcd_b: LocalEtcd
    region_b: StandbyRegion


@pytest.fixture(scope="module")
async def regions(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Regions]:
    base = tmp_path_factory.mktemp("regions")
    etcd_a = LocalEtcd(base / "etcd-a", members=1)
    a = LocalPatroni(base / "a", [], members_count=2, backups=True)
    b: StandbyRegion | None = None
    try:
        await asyncio.to_thread(etcd_a.start)
        a.etcd_hosts = etcd_a.endpoints
        await asyncio.to_thread(a.start)
        dsn_a = await asyncio.to_thread(a.create_database, "runnerhub")
        await migrate(dsn_a)
        primary = a.primary()
        assert primary is not None
        link = Proxy(primary.pg_port)
        port = await link.start()
        # Region B: its own etcd, a standby cluster streaming through the link and, when it
        # cannot, replaying what region A archived into repo2 (its own pgBackRest).
        b = StandbyRegion(base / "b", a, port, members=1)
        await asyncio.to_thread(b.start)
        yield Regions(a, b.pg, link, dsn_a, etcd_a, b.etcd, b)
    finally:
        if b is not None:
            await asyncio.to_thread(b.pg.destroy)
            await asyncio.to_thread(b.etcd.destroy)
        await asyncio.to_thread(a.destroy)
        await asyncio.to_thread(etcd_a.destroy)


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


# -- region A lost, region B promoted ------------------------------------------------------


@pytest.fixture(scope="module")
def github(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHub]:
    # Region A's webhook URL: nobody answers there in this test.
    region_a = f"http://127.0.0.1:{free_port()}/webhooks/github"
    with github_sim(tmp_path_factory.mktemp("github"), region_a) as gh:
        yield gh


def region_node(
    region: tuple[LocalPatroni, LocalEtcd], gh: GitHub, tmp: Path, name: str, dsn: str, **node: Any
) -> dict[str, Any]:
    """A node of a region: elected in its etcd, watching its Patroni members."""
    return {
        **node_config(name, dsn, gh, tmp, **node),
        "ha": {"etcd_endpoints": region[1].endpoints, "lease_ttl_s": 2},
        "health": {"patroni_urls": [m.api_url for m in region[0].members]},
    }


async def recorded_epoch(dsn: str) -> int | None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT epoch FROM leadership WHERE id = 1")
        row = await cur.fetchone()
        return None if row is None else int(row[0])


async def test_region_b_promoted_takes_the_jobs_and_region_a_back_is_fenced(
    regions: Regions, github: GitHub, tmp_path: Path
) -> None:
    r, gh = regions, github
    await r.link.start(r.link.port)  # region B streams again
    dsn_b = r.b.dsn("runnerhub")
    # Region A leads, in era 0: its epoch reaches region B.
    a_cfg = region_node((r.a, r.etcd_a), gh, tmp_path, "node-a1", r.dsn_a)
    node_a = Node(Settings(**a_cfg))
    await node_a.start()
    try:
        assert node_a.elector is not None
        epoch_a = await wait_until(
            lambda: node_a.elector and node_a.elector.epoch, 20, "A's leader"
        )
        await wait_until(lambda: recorded_epoch(dsn_b), 30, "A's epoch to reach B", interval_s=0.1)
        assert await recorded_epoch(dsn_b) == epoch_a and era_of(epoch_a) == 0

        # Refused while region A's primary takes writes: nothing changes.
        b_cfg = region_node((r.b, r.etcd_b), gh, tmp_path, "node-b1", dsn_b, role="standby")
        webhooks_b = f"http://127.0.0.1:{free_port()}/webhooks/github"
        b_cfg["node"]["port"] = int(webhooks_b.split(":")[2].split("/")[0])
        with pytest.raises(PromotionRefused, match="still accepts writes"):
            await promote(Settings(**b_cfg), webhooks_b)
        assert (await asyncio.to_thread(patroni_config, r.b)).get("standby_cluster")
    finally:
        await node_a.stop()

    # Region A is lost: every PostgreSQL of it killed; jobs keep coming, undelivered.
    for m in r.a.members:
        await asyncio.to_thread(r.a.kill_member, m, signal.SIGKILL)
    ids = [
        j["id"]
        for j in gh.call(
            "POST",
            "/_sim/jobs",
            json={"repository": "acme/web", "labels": LINUX, "count": 3, "duration_s": 0.2},
        )["jobs"]
    ]

    report = await promote(Settings(**b_cfg), webhooks_b)
    assert report.previous_epoch == epoch_a and report.era == 1
    assert report.old_primary_writable is False
    assert report.hooks == [{"hook": "org:acme/1", "url": webhooks_b}]
    assert gh.call("GET", "/orgs/acme/hooks/1/config")["url"] == webhooks_b
    assert "standby_cluster" not in await asyncio.to_thread(patroni_config, r.b)

    # Region B's node, now active: it takes office above every epoch of region A and
    # catches up with GitHub; each job runs once. Its leader backs region B up, with region
    # B's own pgBackRest, into repo2 (region B's storage), which region B now archives into.
    b_cfg["node"]["role"] = "active"
    b_cfg["backup"] = region_b_backups(r.region_b)
    config = tmp_path / "node-b1.yaml"
    write_private(config, yaml.safe_dump(b_cfg))
    node_b = Service(
        "node-b1",
        [sys.executable, "-m", "runnerhub.cli.main", "server", "--config", str(config)],
        tmp_path / "node-b1.log",
    )
    node_b.start()
    try:
        epoch_b = await wait_until(
            lambda: _leader_epoch_above(dsn_b, epoch_a), 30, "region B's leader", interval_s=0.2
        )
        assert era_of(epoch_b) == 1

        def completed() -> bool:
            jobs = {j["id"]: j for j in gh.call("GET", "/_sim/jobs")["jobs"]}
            return all(jobs[i]["status"] == "completed" for i in ids)

        await wait_until(lambda: asyncio.to_thread(completed), 60, "the jobs queued meanwhile")
        jobs = {j["id"]: j for j in gh.call("GET", "/_sim/jobs")["jobs"]}
        assert all(len(jobs[i]["executions"]) == 1 for i in ids), jobs
        backup = await wait_until(
            lambda: good_backup_of(dsn_b, 2), 90, "region B's backup", interval_s=0.5
        )
        assert backup["ok"] and backup["kind"] == "full", backup
        archiver = await wait_until(lambda: archived_on(dsn_b), 30, "region B's archive")
        assert int(archiver[:8], 16) >= 2, archiver  # its own timeline, after the promotion

        # Region A's leader comes back and reaches region B's database: elected in region
        # A's etcd (era 0) it cannot take office, and writes nothing.
        stale = {**a_cfg, "database": {**a_cfg["database"], "dsn": dsn_b}}
        refusals = _step_downs("could not take office")
        back = Node(Settings(**stale))
        await back.start()
        try:
            await wait_until(
                lambda: _step_downs("could not take office") > refusals, 30, "A's refusal"
            )
            assert all(loop.cycles == 0 for loop in back.loops)
            assert await recorded_epoch(dsn_b) == epoch_b
        finally:
            await back.stop()
    finally:
        node_b.stop()


def region_b_backups(region: StandbyRegion) -> dict[str, Any]:
    """Region B's nodes' backup section: a full backup into repo2 at once, nothing else."""
    backup = region.pgbackrest.node_settings(SERVICE_USER if os.geteuid() == 0 else None)
    never = dict.fromkeys(("diff", "incr", "verify", "restore_test"), None)
    schedule = {"full_every_s": 3600.0, **{f"{k}_every_s": v for k, v in never.items()}}
    backup["repos"] = [{**repo, **schedule} for repo in backup["repos"]]
    # retry_s: a failed first attempt is tried again in seconds, as it would be in minutes
    # in production (seen once in six full runs: pgBackRest exited at once, saying nothing).
    return {**backup, "interval_s": 1, "retry_s": 2}


async def backup_of(dsn: str, repo: int) -> dict[str, Any] | None:
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn:
        cur = await conn.execute(
            "SELECT kind, ok, error FROM backups WHERE repo = %s ORDER BY id DESC LIMIT 1",
            (repo,),
        )
        return await cur.fetchone()


async def good_backup_of(dsn: str, repo: int) -> dict[str, Any] | None:
    """The newest backup of `repo` once it succeeded; a failed one is printed, and waited
    past (the leader tries again after retry_s)."""
    newest = await backup_of(dsn, repo)
    if newest is not None and not newest["ok"]:
        print(f"repo{repo} backup failed, to be retried: {newest['error']}")
        return None
    return newest


async def archived_on(dsn: str) -> str | None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT last_archived_wal FROM pg_stat_archiver")
        row = await cur.fetchone()
        return row[0] if row else None


def patroni_config(cluster: LocalPatroni) -> dict[str, Any]:
    return dict(httpx.get(f"{cluster.members[0].api_url}/config", timeout=5).json())


async def _leader_epoch_above(dsn: str, epoch: int) -> int | None:
    current = await recorded_epoch(dsn)
    return current if current is not None and current > epoch else None


def _step_downs(reason: str) -> float:
    return REGISTRY.get_sample_value("runnerhub_leader_step_downs_total", {"reason": reason}) or 0
