"""Epoch fencing in PostgreSQL (invariant I4)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from runnerhub.store.db import Conn


class StaleLeader(Exception):
    """This node is not (or no longer certainly) the leader: the write was not made."""


async def record_epoch(conn: Conn, epoch: int, node: str) -> bool:
    """Make `epoch` the current one; False when a newer epoch is already recorded."""
    cur = await conn.execute(
        """INSERT INTO leadership (id, epoch, node, since) VALUES (1, %s, %s, now())
           ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, node = EXCLUDED.node,
                                          since = EXCLUDED.since
           WHERE leadership.epoch < EXCLUDED.epoch
           RETURNING epoch""",
        (epoch, node),
    )
    return await cur.fetchone() is not None


async def check_epoch(conn: Conn, epoch: int) -> None:
    """Inside a control-loop transaction: go on only if `epoch` is still the newest.

    FOR SHARE keeps a successor's `record_epoch` waiting until this transaction ends, so a
    write that passed this check cannot commit after a newer epoch was recorded.
    """
    cur = await conn.execute("SELECT epoch FROM leadership WHERE id = 1 FOR SHARE")
    row = await cur.fetchone()
    current = row["epoch"] if row else None
    if current != epoch:
        raise StaleLeader(f"epoch {epoch} is not the current one ({current})")


async def current(conn: Conn) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT epoch, node, since FROM leadership WHERE id = 1")
    return await cur.fetchone()


async def heartbeat(conn: Conn, node: str, url: str | None, pid: int, role: str) -> bool:
    """Say this node is alive; return whether an operator asked it to drain."""
    cur = await conn.execute(
        """INSERT INTO nodes (id, url, pid, role, started_at, last_seen)
           VALUES (%s, %s, %s, %s, now(), now())
           ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, pid = EXCLUDED.pid,
                  role = EXCLUDED.role, last_seen = now(),
                  started_at = CASE WHEN nodes.pid IS DISTINCT FROM EXCLUDED.pid
                                    THEN now() ELSE nodes.started_at END
           RETURNING draining""",
        (node, url, pid, role),
    )
    row = await cur.fetchone()
    return bool(row and row["draining"])


async def set_draining(conn: Conn, node: str, draining: bool) -> bool:
    cur = await conn.execute(
        "UPDATE nodes SET draining = %s WHERE id = %s RETURNING id", (draining, node)
    )
    return await cur.fetchone() is not None


async def nodes(conn: Conn) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT id, url, pid, role, started_at, last_seen, draining, now() AS db_now "
        "FROM nodes ORDER BY id"
    )
    return await cur.fetchall()


def seconds_between(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()
