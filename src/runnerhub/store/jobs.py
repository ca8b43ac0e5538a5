"""Jobs in PostgreSQL: applying GitHub's observations (I2, I3) and reading them back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runnerhub.domain.jobs import JobFacts, JobState, Outcome, Transition, apply
from runnerhub.domain.pools import Match
from runnerhub.store.db import Conn

NOTIFY_CHANNEL = "runnerhub_jobs"

# Row locks in id order: every writer that locks several jobs does so in this order.
_SELECT_FOR_UPDATE = "SELECT * FROM jobs WHERE id = ANY(%s) ORDER BY id FOR UPDATE"

_INSERT = """
INSERT INTO jobs (id, run_id, run_attempt, repository, name, workflow_name, labels, state,
                  conclusion, pool, hosted, runner_name, runner_id, waiting_reason,
                  github_created_at, started_at, completed_at, queued_at, last_source)
VALUES (%(id)s, %(run_id)s, %(run_attempt)s, %(repository)s, %(name)s, %(workflow_name)s,
        %(labels)s, %(state)s, %(conclusion)s, %(pool)s, %(hosted)s, %(runner_name)s,
        %(runner_id)s, %(waiting_reason)s, %(created_at)s, %(started_at)s, %(completed_at)s,
        CASE WHEN %(state)s = 'queued' THEN now() END, %(source)s)
"""

_UPDATE = """
UPDATE jobs SET state = %(state)s, conclusion = %(conclusion)s, name = %(name)s,
       workflow_name = %(workflow_name)s, runner_name = %(runner_name)s,
       runner_id = %(runner_id)s, github_created_at = %(created_at)s,
       started_at = %(started_at)s, completed_at = %(completed_at)s,
       queued_at = CASE WHEN %(state)s = 'queued' THEN coalesce(queued_at, now())
                        ELSE queued_at END,
       waiting_reason = CASE WHEN %(state)s IN ('queued', 'waiting') THEN waiting_reason END,
       updated_at = now(), last_source = %(source)s
WHERE id = %(id)s
"""

# A job going in_progress names the runner GitHub gave it to; if that runner is ours it is
# now busy with this job (which may not be the job it was started for: GitHub decides).
_RUNNER_BUSY = """
UPDATE runners SET state = 'busy', job_id = %s, busy_at = coalesce(busy_at, now()),
       updated_at = now()
WHERE name = %s AND state IN ('requested', 'registered', 'running', 'busy')
"""

_EVENT = "INSERT INTO events (node, kind, subject, detail) VALUES (%s, %s, %s, %s)"


def facts_from_row(row: dict[str, Any]) -> JobFacts:
    return JobFacts(
        job_id=row["id"],
        run_id=row["run_id"],
        run_attempt=row["run_attempt"],
        repository=row["repository"],
        labels=tuple(row["labels"]),
        state=JobState(row["state"]),
        name=row["name"],
        workflow_name=row["workflow_name"],
        conclusion=row["conclusion"],
        runner_name=row["runner_name"],
        runner_id=row["runner_id"],
        created_at=row["github_created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
    )


def _params(facts: JobFacts, source: str) -> dict[str, Any]:
    return {
        "id": facts.job_id,
        "run_id": facts.run_id,
        "run_attempt": facts.run_attempt,
        "repository": facts.repository,
        "name": facts.name,
        "workflow_name": facts.workflow_name,
        "labels": list(facts.labels),
        "state": facts.state.value,
        "conclusion": facts.conclusion,
        "runner_name": facts.runner_name,
        "runner_id": facts.runner_id,
        "created_at": facts.created_at,
        "started_at": facts.started_at,
        "completed_at": facts.completed_at,
        "source": source,
    }


async def lock_jobs(conn: Conn, job_ids: Iterable[int]) -> None:
    """Serialise everything that touches these jobs (even before their rows exist).

    Taken in ascending order, so two transactions locking overlapping sets cannot deadlock.
    """
    ids = sorted(set(job_ids))
    if ids:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(id) FROM unnest(%s::bigint[]) AS id ORDER BY id",
            (ids,),
        )


async def load_for_update(conn: Conn, job_ids: Iterable[int]) -> dict[int, JobFacts]:
    """What we hold about these jobs, row-locked (the caller holds `lock_jobs`)."""
    cur = await conn.execute(_SELECT_FOR_UPDATE, (sorted(set(job_ids)),))
    return {row["id"]: facts_from_row(row) for row in await cur.fetchall()}


async def apply_observations(
    conn: Conn,
    items: Sequence[tuple[JobFacts, Match]],
    source: str,
    node: str,
    current: dict[int, JobFacts] | None = None,
) -> list[Transition]:
    """Apply observations in order inside the caller's transaction, which holds
    `lock_jobs` for them (and may pass what `load_for_update` returned). Several of one job
    chain through the state machine; the writes go out together (pipelined)."""
    if not items:
        return []
    if current is None:
        current = await load_for_update(conn, (o.job_id for o, _ in items))
    current = dict(current)
    existed = set(current)
    matches: dict[int, Match] = {}
    changed: dict[int, JobFacts] = {}
    transitions: list[Transition] = []
    events: list[tuple[str, str, str, str]] = []
    busy: list[tuple[int, str]] = []
    for obs, m in items:
        tr = apply(current.get(obs.job_id), obs)
        transitions.append(tr)
        if tr.changed:
            current[obs.job_id] = changed[obs.job_id] = tr.facts
            matches.setdefault(obs.job_id, m)
            if tr.facts.runner_name and tr.facts.state is JobState.IN_PROGRESS:
                busy.append((obs.job_id, tr.facts.runner_name))
        detail: dict[str, Any] = {
            "outcome": tr.outcome.value,
            "state": tr.facts.state.value,
            "source": source,
        }
        if tr.outcome is Outcome.STALE:
            detail["ignored_state"] = obs.state.value
        if tr.facts.runner_name:
            detail["runner"] = tr.facts.runner_name
        events.append((node, f"job.{tr.outcome.value}", f"job:{obs.job_id}", json.dumps(detail)))

    inserts, updates = [], []
    for job_id, facts in sorted(changed.items()):
        params = _params(facts, source)
        if job_id in existed:
            updates.append(params)
        else:
            m = matches[job_id]
            inserts.append(
                {**params, "pool": m.pool, "hosted": m.hosted, "waiting_reason": m.reason}
            )
    async with conn.cursor() as c:
        if inserts:
            await c.executemany(_INSERT, inserts)
        if updates:
            await c.executemany(_UPDATE, updates)
        if busy:
            busy.sort(key=lambda b: b[1])  # runner rows in name order, like other writers
            await c.executemany(_RUNNER_BUSY, busy)
        await c.executemany(_EVENT, events)
        if changed:  # one wake-up is enough for the scheduler
            await c.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(len(changed))))
    return transitions


async def apply_observation(
    conn: Conn, obs: JobFacts, match: Match, source: str, node: str
) -> Transition:
    """One observation in its own lock (the reconciler's path)."""
    await lock_jobs(conn, [obs.job_id])
    return (await apply_observations(conn, [(obs, match)], source, node))[0]


# -- reading --------------------------------------------------------------------------------

JOB_COLUMNS = """id, run_id, run_attempt, repository, name, workflow_name, labels, state,
    conclusion, pool, hosted, runner_name, runner_id, waiting_reason, github_created_at,
    started_at, completed_at, first_seen_at, queued_at, updated_at, last_source"""


@dataclass(frozen=True)
class JobFilter:
    state: str | None = None
    repository: str | None = None
    pool: str | None = None


async def list_jobs(
    conn: Conn, flt: JobFilter, limit: int, before_id: int | None
) -> list[dict[str, Any]]:
    """Newest first; `before_id` is the keyset cursor (stable under concurrent inserts)."""
    cur = await conn.execute(
        f"""SELECT {JOB_COLUMNS} FROM jobs
            WHERE (%(state)s::text IS NULL OR state = %(state)s)
              AND (%(repository)s::text IS NULL OR repository = %(repository)s)
              AND (%(pool)s::text IS NULL OR pool = %(pool)s)
              AND (%(before)s::bigint IS NULL OR id < %(before)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {
            "state": flt.state,
            "repository": flt.repository,
            "pool": flt.pool,
            "before": before_id,
            "limit": limit,
        },
    )
    return await cur.fetchall()


async def get_job(conn: Conn, job_id: int) -> dict[str, Any] | None:
    cur = await conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
    return await cur.fetchone()


async def counts_by_state(conn: Conn) -> dict[str, int]:
    cur = await conn.execute("SELECT state, count(*) AS n FROM jobs GROUP BY state")
    return {row["state"]: row["n"] for row in await cur.fetchall()}


async def oldest_queued_at(conn: Conn) -> datetime | None:
    cur = await conn.execute(
        "SELECT min(coalesce(queued_at, first_seen_at)) AS t FROM jobs "
        "WHERE state = 'queued' AND pool IS NOT NULL"
    )
    row = await cur.fetchone()
    return row["t"] if row else None
