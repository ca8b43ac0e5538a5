"""Reading the append-only events table: the audit trail, and the source of live events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runnerhub.store.db import Conn

EVENT_COLUMNS = "id, at, node, kind, subject, detail"


async def latest_id(conn: Conn) -> int:
    cur = await conn.execute("SELECT coalesce(max(id), 0) AS id FROM events")
    row = await cur.fetchone()
    return int(row["id"]) if row else 0


async def read_after(conn: Conn, after: int, limit: int) -> list[dict[str, Any]]:
    """Events with an id above `after`, oldest first."""
    cur = await conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
    )
    return await cur.fetchall()


async def list_events(
    conn: Conn,
    kinds: Sequence[str],
    subject: str | None,
    limit: int,
    before_id: int | None,
) -> list[dict[str, Any]]:
    """Newest first. `kinds` are prefixes (`job.` matches every job event); none: all."""
    cur = await conn.execute(
        f"""SELECT {EVENT_COLUMNS} FROM events
            WHERE (cardinality(%(kinds)s::text[]) = 0
                   OR kind LIKE ANY (SELECT replace(replace(k, '%%', ''), '_', '\\_') || '%%'
                                     FROM unnest(%(kinds)s::text[]) AS k))
              AND (%(subject)s::text IS NULL OR subject = %(subject)s)
              AND (%(before)s::bigint IS NULL OR id < %(before)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {"kinds": list(kinds), "subject": subject, "before": before_id, "limit": limit},
    )
    return await cur.fetchall()
