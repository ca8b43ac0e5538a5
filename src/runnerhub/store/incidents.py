"""Incident records in PostgreSQL (see migration 0003)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runnerhub.store.db import Conn

INCIDENT_COLUMNS = """id, component, kind, summary, node, started_at, detected_at,
    recovered_at, action, detail, detection_s, recovery_s, acknowledged_at, acknowledged_by"""


@dataclass(frozen=True)
class IncidentRow:
    id: int
    component: str  # postgres, etcd, redis, github, backends, leader, node:<id>, breaker:<name>
    kind: str  # failover, outage, leader_change, node_lost, breaker_open, predicted
    summary: str
    node: str  # the node that recorded it
    started_at: datetime | None  # last known good
    detected_at: datetime
    recovered_at: datetime | None
    action: str | None
    detail: dict[str, Any]
    detection_s: float | None
    recovery_s: float | None
    acknowledged_at: datetime | None = None  # an operator saw it (the dashboard, the API)
    acknowledged_by: str | None = None  # the API token's name

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> IncidentRow:
        return cls(**row)


async def record(
    conn: Conn,
    *,
    key: str,
    component: str,
    kind: str,
    summary: str,
    node: str,
    detected_at: datetime,
    started_at: datetime | None = None,
    recovered_at: datetime | None = None,
    action: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Insert, or complete the record another write (or node) began: a recovery time, an
    action and detail are added, nothing already known is overwritten. An end also ends any
    other open record of the component that began before it (another node's view of the
    same incident, recorded under a key a second apart, or left open by a node that died)."""
    if recovered_at is not None:
        await conn.execute(
            """UPDATE incidents SET recovered_at = %(recovered)s
                WHERE component = %(component)s AND recovered_at IS NULL
                  AND key <> %(key)s AND detected_at <= %(recovered)s""",
            {"recovered": recovered_at, "component": component, "key": key},
        )
    await conn.execute(
        """INSERT INTO incidents (key, component, kind, summary, node, started_at,
                                  detected_at, recovered_at, action, detail)
           VALUES (%(key)s, %(component)s, %(kind)s, %(summary)s, %(node)s, %(started)s,
                   %(detected)s, %(recovered)s, %(action)s, %(detail)s)
           ON CONFLICT (key) DO UPDATE SET
               kind = EXCLUDED.kind,
               summary = EXCLUDED.summary,
               recovered_at = coalesce(incidents.recovered_at, EXCLUDED.recovered_at),
               action = coalesce(EXCLUDED.action, incidents.action),
               detail = incidents.detail || EXCLUDED.detail""",
        {
            "key": key,
            "component": component,
            "kind": kind,
            "summary": summary,
            "node": node,
            "started": started_at,
            "detected": detected_at,
            "recovered": recovered_at,
            "action": action,
            "detail": json.dumps(detail or {}, default=str),
        },
    )


async def list_incidents(
    conn: Conn,
    component: str | None,
    open_only: bool,
    limit: int,
    before_id: int | None,
) -> list[IncidentRow]:
    """Newest first. `component` matches exactly or as a prefix before ':' (node, breaker)."""
    cur = await conn.execute(
        f"""SELECT {INCIDENT_COLUMNS} FROM incidents
            WHERE (%(component)s::text IS NULL OR component = %(component)s
                   OR component LIKE %(component)s || ':%%')
              AND (NOT %(open)s OR recovered_at IS NULL)
              AND (%(before)s::bigint IS NULL OR id < %(before)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {"component": component, "open": open_only, "before": before_id, "limit": limit},
    )
    return [IncidentRow.from_row(r) for r in await cur.fetchall()]


async def acknowledge(conn: Conn, incident_id: int, by: str) -> IncidentRow | None:
    """Mark an incident seen by `by` (the first acknowledgement stays); None: no such id."""
    cur = await conn.execute(
        f"""UPDATE incidents SET acknowledged_at = coalesce(acknowledged_at, now()),
                                 acknowledged_by = coalesce(acknowledged_by, %s)
            WHERE id = %s RETURNING {INCIDENT_COLUMNS}""",
        (by, incident_id),
    )
    row = await cur.fetchone()
    return IncidentRow.from_row(row) if row else None
