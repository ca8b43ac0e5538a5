"""The leader's epoch in PostgreSQL: the fencing token of every control-loop write (I4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runnerhub.store.db import Conn


class StaleLeader(Exception):
    """This node is not (or no longer certainly) the leader: the write was not made."""


@dataclass(frozen=True)
class LeaderRow:
    epoch: int
    node: str
    since: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LeaderRow:
        return cls(epoch=int(row["epoch"]), node=row["node"], since=row["since"])


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


async def current(conn: Conn) -> LeaderRow | None:
    cur = await conn.execute("SELECT epoch, node, since FROM leadership WHERE id = 1")
    row = await cur.fetchone()
    return LeaderRow.from_row(row) if row else None
