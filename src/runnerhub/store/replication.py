"""PostgreSQL replication as the primary sees it (`pg_stat_replication`): each replica's
state, synchronous or not, and how far behind it is, in seconds and in bytes.

Read on whatever server the pool reaches, which with `target_session_attrs=read-write` is
the primary; on a lone server the list of replicas is simply empty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from runnerhub.store.db import Conn


@dataclass(frozen=True)
class Replica:
    name: str  # application_name: Patroni sets it to the member's name
    address: str | None
    state: str  # streaming, catchup, backup, startup
    sync_state: str  # sync, quorum, potential, async
    write_lag_s: float | None
    flush_lag_s: float | None
    replay_lag_s: float | None
    replay_lag_bytes: int
    lagging: bool  # replay is further behind than the alert threshold


@dataclass(frozen=True)
class ReplicationStatus:
    server: str  # the server this was read on
    in_recovery: bool
    timeline: int | None
    replicas: list[Replica] = field(default_factory=list)

    @property
    def lagging(self) -> list[str]:
        return [r.name for r in self.replicas if r.lagging]

    @property
    def synchronous(self) -> list[str]:
        return [r.name for r in self.replicas if r.sync_state in ("sync", "quorum")]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lagging": self.lagging, "synchronous": self.synchronous}


def lag_seconds(measured: float | None, lag_bytes: int) -> float | None:
    """PostgreSQL clears the lag columns once a caught-up replica has nothing new to replay:
    no bytes behind then means no lag, not an unknown one."""
    if measured is not None:
        return measured
    return 0.0 if lag_bytes == 0 else None


def is_lagging(replay_lag_s: float | None, state: str, threshold_s: float) -> bool:
    """Behind by more than the threshold, or not streaming at all (catching up, starting)."""
    if state != "streaming":
        return True
    return replay_lag_s is not None and replay_lag_s > threshold_s


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
    replicas = []
    for r in await cur.fetchall():
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
