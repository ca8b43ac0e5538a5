"""The cluster's nodes in PostgreSQL: each node's heartbeat, and the drain flag an operator
sets on it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runnerhub.store.db import Conn


@dataclass(frozen=True)
class NodeRow:
    id: str
    url: str | None
    pid: int | None
    role: str  # leader or follower, as the node last said
    started_at: datetime
    last_seen: datetime
    draining: bool
    db_now: datetime  # the database's clock when this was read: heartbeats use it too

    @property
    def silent_s(self) -> float:
        """Seconds since the node's last heartbeat (one clock: the database's)."""
        return (self.db_now - self.last_seen).total_seconds()

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> NodeRow:
        return cls(
            id=row["id"],
            url=row["url"],
            pid=row["pid"],
            role=row["role"],
            started_at=row["started_at"],
            last_seen=row["last_seen"],
            draining=bool(row["draining"]),
            db_now=row["db_now"],
        )


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
    """False when there is no such node."""
    cur = await conn.execute(
        "UPDATE nodes SET draining = %s WHERE id = %s RETURNING id", (draining, node)
    )
    return await cur.fetchone() is not None


async def list_nodes(conn: Conn) -> list[NodeRow]:
    cur = await conn.execute(
        "SELECT id, url, pid, role, started_at, last_seen, draining, now() AS db_now "
        "FROM nodes ORDER BY id"
    )
    return [NodeRow.from_row(r) for r in await cur.fetchall()]


async def last_seen(conn: Conn, node: str) -> datetime | None:
    cur = await conn.execute("SELECT last_seen FROM nodes WHERE id = %s", (node,))
    row = await cur.fetchone()
    return row["last_seen"] if row else None


async def silent_for_update(conn: Conn, node: str) -> float | None:
    """Seconds since the node's last heartbeat, its row locked for the caller's
    transaction (None: no such node)."""
    cur = await conn.execute(
        "SELECT extract(epoch FROM now() - last_seen) AS silent_s FROM nodes WHERE id = %s "
        "FOR UPDATE",
        (node,),
    )
    row = await cur.fetchone()
    return float(row["silent_s"]) if row else None


async def delete(conn: Conn, node: str) -> None:
    await conn.execute("DELETE FROM nodes WHERE id = %s", (node,))
