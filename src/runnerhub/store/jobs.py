"""Jobs in PostgreSQL: applying GitHub's observations (I2, I3) and reading them back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runnerhub.domain.jobs import JobFacts, JobState, Outcome, Transition, apply
from runnerhub.domain.pools import Match
from runnerhub.store.db import Conn

NOTIFY_CHANNEL = "runnerhub_jobs"

# Row locks in id order: every writer that locks several jobs does so in this order.
_SELECT_FOR_UPDATE = "SELECT * FROM jobs WHERE id = ANY(%s) ORDER BY id FOR UPDATE"

# Writes take a whole batch as one JSON document (one statement, whatever the batch size):
# psycopg's per-statement cost, not PostgreSQL's, is what limits a busy node.
_JOB_RECORD = """r(id bigint, run_id bigint, run_attempt int, repository text, name text,
    workflow_name text, labels jsonb, state text, conclusion text, pool text, hosted boolean,
    runner_name text, runner_id bigint, waiting_reason text, created_at timestamptz,
    started_at timestamptz, completed_at timestamptz, source text)"""

# Everything a batch writes, in one statement: data-modifying CTEs each run exactly once.
# The deliveries part is empty for the reconciler, which records no delivery.
_WRITE = f"""
WITH job_inserts AS (
    INSERT INTO jobs (id, run_id, run_attempt, repository, name, workflow_name, labels, state,
                      conclusion, pool, hosted, runner_name, runner_id, waiting_reason,
                      github_created_at, started_at, completed_at, queued_at, last_source)
    SELECT r.id, r.run_id, r.run_attempt, r.repository, r.name, r.workflow_name,
           ARRAY(SELECT jsonb_array_elements_text(r.labels)), r.state, r.conclusion, r.pool,
           r.hosted, r.runner_name, r.runner_id, r.waiting_reason, r.created_at,
           r.started_at, r.completed_at, CASE WHEN r.state = 'queued' THEN now() END, r.source
    FROM jsonb_to_recordset(%(inserts)s::jsonb) AS {_JOB_RECORD}
    RETURNING 1
), job_updates AS (
    UPDATE jobs j SET state = r.state, conclusion = r.conclusion, name = r.name,
           workflow_name = r.workflow_name, runner_name = r.runner_name,
           runner_id = r.runner_id, github_created_at = r.created_at,
           started_at = r.started_at, completed_at = r.completed_at,
           queued_at = CASE WHEN r.state = 'queued' THEN coalesce(j.queued_at, now())
                            ELSE j.queued_at END,
           waiting_reason = CASE WHEN r.state IN ('queued', 'waiting')
                                 THEN j.waiting_reason END,
           updated_at = now(), last_source = r.source
    FROM jsonb_to_recordset(%(updates)s::jsonb) AS {_JOB_RECORD}
    WHERE j.id = r.id
    RETURNING 1
), runners_busy AS (
    -- A job going in_progress names the runner GitHub gave it to; if that runner is ours
    -- it is now busy with this job (maybe not the job it was started for: GitHub decides).
    UPDATE runners SET state = 'busy', job_id = r.job_id, busy_at = coalesce(busy_at, now()),
           updated_at = now()
    FROM jsonb_to_recordset(%(busy)s::jsonb) AS r(job_id bigint, name text)
    WHERE runners.name = r.name
      AND runners.state IN ('requested', 'registered', 'running', 'busy')
    RETURNING 1
), audit AS (
    INSERT INTO events (node, kind, subject, detail)
    SELECT %(node)s, r.kind, r.subject, r.detail
    FROM jsonb_to_recordset(%(events)s::jsonb) AS r(kind text, subject text, detail jsonb)
    RETURNING 1
), deliveries AS (
    INSERT INTO webhook_deliveries (delivery_guid, event, action, hook_id, received_by,
                                    payload, outcome, detail, job_id, received_at,
                                    body_sha256)
    SELECT r.guid, r.event, r.action, r.hook_id, r.received_by, r.payload, r.outcome,
           r.detail, r.job_id, coalesce(to_timestamp(r.received_at), now()),
           decode(r.body_sha256, 'hex')
    FROM jsonb_to_recordset(%(deliveries)s::jsonb) AS r(guid text, event text, action text,
         hook_id bigint, received_by text, payload jsonb, outcome text, detail text,
         job_id bigint, received_at float8, body_sha256 text)
    ON CONFLICT DO NOTHING  -- the same GUID or the same body: a duplicate (caller retries)
    RETURNING 1
)
SELECT (SELECT count(*) FROM deliveries) AS deliveries_inserted,
       CASE WHEN %(notify)s THEN pg_notify('{NOTIFY_CHANNEL}', '') END AS notified
"""


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
        "created_at": _iso(facts.created_at),
        "started_at": _iso(facts.started_at),
        "completed_at": _iso(facts.completed_at),
        "source": source,
    }


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


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


@dataclass
class JobWrites:
    """What applying a batch of observations writes (see `_WRITE`)."""

    transitions: list[Transition]
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    busy: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    async def execute(self, conn: Conn, node: str, deliveries: str = "[]") -> int:
        """Write it all in one statement; return how many deliveries were inserted."""
        cur = await conn.execute(
            _WRITE,
            {
                "inserts": json.dumps(self.inserts),
                "updates": json.dumps(self.updates),
                "busy": json.dumps(self.busy),
                "events": json.dumps(self.events),
                "deliveries": deliveries,
                "node": node,
                # one wake-up is enough for the scheduler
                "notify": bool(self.inserts or self.updates),
            },
        )
        row = await cur.fetchone()
        return int(row["deliveries_inserted"]) if row else 0


def plan_writes(
    current: dict[int, JobFacts], items: Sequence[tuple[JobFacts, Match]], source: str
) -> JobWrites:
    """Apply observations in order to what we hold (`load_for_update`): several of one job
    chain through the state machine. No I/O: the result says what to write."""
    current = dict(current)
    existed = set(current)
    matches: dict[int, Match] = {}
    changed: dict[int, JobFacts] = {}
    w = JobWrites(transitions=[])
    for obs, m in items:
        tr = apply(current.get(obs.job_id), obs)
        w.transitions.append(tr)
        if tr.changed:
            current[obs.job_id] = changed[obs.job_id] = tr.facts
            matches.setdefault(obs.job_id, m)
            if tr.facts.runner_name and tr.facts.state is JobState.IN_PROGRESS:
                w.busy.append({"job_id": obs.job_id, "name": tr.facts.runner_name})
        if tr.outcome is Outcome.DUPLICATE:
            continue  # nothing happened: the delivery's own record says it came
        detail: dict[str, Any] = {
            "outcome": tr.outcome.value,
            "state": tr.facts.state.value,
            "source": source,
        }
        if tr.outcome is Outcome.STALE:
            detail["ignored_state"] = obs.state.value
        if tr.facts.runner_name:
            detail["runner"] = tr.facts.runner_name
        w.events.append(
            {"kind": f"job.{tr.outcome.value}", "subject": f"job:{obs.job_id}", "detail": detail}
        )
    for job_id, facts in sorted(changed.items()):
        params = _params(facts, source)
        if job_id in existed:
            w.updates.append(params)
        else:
            m = matches[job_id]
            w.inserts.append(
                {**params, "pool": m.pool, "hosted": m.hosted, "waiting_reason": m.reason}
            )
    w.busy.sort(key=lambda b: str(b["name"]))  # runner rows in name order, like other writers
    return w


# -- reading --------------------------------------------------------------------------------

JOB_COLUMNS = """id, run_id, run_attempt, repository, name, workflow_name, labels, state,
    conclusion, pool, hosted, runner_name, runner_id, waiting_reason, github_created_at,
    started_at, completed_at, first_seen_at, queued_at, updated_at, last_source"""


@dataclass(frozen=True)
class JobRow:
    id: int
    run_id: int
    run_attempt: int
    repository: str
    name: str | None
    workflow_name: str | None
    labels: tuple[str, ...]
    state: str
    conclusion: str | None
    pool: str | None  # the pool that serves it; None: no pool matches
    hosted: bool  # for a GitHub-hosted runner: not ours
    runner_name: str | None
    runner_id: int | None
    waiting_reason: str | None  # why a queued job has no runner yet
    github_created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    first_seen_at: datetime
    queued_at: datetime | None
    updated_at: datetime
    last_source: str  # webhook or reconciler

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRow:
        return cls(**{**row, "labels": tuple(row["labels"])})


@dataclass(frozen=True)
class JobFilter:
    state: str | None = None
    repository: str | None = None
    pool: str | None = None


async def list_jobs(conn: Conn, flt: JobFilter, limit: int, before_id: int | None) -> list[JobRow]:
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
    return [JobRow.from_row(r) for r in await cur.fetchall()]


async def get_job(conn: Conn, job_id: int) -> JobRow | None:
    cur = await conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
    row = await cur.fetchone()
    return JobRow.from_row(row) if row else None


async def counts_by_state(conn: Conn) -> dict[str, int]:
    cur = await conn.execute("SELECT state, count(*) AS n FROM jobs GROUP BY state")
    return {row["state"]: row["n"] for row in await cur.fetchall()}


async def queued_by_pool(conn: Conn) -> dict[str, int]:
    """Queued jobs per pool (jobs no pool serves left out)."""
    cur = await conn.execute(
        "SELECT pool, count(*) AS n FROM jobs WHERE state = 'queued' "
        "AND pool IS NOT NULL GROUP BY pool"
    )
    return {r["pool"]: int(r["n"]) for r in await cur.fetchall()}


async def oldest_queued_at(conn: Conn) -> datetime | None:
    cur = await conn.execute(
        "SELECT min(coalesce(queued_at, first_seen_at)) AS t FROM jobs "
        "WHERE state = 'queued' AND pool IS NOT NULL"
    )
    row = await cur.fetchone()
    return row["t"] if row else None


async def queued_since(conn: Conn, job_id: int | None) -> datetime | None:
    """When the job was queued (first seen, if it never was): provisioning latency."""
    cur = await conn.execute(
        "SELECT coalesce(queued_at, first_seen_at) AS t FROM jobs WHERE id = %s", (job_id,)
    )
    row = await cur.fetchone()
    return row["t"] if row else None


@dataclass(frozen=True)
class JobProgress:
    id: int
    state: str
    completed_at: datetime | None


async def progress(conn: Conn, job_ids: Iterable[int | None]) -> dict[int, JobProgress]:
    """The state of each of these jobs (ids we do not hold are left out)."""
    wanted = sorted({i for i in job_ids if i is not None})
    if not wanted:
        return {}
    cur = await conn.execute(
        "SELECT id, state, completed_at FROM jobs WHERE id = ANY(%s)", (wanted,)
    )
    return {int(r["id"]): JobProgress(**r) for r in await cur.fetchall()}


async def open_jobs(conn: Conn, quiet_for_s: float = 5.0) -> list[tuple[int, str]]:
    """(id, repository) of our jobs not completed and not changed for `quiet_for_s`: the
    reconciler asks GitHub about those it did not see in its sweep."""
    cur = await conn.execute(
        "SELECT id, repository FROM jobs WHERE state <> 'completed' AND NOT hosted "
        "AND updated_at < now() - make_interval(secs => %s)",
        (quiet_for_s,),
    )
    return [(int(r["id"]), r["repository"]) for r in await cur.fetchall()]


# -- what the scheduler reads and writes ---------------------------------------------------


@dataclass(frozen=True)
class QueuedJobRow:
    """A queued job as the scheduler plans with it."""

    id: int
    run_attempt: int
    repository: str
    labels: tuple[str, ...]
    pool: str | None
    waiting_reason: str | None
    queued_at: datetime
    next_generation: int  # the generation its next runner gets

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> QueuedJobRow:
        return cls(**{**row, "labels": tuple(row["labels"])})


async def queued(conn: Conn) -> list[QueuedJobRow]:
    """Queued jobs for self-hosted runners, oldest first."""
    cur = await conn.execute(
        """SELECT j.id, j.run_attempt, j.repository, j.labels, j.pool, j.waiting_reason,
                  coalesce(j.queued_at, j.first_seen_at) AS queued_at,
                  (SELECT coalesce(max(r.generation) + 1, 0) FROM runners r
                    WHERE r.provisioned_for = j.id) AS next_generation
           FROM jobs j
           WHERE j.state = 'queued' AND NOT j.hosted
           ORDER BY coalesce(j.queued_at, j.first_seen_at), j.id"""
    )
    return [QueuedJobRow.from_row(r) for r in await cur.fetchall()]


async def set_pool(conn: Conn, job_id: int, pool: str | None, reason: str | None) -> None:
    """Match a queued job to another pool (the pools changed with the configuration)."""
    await conn.execute(
        "UPDATE jobs SET pool = %s, waiting_reason = %s, updated_at = now() "
        "WHERE id = %s AND state = 'queued'",
        (pool, reason, job_id),
    )


async def set_waiting_reasons(conn: Conn, reasons: dict[int, str]) -> None:
    """Say why each queued job waits. A reason is advice, not state: rows intake holds
    right now are skipped rather than make a delivery wait (the next cycle updates them)."""
    if not reasons:
        return
    await conn.execute(
        """UPDATE jobs SET waiting_reason = r.reason
           FROM jsonb_to_recordset(%s::jsonb) AS r(id bigint, reason text)
           WHERE jobs.id = r.id AND jobs.id IN (
               SELECT id FROM jobs WHERE id = ANY(%s) AND state = 'queued'
               ORDER BY id FOR UPDATE SKIP LOCKED)""",
        (
            json.dumps([{"id": i, "reason": r} for i, r in reasons.items()]),
            sorted(reasons),
        ),
    )


@dataclass(frozen=True)
class MinuteRow:
    """One minute of activity: deliveries taken in, jobs queued and started in it, how long
    the jobs that started in it had waited in the queue (seconds; None when none started),
    and the most any replica was behind the primary (None when nobody measured it)."""

    minute: datetime
    deliveries: int
    queued: int
    started: int
    wait_p50_s: float | None
    wait_p99_s: float | None
    replica_lag_s: float | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MinuteRow:
        return cls(**row)


async def activity(conn: Conn, minutes: int) -> list[MinuteRow]:
    """The last `minutes` minutes (the current one included), oldest first, every minute
    present; computed in SQL over the indexes on `queued_at`, `started_at`, the deliveries'
    `received_at` and the lag samples' minute."""
    cur = await conn.execute(
        """WITH bounds AS (
               SELECT date_trunc('minute', now()) - (%(n)s - 1) * interval '1 minute' AS since
           ), q AS (
               SELECT date_trunc('minute', queued_at) AS minute, count(*) AS n
                 FROM jobs, bounds WHERE queued_at >= bounds.since GROUP BY 1
           ), s AS (
               SELECT date_trunc('minute', started_at) AS minute, count(*) AS n,
                      percentile_cont(0.5) WITHIN GROUP
                          (ORDER BY extract(epoch FROM started_at - queued_at))
                          FILTER (WHERE queued_at IS NOT NULL AND started_at >= queued_at)
                          AS p50,
                      percentile_cont(0.99) WITHIN GROUP
                          (ORDER BY extract(epoch FROM started_at - queued_at))
                          FILTER (WHERE queued_at IS NOT NULL AND started_at >= queued_at)
                          AS p99
                 FROM jobs, bounds WHERE started_at >= bounds.since GROUP BY 1
           ), d AS (
               SELECT date_trunc('minute', received_at) AS minute, count(*) AS n
                 FROM webhook_deliveries, bounds WHERE received_at >= bounds.since
                GROUP BY 1
           ), l AS (
               SELECT minute, max(replay_lag_s) AS lag
                 FROM replication_lag, bounds WHERE minute >= bounds.since GROUP BY 1
           )
           SELECT m.minute, coalesce(d.n, 0)::int AS deliveries,
                  coalesce(q.n, 0)::int AS queued, coalesce(s.n, 0)::int AS started,
                  s.p50::float8 AS wait_p50_s, s.p99::float8 AS wait_p99_s,
                  l.lag::float8 AS replica_lag_s
             FROM bounds, generate_series(bounds.since, date_trunc('minute', now()),
                                          interval '1 minute') AS m(minute)
             LEFT JOIN q USING (minute) LEFT JOIN s USING (minute)
             LEFT JOIN d USING (minute) LEFT JOIN l USING (minute)
            ORDER BY m.minute""",
        {"n": minutes},
    )
    return [MinuteRow.from_row(r) for r in await cur.fetchall()]
