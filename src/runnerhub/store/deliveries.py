"""Webhook deliveries in PostgreSQL: recorded with the job change they cause, in one
transaction (I1), exactly once per delivery GUID (I2) and per body: a signed body replayed
under a new GUID is a duplicate too (the GUID is not signed)."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runnerhub.domain.jobs import JobFacts
from runnerhub.domain.pools import Match
from runnerhub.store.db import Conn, Pool
from runnerhub.store.jobs import load_for_update, lock_jobs, plan_writes

DUPLICATE_DELIVERY = "duplicate_delivery"
UNSTORABLE = "unstorable"  # valid and signed, but PostgreSQL refuses its content

_INSERT = """
INSERT INTO webhook_deliveries (delivery_guid, event, action, hook_id, received_by, payload,
                                outcome, detail, job_id, received_at, body_sha256)
VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, coalesce(to_timestamp(%s), now()),
        decode(%s, 'hex'))
ON CONFLICT DO NOTHING  -- the same GUID, or the same body
RETURNING id
"""


@dataclass(frozen=True)
class Delivery:
    guid: str
    event: str
    action: str | None
    hook_id: int | None
    payload: str | None  # the JSON text as received; None when it was not JSON
    received_by: str
    # Unix time the node took it (a spooled delivery keeps it through its replay).
    received_at: float | None = None
    body_sha256: str | None = None  # hex; the same body again is a duplicate


@dataclass(frozen=True)
class Recorded:
    outcome: str
    job_id: int | None = None
    job_state: str | None = None

    @property
    def duplicate(self) -> bool:
        return self.outcome == DUPLICATE_DELIVERY


def _row(d: Delivery, outcome: str, detail: str | None, job_id: int | None) -> tuple[Any, ...]:
    return (
        *(d.guid, d.event, d.action, d.hook_id, d.received_by, d.payload),
        *(outcome, detail, job_id, d.received_at, d.body_sha256),
    )


def _document(rows: list[tuple[Delivery, str, int | None]]) -> str:
    """The batch's JSON document; each payload is spliced in as the JSON text it arrived as
    (it parsed as JSON already), instead of being parsed and serialised again."""
    parts = []
    for d, outcome, job_id in rows:
        head = json.dumps(
            {
                "guid": d.guid,
                "event": d.event,
                "action": d.action,
                "hook_id": d.hook_id,
                "received_by": d.received_by,
                "received_at": d.received_at,
                "outcome": outcome,
                "job_id": job_id,
                "body_sha256": d.body_sha256,
            }
        )
        parts.append(f'{head[:-1]}, "payload": {d.payload or "null"}}}')
    return "[" + ",".join(parts) + "]"


async def record(pool: Pool, d: Delivery, outcome: str, detail: str | None = None) -> Recorded:
    """Record a delivery that changes no job (ping, other events, invalid payloads)."""
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(_INSERT, _row(d, outcome, detail, None))
        inserted = await cur.fetchone()
    return Recorded(outcome if inserted else DUPLICATE_DELIVERY)


async def known_guids(conn: Conn, guids: Collection[str]) -> set[str]:
    """Which of these delivery GUIDs are recorded already."""
    cur = await conn.execute(
        "SELECT delivery_guid FROM webhook_deliveries WHERE delivery_guid = ANY(%s)",
        (list(guids),),
    )
    return {r["delivery_guid"] for r in await cur.fetchall()}


class _DuplicateRace(Exception):
    pass


@dataclass(frozen=True)
class JobDelivery:
    delivery: Delivery
    obs: JobFacts
    match: Match


async def record_job_deliveries(
    pool: Pool, items: Sequence[JobDelivery], node: str
) -> list[Recorded]:
    """Record workflow_job deliveries and their jobs' new states in one transaction: all
    of them or nothing. A delivery whose GUID is already stored changes nothing."""
    for _ in range(2):
        try:
            return await _record_job_deliveries(pool, items, node)
        except _DuplicateRace:
            continue  # a concurrent copy committed first; the next try sees it
    raise RuntimeError("delivery GUIDs kept racing")  # pragma: no cover - needs 3 racers


async def _record_job_deliveries(
    pool: Pool, items: Sequence[JobDelivery], node: str
) -> list[Recorded]:
    job_ids = [i.obs.job_id for i in items]
    async with pool.connection() as conn, conn.pipeline(), conn.transaction():
        # Under the jobs' locks a concurrent copy of a delivery has either committed (we
        # see its GUID) or not begun; the unique GUID is the last line of defence. The
        # lock and both reads travel in one round trip (pipeline mode).
        await lock_jobs(conn, job_ids)
        # Two index lookups (GUID, body hash), not a scan: each side is `= ANY(array)`.
        bodies = [bytes.fromhex(i.delivery.body_sha256) for i in items if i.delivery.body_sha256]
        seen_cur = await conn.execute(
            "SELECT delivery_guid, encode(body_sha256, 'hex') AS body FROM webhook_deliveries "
            "WHERE delivery_guid = ANY(%s) OR body_sha256 = ANY(%s::bytea[])",
            ([i.delivery.guid for i in items], bodies),
        )
        current = await load_for_update(conn, job_ids)
        seen: set[str | None] = set()
        for r in await seen_cur.fetchall():
            seen |= {r["delivery_guid"], r["body"]}
        seen.discard(None)
        fresh: list[int] = []
        results: list[Recorded | None] = []
        for n, item in enumerate(items):
            d = item.delivery
            if d.guid in seen or d.body_sha256 in seen:
                results.append(Recorded(DUPLICATE_DELIVERY, item.obs.job_id))
            else:
                seen |= {d.guid, d.body_sha256}
                seen.discard(None)
                fresh.append(n)
                results.append(None)
        writes = plan_writes(current, [(items[n].obs, items[n].match) for n in fresh], "webhook")
        rows: list[tuple[Delivery, str, int | None]] = []
        for n, tr in zip(fresh, writes.transitions, strict=True):
            rows.append((items[n].delivery, tr.outcome.value, items[n].obs.job_id))
            results[n] = Recorded(tr.outcome.value, tr.facts.job_id, tr.facts.state.value)
        if rows and await writes.execute(conn, node, _document(rows)) != len(rows):
            raise _DuplicateRace  # rolls the job changes back with it
    return [r for r in results if r is not None]


@dataclass(frozen=True)
class JobDeliveryRow:
    """One delivery that named a job, as a job's history shows it (never its payload)."""

    id: int
    delivery_guid: str
    event: str
    action: str | None
    received_at: datetime
    received_by: str  # the node that took it
    outcome: str
    detail: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobDeliveryRow:
        return cls(**row)


async def for_job(conn: Conn, job_id: int, limit: int = 200) -> list[JobDeliveryRow]:
    """The deliveries about a job, oldest first (the newest `limit`)."""
    cur = await conn.execute(
        """SELECT * FROM (
               SELECT id, delivery_guid, event, action, received_at, received_by, outcome,
                      detail
                 FROM webhook_deliveries WHERE job_id = %(job)s
                ORDER BY id DESC LIMIT %(limit)s) AS newest
            ORDER BY id""",
        {"job": job_id, "limit": limit},
    )
    return [JobDeliveryRow.from_row(r) for r in await cur.fetchall()]
