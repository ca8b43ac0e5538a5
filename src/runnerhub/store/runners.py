"""Runners in PostgreSQL: the provisioning intent (one row per deterministic name) and the
life of each runner. Every state change is logged to the append-only events table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runnerhub.store import events
from runnerhub.store.db import Conn
from runnerhub.store.jobs import NOTIFY_CHANNEL

LIVE_STATES = ("requested", "registered", "running", "busy")

RUNNER_COLUMNS = """id, name, pool, scope, labels, provisioned_for, generation, job_id, state,
    backend, backend_ref, github_runner_id, attempts, next_attempt_at, last_error,
    created_at, registered_at, started_at, busy_at, exited_at, removed_at, updated_at"""


@dataclass(frozen=True)
class RunnerRow:
    id: int
    name: str
    pool: str
    scope: str
    labels: tuple[str, ...]
    provisioned_for: int | None  # the job it was started for
    generation: int
    job_id: int | None  # the job it serves now (GitHub decides which)
    state: str
    backend: str
    backend_ref: str | None
    github_runner_id: int | None
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    registered_at: datetime | None = None
    started_at: datetime | None = None
    busy_at: datetime | None = None
    exited_at: datetime | None = None
    removed_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunnerRow:
        return cls(**{**row, "labels": tuple(row["labels"])})


async def live(conn: Conn, pool: str | None = None) -> list[RunnerRow]:
    cur = await conn.execute(
        f"SELECT {RUNNER_COLUMNS} FROM runners WHERE state = ANY(%s) "
        "AND (%s::text IS NULL OR pool = %s) ORDER BY id",
        (list(LIVE_STATES), pool, pool),
    )
    return [RunnerRow.from_row(r) for r in await cur.fetchall()]


async def in_state(conn: Conn, state: str, limit: int = 100) -> list[RunnerRow]:
    cur = await conn.execute(
        f"SELECT {RUNNER_COLUMNS} FROM runners WHERE state = %s ORDER BY updated_at LIMIT %s",
        (state, limit),
    )
    return [RunnerRow.from_row(r) for r in await cur.fetchall()]


async def get(conn: Conn, name: str) -> RunnerRow | None:
    cur = await conn.execute(
        f"SELECT {RUNNER_COLUMNS} FROM runners WHERE name = %s",
        (name,),
    )
    row = await cur.fetchone()
    return RunnerRow.from_row(row) if row else None


async def insert_requested(
    conn: Conn,
    *,
    name: str,
    pool: str,
    scope: str,
    labels: list[str],
    job_id: int | None,
    generation: int,
    backend: str,
    node: str,
) -> bool:
    """Record the intent to provision `name`; False when the name is already taken (I5)."""
    cur = await conn.execute(
        """INSERT INTO runners (name, pool, scope, labels, provisioned_for, generation, job_id,
                                state, backend)
           VALUES (%s, %s, %s, %s, %s, %s, %s, 'requested', %s)
           ON CONFLICT (name) DO NOTHING RETURNING id""",
        (name, pool, scope, labels, job_id, generation, job_id, backend),
    )
    created = await cur.fetchone() is not None
    if created:
        await events.append(
            conn, node, "runner.requested", f"runner:{name}", pool=pool, job=job_id, scope=scope
        )
    return created


async def set_state(
    conn: Conn,
    name: str,
    state: str,
    node: str,
    *,
    expect: tuple[str, ...] | None = None,
    **fields: Any,
) -> bool:
    """Move a runner to `state` (only from `expect` when given) and set extra columns."""
    stamp = {
        "registered": "registered_at",
        "running": "started_at",
        "busy": "busy_at",
        "exited": "exited_at",
        "removed": "removed_at",
    }.get(state)
    sets = ["state = %(state)s", "updated_at = now()"]
    if stamp:
        sets.append(f"{stamp} = coalesce({stamp}, now())")
    allowed = {
        "backend_ref",
        "github_runner_id",
        "attempts",
        "next_attempt_at",
        "last_error",
        "job_id",
    }
    for key in fields:
        if key not in allowed:
            raise ValueError(f"unknown runner column {key}")
        sets.append(f"{key} = %({key})s")
    where = "name = %(name)s"
    if expect:
        where += " AND state = ANY(%(expect)s)"
    cur = await conn.execute(
        f"UPDATE runners SET {', '.join(sets)} WHERE {where} RETURNING id",
        {"state": state, "name": name, "expect": list(expect or ()), **fields},
    )
    changed = await cur.fetchone() is not None
    if changed:
        shown = {k: v for k, v in fields.items() if k != "next_attempt_at"}
        await events.append(conn, node, f"runner.{state}", f"runner:{name}", **shown)
    return changed


async def assign(conn: Conn, name: str, job_id: int, node: str) -> None:
    """Point a live runner at another queued job (the one it was started for is taken)."""
    cur = await conn.execute(
        "UPDATE runners SET job_id = %s, updated_at = now() "
        "WHERE name = %s AND state = ANY(%s) RETURNING id",
        (job_id, name, list(LIVE_STATES)),
    )
    if await cur.fetchone() is not None:
        await events.append(conn, node, "runner.assigned", f"runner:{name}", job=job_id)


async def record_failure(
    conn: Conn, name: str, error: str, next_attempt_at: datetime, node: str
) -> None:
    await conn.execute(
        """UPDATE runners SET attempts = attempts + 1, last_error = %s, next_attempt_at = %s,
                  updated_at = now() WHERE name = %s""",
        (error, next_attempt_at, name),
    )
    await events.append(
        conn,
        node,
        "runner.provision_failed",
        f"runner:{name}",
        error=error,
        next_attempt_at=next_attempt_at.isoformat(),
    )


async def retry_now(conn: Conn, job_id: int) -> list[str]:
    """Bring forward the next provisioning attempt of the job's runners whose last attempt
    failed (an operator fixed the cause), and wake the leader's scheduler: the attempt
    count stays, so the history still says how many failed. Returns the runners' names."""
    cur = await conn.execute(
        f"""UPDATE runners SET next_attempt_at = now(), updated_at = now()
            WHERE job_id = %s AND state IN ('requested', 'registered')
              AND last_error IS NOT NULL
            RETURNING name, pg_notify('{NOTIFY_CHANNEL}', '')""",
        (job_id,),
    )
    return [r["name"] for r in await cur.fetchall()]


async def spare_serials(conn: Conn, n: int) -> list[int]:
    cur = await conn.execute(
        "SELECT nextval('runner_spare_serial') AS n FROM generate_series(1, %s)", (n,)
    )
    return [int(r["n"]) for r in await cur.fetchall()]


async def list_runners(
    conn: Conn, state: str | None, pool: str | None, limit: int, before_id: int | None
) -> list[RunnerRow]:
    """Newest first; `before_id` is the keyset cursor."""
    cur = await conn.execute(
        f"""SELECT {RUNNER_COLUMNS} FROM runners
            WHERE (%(state)s::text IS NULL OR state = %(state)s)
              AND (%(pool)s::text IS NULL OR pool = %(pool)s)
              AND (%(before)s::bigint IS NULL OR id < %(before)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {"state": state, "pool": pool, "before": before_id, "limit": limit},
    )
    return [RunnerRow.from_row(r) for r in await cur.fetchall()]


async def counts(conn: Conn) -> dict[tuple[str, str], int]:
    """How many runners each (pool, state) has, removed ones left out."""
    cur = await conn.execute(
        "SELECT pool, state, count(*) AS n FROM runners "
        "WHERE state <> 'removed' GROUP BY pool, state"
    )
    return {(r["pool"], r["state"]): int(r["n"]) for r in await cur.fetchall()}


async def recent_scopes(conn: Conn, days: int = 7) -> set[str]:
    """Every scope a runner registered in lately (where strays of ours may linger)."""
    cur = await conn.execute(
        "SELECT DISTINCT scope FROM runners WHERE created_at > now() - make_interval(days => %s)",
        (days,),
    )
    return {r["scope"] for r in await cur.fetchall()}


async def for_job(conn: Conn, job_id: int, limit: int = 50) -> list[RunnerRow]:
    """Every runner started for a job or that served it (each attempt), oldest first."""
    cur = await conn.execute(
        f"""SELECT {RUNNER_COLUMNS} FROM runners
            WHERE provisioned_for = %(job)s OR job_id = %(job)s
            ORDER BY id LIMIT %(limit)s""",
        {"job": job_id, "limit": limit},
    )
    return [RunnerRow.from_row(r) for r in await cur.fetchall()]
