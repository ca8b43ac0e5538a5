"""Replication monitoring against a real Patroni pair (primary + synchronous replica): the
state RunnerHub reads from pg_stat_replication, and a replica flagged once it falls behind
(its replay process frozen while the primary keeps writing)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from runnerhub.cluster import chaos
from runnerhub.cluster.etcd import LocalEtcd
from runnerhub.cluster.patroni import LocalPatroni
from runnerhub.store.db import connect
from runnerhub.store.replication import read_status
from runnerhub.waiting import wait_until


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPatroni]:
    base = tmp_path_factory.mktemp("replication")
    etcd = LocalEtcd(base / "etcd", members=1)
    etcd.start()
    pg = LocalPatroni(base / "patroni", etcd.endpoints, members_count=2)
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
