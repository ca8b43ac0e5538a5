"""PostgreSQL replication as the primary sees it (`pg_stat_replication`): each replica's
state, synchronous or not, and how far behind it is, in seconds and in bytes.

Read on whatever server the pool reaches, which with `target_session_attrs=read-write` is
the primary; on a lone server the list of replicas is simply empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from runnerhub.domain.backups import Archiver
from runnerhub.domain.replicas import (
    Replica,
    ReplicationStatus,
    StandbyStatus,
    is_lagging,
    lag_seconds,
)
from runnerhub.store.db import Conn


class MonitoringHidden(psycopg.Error):
    """PostgreSQL answered, but shows a role without `pg_monitor` only NULLs for other
    roles' replication connections (no error): the state is unknown, not empty. Caught
    with the other database errors, where monitoring is lost and nothing else is."""


@dataclass(frozen=True)
class Server:
    address: str  # host:port, or "local socket"
    in_recovery: bool  # a replica (read-only)


async def read_server(conn: Conn) -> Server:
    """Which server this connection reached, and whether it is a replica."""
    cur = await conn.execute(
        "SELECT pg_is_in_recovery() AS recovery, "
        "coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'local socket') "
        "AS server"
    )
    row = await cur.fetchone()
    assert row is not None
    return Server(row["server"], bool(row["recovery"]))


async def system_identifier(conn: Conn) -> str | None:
    """The database cluster's system identifier (the same on the primary and its replicas)."""
    cur = await conn.execute("SELECT system_identifier::text AS id FROM pg_control_system()")
    row = await cur.fetchone()
    return row["id"] if row else None


async def read_status(conn: Conn, lag_alert_s: float = 5.0) -> ReplicationStatus:
    cur = await conn.execute(
        """SELECT host(inet_server_addr()) AS addr, inet_server_port() AS port,
                  pg_is_in_recovery() AS in_recovery,
                  (SELECT timeline_id FROM pg_control_checkpoint()) AS timeline"""
    )
    me = await cur.fetchone()
    assert me is not None
    cur = await conn.execute(
        """SELECT application_name AS name, host(client_addr) AS address, state, sync_state,
                  extract(epoch FROM write_lag)::float8 AS write_lag_s,
                  extract(epoch FROM flush_lag)::float8 AS flush_lag_s,
                  extract(epoch FROM replay_lag)::float8 AS replay_lag_s,
                  coalesce(pg_wal_lsn_diff(
                      CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END,
                      replay_lsn), 0)::bigint AS replay_lag_bytes
             FROM pg_stat_replication
            ORDER BY application_name"""
    )
    rows = await cur.fetchall()
    if any(r["state"] is None for r in rows):
        raise MonitoringHidden(
            "pg_stat_replication hides its replicas' state from this role: grant it pg_monitor"
        )
    replicas = []
    for r in rows:
        lag_bytes = int(r["replay_lag_bytes"])
        replay = lag_seconds(r["replay_lag_s"], lag_bytes)
        replicas.append(
            Replica(
                name=r["name"],
                address=r["address"],
                state=r["state"],
                sync_state=r["sync_state"],
                write_lag_s=lag_seconds(r["write_lag_s"], lag_bytes),
                flush_lag_s=lag_seconds(r["flush_lag_s"], lag_bytes),
                replay_lag_s=replay,
                replay_lag_bytes=lag_bytes,
                lagging=is_lagging(replay, r["state"], lag_alert_s),
            )
        )
    return ReplicationStatus(
        server=f"{me['addr']}:{me['port']}",
        in_recovery=bool(me["in_recovery"]),
        timeline=me["timeline"],
        replicas=replicas,
    )


async def read_archiver(conn: Conn) -> Archiver | None:
    """None on a replica, or where archiving is off."""
    cur = await conn.execute(
        """SELECT archived_count, last_archived_wal,
                  extract(epoch FROM last_archived_time)::float8 AS archived_at,
                  failed_count, last_failed_wal,
                  extract(epoch FROM last_failed_time)::float8 AS failed_at,
                  current_setting('archive_mode') <> 'off' AND NOT pg_is_in_recovery() AS on
             FROM pg_stat_archiver"""
    )
    r = await cur.fetchone()
    if r is None or not r["on"]:
        return None
    return Archiver(
        int(r["archived_count"]),
        r["last_archived_wal"],
        r["archived_at"],
        int(r["failed_count"]),
        r["last_failed_wal"],
        r["failed_at"],
    )


async def read_standby(conn: Conn) -> StandbyStatus | None:
    """On a server in recovery (a standby cluster's leader): its lag and source. None on a
    primary."""
    cur = await conn.execute(
        """SELECT pg_is_in_recovery() AS recovery,
                  coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'local socket')
                      AS server,
                  extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS lag,
                  pg_last_wal_receive_lsn()::text AS received,
                  pg_last_wal_replay_lsn()::text AS replayed,
                  EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')
                      AS streaming"""
    )
    r = await cur.fetchone()
    if r is None or not r["recovery"]:
        return None
    return StandbyStatus(r["server"], r["lag"], bool(r["streaming"]), r["received"], r["replayed"])


async def record_lag(conn: Conn, minute: int, replicas: list[Replica]) -> None:
    """Each replica's lag for the replication-lag chart (migration 0010): the minute's row
    keeps the highest. Committed locally: a chart sample must never wait for a synchronous
    standby (the one it measures may be the one that is gone)."""
    at = datetime.fromtimestamp(minute * 60, UTC)
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = local")
        for r in replicas:
            await conn.execute(
                """INSERT INTO replication_lag (minute, replica, replay_lag_s, replay_lag_bytes)
                   VALUES (%s, %s, %s, %s)
                   ON CONFLICT (minute, replica) DO UPDATE SET
                       replay_lag_s = greatest(replication_lag.replay_lag_s,
                                               excluded.replay_lag_s),
                       replay_lag_bytes = greatest(replication_lag.replay_lag_bytes,
                                                   excluded.replay_lag_bytes)""",
                (at, r.name, r.replay_lag_s, r.replay_lag_bytes),
            )
