"""Disaster-recovery drills (migration 0010): what `runnerhub dr drill` measured, recorded
in the active region's database when it ends, for the dashboard and the API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runnerhub.store.db import Conn

COLUMNS = """id, started_at, recorded_at, jobs_lost, ran_twice, rto_webhook_s, rto_runner_s,
    acknowledged_missing, report"""


@dataclass(frozen=True)
class DrillRow:
    id: int
    started_at: datetime
    recorded_at: datetime
    jobs_lost: int
    ran_twice: int
    rto_webhook_s: float | None
    rto_runner_s: float | None
    acknowledged_missing: int  # deliveries region A acknowledged that region B lacks (RPO)
    report: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DrillRow:
        return cls(**row)


async def record(conn: Conn, report: dict[str, Any]) -> int:
    """A drill's report (`DrillReport.as_dict()`); its id."""
    cur = await conn.execute(
        """INSERT INTO dr_drills (started_at, jobs_lost, ran_twice, rto_webhook_s,
               rto_runner_s, acknowledged_missing, report)
           VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) RETURNING id""",
        (
            report["started_at"],
            report["jobs_lost"],
            len(report["ran_twice"]),
            report["rto_webhook_s"],
            report["rto_runner_s"],
            report["acknowledged_missing_in_b"],
            json.dumps(report, default=str),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def recent(conn: Conn, limit: int) -> list[DrillRow]:
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM dr_drills ORDER BY started_at DESC, id DESC LIMIT %s", (limit,)
    )
    return [DrillRow.from_row(r) for r in await cur.fetchall()]
