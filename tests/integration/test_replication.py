"""Replication monitoring and repair against a real Patroni pair (primary + synchronous
replica): the state RunnerHub reads from pg_stat_replication; a replica flagged once it
falls behind (its replay process frozen while the primary keeps writing); and a replica
that can no longer stream (the WAL it needs recycled while it was down), or whose
PostgreSQL no longer starts, reinitialised by the leader's remediation, which leaves a
healthy pair alone."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from runnerhub.dev.cluster import chaos
from runnerhub.dev.cluster.etcd import LocalEtcd
from runnerhub.dev.cluster.patroni import SUPERUSER, LocalPatroni
from runnerhub.dev.waiting import wait_until
from runnerhub.domain.replicas import FAILING_STATES
from runnerhub.node import Node
from runnerhub.store.db import connect
from runnerhub.store.replication import MonitoringHidden, read_status
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPatroni]:
    base = tmp_path_factory.mktemp("replication")
    etcd = LocalEtcd(base / "etcd", members=1)
    etcd.start()
    # Little WAL kept for a replica that is away, so that one can fall past it quickly.
    keep = {"wal_keep_size": "16MB", "max_slot_wal_keep_size": "32MB"}
    pg = LocalPatroni(base / "patroni", etcd.endpoints, members_count=2, parameters=keep)
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()
        etcd.destroy()


async def test_the_primary_reports_its_synchronous_replica(pair: LocalPatroni) -> None:
    conn = await connect(pair.dsn())
    try:
        status = await read_status(conn)
    finally:
        await conn.close()
    primary = pair.primary()
    assert primary is not None
    assert status.server == primary.address and not status.in_recovery
    assert status.timeline is not None and status.timeline >= 1
    [replica] = status.replicas
    assert replica.name == next(m.name for m in pair.members if m is not primary)
    assert replica.state == "streaming" and status.synchronous == [replica.name]
    assert not replica.lagging


async def test_a_role_without_pg_monitor_is_told_so_not_shown_empty_replicas(
    pair: LocalPatroni,
) -> None:
    """PostgreSQL shows such a role NULL state for other roles' replication connections,
    with no error: read_status says the state is hidden (monitoring lost) rather than
    making replicas of nothing (the API answered 500 on them)."""
    admin = await connect(pair.dsn(), autocommit=True)
    try:
        await admin.execute("DROP ROLE IF EXISTS plain_watcher")
        await admin.execute("CREATE ROLE plain_watcher LOGIN PASSWORD 'plain-pw-0123'")
        dsn = pair.dsn().replace(f"user={SUPERUSER}", "user=plain_watcher")
        dsn = dsn.replace(f"password={pair.credentials.superuser}", "password=plain-pw-0123")
        plain = await connect(dsn, autocommit=True)
        try:
            with pytest.raises(MonitoringHidden, match="pg_monitor"):
                await read_status(plain)
            await admin.execute("GRANT pg_monitor TO plain_watcher")
            [replica] = (await read_status(plain)).replicas
            assert replica.state == "streaming" and replica.sync_state == "sync"
        finally:
            await plain.close()
    finally:
        await admin.close()


async def test_no_member_lets_anyone_in_without_the_password(pair: LocalPatroni) -> None:
    # initdb's own pg_hba trusts every local connection; Patroni's bootstrap lines come
    # after it. A runner on this host must not reach the database without the password.
    for member in pair.members:
        tcp = f"host=127.0.0.1 port={member.pg_port} dbname=postgres user={SUPERUSER}"
        socket = f"host={pair.run_dir} port={member.pg_port} dbname=postgres user={SUPERUSER}"
        for where in (tcp, socket):
            for password in ("", "wrong"):
                with pytest.raises(psycopg.OperationalError, match="password"):
                    await psycopg.AsyncConnection.connect(f"{where} password='{password}'")
        good = await psycopg.AsyncConnection.connect(f"{tcp} password={pair.credentials.superuser}")
        await good.close()  # the password itself works


async def test_a_replica_whose_replay_stalls_is_flagged(pair: LocalPatroni) -> None:
    primary = pair.primary()
    assert primary is not None
    [replica] = [m for m in pair.members if m is not primary]
    writer = await connect(pair.dsn(), autocommit=True)
    await writer.execute("CREATE TABLE IF NOT EXISTS ticks (t timestamptz)")
    # Freeze the replica's startup process, which replays WAL: it still receives and
    # flushes, but applies nothing (pg_wal_replay_pause() would not do: Patroni resumes a
    # paused replay within its loop_wait).
    startup = chaos.postgres_process(str(replica.data_dir), "startup")
    assert startup is not None
    os.kill(startup, signal.SIGSTOP)
    try:

        async def flagged() -> bool:
            await writer.execute("INSERT INTO ticks VALUES (now())")  # WAL to replay
            return (await read_status(writer, lag_alert_s=1.0)).lagging == [replica.name]

        await wait_until(flagged, 20, "the stalled replica to be flagged", interval_s=0.2)
        lagging = (await read_status(writer, lag_alert_s=1.0)).replicas[0]
        assert lagging.replay_lag_bytes > 0
    finally:
        os.kill(startup, signal.SIGCONT)

    async def caught_up() -> bool:
        return (await read_status(writer, lag_alert_s=1.0)).lagging == []

    await wait_until(caught_up, 20, "the replica to catch up", interval_s=0.2)
    await writer.close()


def reinits() -> float:
    sample = {"action": "reinit_replica"}
    return REGISTRY.get_sample_value("runnerhub_remediations_total", sample) or 0.0


def stalled_s(replica: str) -> float:
    sample = {"replica": replica}
    return REGISTRY.get_sample_value("runnerhub_postgres_replica_stalled_seconds", sample) or 0.0


def pg_log(pair: LocalPatroni, member: str) -> str:
    logs = pair.run_dir / f"{member}-log"
    return "".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.log")))


def reinit_events(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT subject FROM events WHERE kind = 'remediation.reinit_replica' ORDER BY id"
        ).fetchall()
    return [r[0] for r in rows]


def remediating_node(pair: LocalPatroni, dsn: str, tmp_path: Path, after_s: float = 4) -> Node:
    """A node that leads alone and rebuilds a replica `after_s` after it finds it stalled."""
    return Node(
        make_settings(
            dsn,
            node={"id": "reinit", "state_dir": str(tmp_path / "node")},
            database={
                "dsn": dsn,
                "pool_min_size": 1,
                "pool_max_size": 4,
                "connect_timeout_s": 2,
                "replication_check_s": 0.5,
            },
            health={
                "interval_s": 0.5,
                "timeout_s": 0.5,
                "github_interval_s": 60,
                "patroni_urls": [m.api_url for m in pair.members],
            },
            remediation={"interval_s": 0.5, "reinit_after_s": after_s},
            pools=[],
        )
    )


def streams(pair: LocalPatroni, replica: str) -> bool:
    with psycopg.connect(pair.dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT application_name, state FROM pg_stat_replication")
        return (replica, "streaming") in rows.fetchall()


async def test_a_replica_that_can_no_longer_stream_is_reinitialised(
    pair: LocalPatroni, tmp_path: Path
) -> None:
    dsn = pair.create_database("reinit")
    node = remediating_node(pair, dsn, tmp_path)
    before = reinits()
    await node.start()
    try:
        primary = pair.primary()
        assert primary is not None
        [replica] = [m for m in pair.members if m is not primary]
        # Healthy: well past reinit_after_s, nothing is asked of Patroni.
        await wait_until(lambda: node.reinit.cycles >= 20, 30, "the check to run a while")
        assert reinits() == before and reinit_events(dsn) == []
        assert stalled_s(replica.name) == 0

        # The fault: the replica's machine dies; while it is down the primary writes more
        # than it keeps for it, so its slot is given up and the WAL it needs recycled.
        pair.kill_member(replica)
        with psycopg.connect(pair.dsn(), autocommit=True) as conn:
            conn.execute("SET synchronous_commit = local")  # the sync replica is gone
            conn.execute("CREATE TABLE IF NOT EXISTS outage (n int)")
            for n in range(8):
                conn.execute("INSERT INTO outage VALUES (%s)", (n,))
                conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            slots = conn.execute("SELECT wal_status FROM pg_replication_slots").fetchall()
        assert all(s[0] == "lost" for s in slots), slots
        pair.start_member(replica)
        # It runs, and asks for WAL the primary no longer has: it cannot stream by itself.
        await wait_until(
            lambda: "has already been removed" in pg_log(pair, replica.name),
            30,
            "the replica to ask for recycled WAL",
        )
        started = time.monotonic()
        await wait_until(lambda: stalled_s(replica.name) > 0, 20, "the stall to be timed")

        def health_names_it() -> bool:  # every node's /health says so, not only the leader
            r = node.health.result("replication")
            return r is not None and r.detail.get("not_streaming") == [replica.name]

        await wait_until(health_names_it, 10, "/health to name the silent replica")
        await wait_until(lambda: reinits() > before, 30, "the leader to ask for a reinit")
        asked_after = time.monotonic() - started
        assert reinit_events(dsn) == [f"postgres:{replica.name}"]

        await wait_until(
            lambda: streams(pair, replica.name), 60, "the rebuilt replica to stream", 0.5
        )
        # It holds what was written while it was away.
        replica_dsn = pair.dsn().replace("target_session_attrs=read-write", "")
        replica_dsn = replica_dsn.replace(f"port={pair.ports}", f"port={replica.pg_port}")
        replica_dsn = replica_dsn.replace(f"host={pair.hosts}", "host=127.0.0.1")
        with psycopg.connect(replica_dsn) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
            assert conn.execute("SELECT count(*) FROM outage").fetchone() == (8,)
        await wait_until(lambda: stalled_s(replica.name) == 0, 10, "the stall gauge to clear")
        assert reinits() == before + 1  # asked once
        assert asked_after < 4 + 3, asked_after  # reinit_after_s, plus a check or two
    finally:
        await node.stop()


async def test_a_replica_whose_postgresql_no_longer_starts_is_reinitialised(
    pair: LocalPatroni, tmp_path: Path
) -> None:
    """As a rewind cut short by the next failover leaves it: a data directory PostgreSQL
    refuses to start from, which Patroni retries forever. Here the member's machine dies
    and comes back with a line PostgreSQL cannot parse in its postgresql.auto.conf."""
    pair.wait_healthy(60)
    dsn = pair.create_database("startfail")
    # Failing starts count while the last one is under half of this old (Patroni tries
    # again every few seconds here).
    node = remediating_node(pair, dsn, tmp_path, after_s=10)
    before = reinits()
    await node.start()
    try:
        primary = pair.primary()
        assert primary is not None
        [replica] = [m for m in pair.members if m is not primary]
        pair.kill_member(replica)
        with (replica.data_dir / "postgresql.auto.conf").open("a") as f:
            f.write("this is not a setting\n")
        pair.start_member(replica)

        def fails_to_start() -> bool:
            topo = pair.topology() or {}
            states = {m.get("name"): m.get("state") for m in topo.get("members", [])}
            return states.get(replica.name) in FAILING_STATES

        await wait_until(fails_to_start, 30, "Patroni to report the failing starts", 0.2)
        await wait_until(lambda: reinits() > before, 40, "the leader to ask for a reinit")
        assert f"postgres:{replica.name}" in reinit_events(dsn)
        with psycopg.connect(dsn) as conn:
            reasons = conn.execute(
                "SELECT detail->>'reason' FROM events WHERE kind = 'remediation.reinit_replica'"
            ).fetchall()
        assert any("failed to start" in r[0] for r in reasons), reasons
        # Rebuilt from the primary (its own postgresql.auto.conf): it starts and streams.
        await wait_until(
            lambda: streams(pair, replica.name), 90, "the rebuilt replica to stream", 0.5
        )
        await wait_until(lambda: stalled_s(replica.name) == 0, 10, "the stall gauge to clear")
    finally:
        await node.stop()
