"""Deleting what is older than its retention, a batch at a time (migration 0007).

Each batch is its own short transaction over at most `batch` rows found through an index
on their time, so the intake and the control loops never wait behind a long delete.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from runnerhub.store.db import Conn

Table = Literal["webhook_deliveries", "events", "replication_lag"]
_TIME = {"webhook_deliveries": "received_at", "events": "at", "replication_lag": "minute"}


async def delete_batch(conn: Conn, table: Table, cutoff: datetime, batch: int) -> int:
    """Delete up to `batch` rows of `table` older than `cutoff`, oldest first; how many."""
    column = _TIME[table]
    async with conn.transaction():
        if table == "events":  # the append-only trigger lets these rows, and only these, go
            await conn.execute(
                "SELECT set_config('runnerhub.retention_cutoff', %s, true)",
                (cutoff.isoformat(),),
            )
        cur = await conn.execute(
            f"""DELETE FROM {table} WHERE id IN (
                    SELECT id FROM {table} WHERE {column} < %s ORDER BY {column} LIMIT %s)""",
            (cutoff, batch),
        )
        return cur.rowcount
