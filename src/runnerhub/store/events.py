"""The audit trail: the append-only `events` table. Every change to a job, a runner or the
leadership is appended here (in the transaction that makes it), read back by the API
(`GET /api/v1/events`), and streamed live (`live/`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runnerhub.store.db import Conn

EVENT_COLUMNS = "id, at, node, kind, subject, detail"


@dataclass(frozen=True)
class EventRow:
    id: int
    at: datetime
    node: str
    kind: str  # `job.created`, `runner.exited`, `leader.elected`, `remediation.…`
    subject: str | None  # `job:42`, `runner:rh-42-1`, `cluster`
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EventRow:
        return cls(
            id=int(row["id"]),
            at=row["at"],
            node=row["node"],
            kind=row["kind"],
            subject=row["subject"],
            detail=row["detail"],
        )


async def append(conn: Conn, node: str, kind: str, subject: str, **detail: Any) -> None:
    """Add one event, in the caller's transaction."""
    await conn.execute(
        "INSERT INTO events (node, kind, subject, detail) VALUES (%s, %s, %s, %s)",
        (node, kind, subject, json.dumps(detail, default=str)),
    )


async def latest_id(conn: Conn) -> int:
    cur = await conn.execute("SELECT coalesce(max(id), 0) AS id FROM events")
    row = await cur.fetchone()
    return int(row["id"]) if row else 0


async def read_after(conn: Conn, after: int, limit: int) -> list[EventRow]:
    """Events with an id above `after`, oldest first."""
    cur = await conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
    )
    return [EventRow.from_row(r) for r in await cur.fetchall()]


async def list_events(
    conn: Conn,
    kinds: Sequence[str],
    subject: str | None,
    limit: int,
    before_id: int | None,
) -> list[EventRow]:
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
    return [EventRow.from_row(r) for r in await cur.fetchall()]


async def at_of(conn: Conn, event_id: int) -> datetime | None:
    """When an event was written (to restore the database as it was just before it)."""
    cur = await conn.execute("SELECT at FROM events WHERE id = %s", (event_id,))
    row = await cur.fetchone()
    return row["at"] if row else None


async def for_subjects(conn: Conn, subjects: Sequence[str], limit: int) -> list[EventRow]:
    """The events about any of `subjects` (a job and its runners), oldest first."""
    cur = await conn.execute(
        f"""SELECT {EVENT_COLUMNS} FROM (
                SELECT {EVENT_COLUMNS} FROM events WHERE subject = ANY(%(subjects)s::text[])
                ORDER BY id DESC LIMIT %(limit)s) AS newest
            ORDER BY id""",
        {"subjects": list(subjects), "limit": limit},
    )
    return [EventRow.from_row(r) for r in await cur.fetchall()]
