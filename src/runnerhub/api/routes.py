"""REST API v1: jobs, runners, pools, cluster. Read with a `read` token; act with `admin`."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from runnerhub.api.auth import Principal, TokenAuth
from runnerhub.api.live import event_stream
from runnerhub.context import NodeContext, NoElection
from runnerhub.domain.capacity import desired_capacity
from runnerhub.ha.dcs import StoreUnavailable
from runnerhub.store import events as event_store
from runnerhub.store import fencing
from runnerhub.store import incidents as incident_store
from runnerhub.store import jobs as job_store
from runnerhub.store import runners as runner_store

JobStateParam = Literal["waiting", "queued", "in_progress", "completed"]
RunnerStateParam = Literal["requested", "registered", "running", "busy", "exited", "removed"]


class JobOut(BaseModel):
    id: int
    run_id: int
    run_attempt: int
    repository: str
    name: str | None
    workflow_name: str | None
    labels: list[str]
    state: str
    conclusion: str | None
    pool: str | None
    hosted: bool
    runner_name: str | None
    waiting_reason: str | None
    github_created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    first_seen_at: datetime
    queued_at: datetime | None
    updated_at: datetime
    last_source: str


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class RunnerOut(BaseModel):
    name: str
    pool: str
    scope: str
    labels: list[str]
    state: str
    job_id: int | None
    provisioned_for: int | None
    backend: str
    backend_ref: str | None
    github_runner_id: int | None
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    started_at: datetime | None
    busy_at: datetime | None
    exited_at: datetime | None


class RunnerPage(BaseModel):
    items: list[RunnerOut]
    next_cursor: str | None


class PoolOut(BaseModel):
    name: str
    labels: list[str]
    backend: str
    min_idle: int
    max_runners: int
    queued_jobs: int
    current_runners: int
    desired_runners: int


class SummaryOut(BaseModel):
    jobs: dict[str, int]
    runners: dict[str, int]
    oldest_queued_age_s: float


class NodeOut(BaseModel):
    id: str
    url: str | None
    pid: int | None
    role: str
    healthy: bool
    draining: bool
    last_seen: datetime
    started_at: datetime


class EventOut(BaseModel):
    id: int
    at: datetime
    node: str
    kind: str
    subject: str | None
    detail: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class IncidentOut(BaseModel):
    id: int
    component: str
    kind: str
    summary: str
    node: str
    started_at: datetime | None
    detected_at: datetime
    recovered_at: datetime | None
    detection_s: float | None
    recovery_s: float | None
    action: str | None
    detail: dict[str, Any]


class IncidentPage(BaseModel):
    items: list[IncidentOut]
    next_cursor: str | None


class HandoffIn(BaseModel):
    to: str | None = None


class ReplicaOut(BaseModel):
    name: str
    address: str | None
    state: str
    sync_state: str
    write_lag_s: float | None
    flush_lag_s: float | None
    replay_lag_s: float | None
    replay_lag_bytes: int
    lagging: bool


class DatabaseOut(BaseModel):
    """PostgreSQL as this node last read it from the primary (pg_stat_replication)."""

    server: str
    in_recovery: bool
    timeline: int | None
    replicas: list[ReplicaOut]
    synchronous: list[str]
    lagging: list[str]


class CacheOut(BaseModel):
    """Redis (optional, may be lost): the primary Sentinel names, and its replicas' lag."""

    configured: bool
    available: bool
    primary: str | None
    consecutive_failures: int
    replicas: list[dict[str, Any]]


class ClusterOut(BaseModel):
    nodes: list[NodeOut]
    leader: str | None
    epoch: int | None
    leader_since: datetime | None
    database: DatabaseOut | None = None
    cache: CacheOut | None = None


def _cursor_out(rows: list[dict[str, Any]], limit: int) -> str | None:
    if len(rows) < limit:
        return None
    return base64.urlsafe_b64encode(str(rows[-1]["id"]).encode()).decode()


def _cursor_in(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(400, "cursor is not one this API handed out") from None


def build_router(ctx: NodeContext, auth: TokenAuth) -> APIRouter:
    read = Depends(auth.require("read"))
    router = APIRouter(prefix="/api/v1")

    @router.get("/jobs", response_model=JobPage, summary="List jobs, newest first")
    async def list_jobs(
        state: JobStateParam | None = None,
        repository: str | None = None,
        pool: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = None,
        _: Principal = read,
    ) -> JobPage:
        flt = job_store.JobFilter(state, repository, pool)
        async with ctx.db.connection() as conn:
            rows = await job_store.list_jobs(conn, flt, limit, _cursor_in(cursor))
        return JobPage(items=[JobOut(**r) for r in rows], next_cursor=_cursor_out(rows, limit))

    @router.get("/jobs/{job_id}", response_model=JobOut, summary="One job")
    async def get_job(job_id: int, _: Principal = read) -> JobOut:
        async with ctx.db.connection() as conn:
            row = await job_store.get_job(conn, job_id)
        if row is None:
            raise HTTPException(404, f"no job with id {job_id}")
        return JobOut(**row)

    @router.get("/runners", response_model=RunnerPage, summary="List runners, newest first")
    async def list_runners(
        state: RunnerStateParam | None = None,
        pool: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = None,
        _: Principal = read,
    ) -> RunnerPage:
        async with ctx.db.connection() as conn:
            rows = await runner_store.list_runners(conn, state, pool, limit, _cursor_in(cursor))
        return RunnerPage(
            items=[RunnerOut(**r) for r in rows], next_cursor=_cursor_out(rows, limit)
        )

    @router.get("/events", response_model=EventPage, summary="The audit trail, newest first")
    async def list_events(
        kind: list[str] = Query([], description="kind prefixes, e.g. job. or runner.exited"),
        subject: str | None = Query(None, description="e.g. job:42 or runner:rh-linux-42-1"),
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = None,
        _: Principal = read,
    ) -> EventPage:
        async with ctx.db.connection() as conn:
            rows = await event_store.list_events(conn, kind, subject, limit, _cursor_in(cursor))
        return EventPage(items=[EventOut(**r) for r in rows], next_cursor=_cursor_out(rows, limit))

    @router.get(
        "/events/stream",
        summary="Live events (Server-Sent Events), from any node",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream_events(
        kind: list[str] = Query([], description="kind prefixes, e.g. job. or leader."),
        after: int | None = Query(None, ge=0, description="replay history after this id"),
        last_event_id: str | None = Header(None),
        _: Principal = read,
    ) -> StreamingResponse:
        if ctx.live is None:
            raise HTTPException(503, "live events are not running on this node")
        if after is None and last_event_id is not None:
            try:
                after = int(last_event_id)
            except ValueError:
                raise HTTPException(400, "Last-Event-ID must be an event id") from None
        return StreamingResponse(
            event_stream(ctx.db, ctx.live, tuple(kind), after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get(
        "/incidents", response_model=IncidentPage, summary="Failovers and incidents, newest first"
    )
    async def list_incidents(
        component: str | None = Query(
            None, description="postgres, etcd, redis, github, leader, node, breaker..."
        ),
        open: bool = Query(False, description="only those not over yet"),
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = None,
        _: Principal = read,
    ) -> IncidentPage:
        async with ctx.db.connection() as conn:
            rows = await incident_store.list_incidents(
                conn, component, open, limit, _cursor_in(cursor)
            )
        return IncidentPage(
            items=[IncidentOut(**r) for r in rows], next_cursor=_cursor_out(rows, limit)
        )

    @router.get("/pools", response_model=list[PoolOut], summary="Pools and their capacity")
    async def list_pools(_: Principal = read) -> list[PoolOut]:
        async with ctx.db.connection() as conn:
            cur = await conn.execute(
                "SELECT pool, count(*) AS n FROM jobs WHERE state = 'queued' "
                "AND pool IS NOT NULL GROUP BY pool"
            )
            queued = {r["pool"]: r["n"] for r in await cur.fetchall()}
            live: dict[str, int] = {}
            for r in await runner_store.counts(conn):
                if r["state"] in runner_store.LIVE_STATES:
                    live[r["pool"]] = live.get(r["pool"], 0) + r["n"]
        return [
            PoolOut(
                name=p.name,
                labels=p.labels,
                backend=p.backend,
                min_idle=p.min_idle,
                max_runners=p.max_runners,
                queued_jobs=queued.get(p.name, 0),
                current_runners=live.get(p.name, 0),
                desired_runners=desired_capacity(queued.get(p.name, 0), p.min_idle, p.max_runners),
            )
            for p in ctx.settings.pools
        ]

    @router.get("/summary", response_model=SummaryOut, summary="Counts at a glance")
    async def summary(_: Principal = read) -> SummaryOut:
        async with ctx.db.connection() as conn:
            jobs = await job_store.counts_by_state(conn)
            oldest = await job_store.oldest_queued_at(conn)
            runner_counts: dict[str, int] = {}
            for r in await runner_store.counts(conn):
                runner_counts[r["state"]] = runner_counts.get(r["state"], 0) + r["n"]
        age = (datetime.now().astimezone() - oldest).total_seconds() if oldest else 0.0
        return SummaryOut(jobs=jobs, runners=runner_counts, oldest_queued_age_s=max(0.0, age))

    @router.get("/cluster", response_model=ClusterOut, summary="Nodes and the leader")
    async def cluster(_: Principal = read) -> ClusterOut:
        async with ctx.db.connection() as conn:
            rows = await fencing.nodes(conn)
            lead = await fencing.current(conn)
        stale_after = 3 * ctx.settings.ha.heartbeat_s
        nodes = [
            NodeOut(
                id=r["id"],
                url=r["url"],
                pid=r["pid"],
                role=r["role"],
                healthy=not r["draining"]
                and (r["db_now"] - r["last_seen"]).total_seconds() < stale_after,
                draining=r["draining"],
                last_seen=r["last_seen"],
                started_at=r["started_at"],
            )
            for r in rows
        ]
        database = DatabaseOut(**ctx.replication.as_dict()) if ctx.replication else None
        cache_status = ctx.cache.status()
        cache = CacheOut(
            configured=ctx.settings.redis.enabled,
            available=cache_status["available"],
            primary=cache_status["primary"],
            consecutive_failures=cache_status["consecutive_failures"],
            replicas=(ctx.cache_replication or {}).get("replicas", []),
        )
        if lead is None and not ctx.settings.ha.enabled:  # one node, always the leader
            return ClusterOut(
                nodes=nodes,
                leader=ctx.settings.node.id,
                epoch=None,
                leader_since=ctx.started_at,
                database=database,
                cache=cache,
            )
        return ClusterOut(
            nodes=nodes,
            leader=lead and lead["node"],
            epoch=lead and lead["epoch"],
            leader_since=lead and lead["since"],
            database=database,
            cache=cache,
        )

    @router.post("/leader/handoff", status_code=202, summary="Ask the leader to step down")
    async def handoff(
        body: HandoffIn | None = None, _: Principal = Depends(auth.require("admin"))
    ) -> dict[str, object]:
        target = body.to if body else None
        if target is not None:
            async with ctx.db.connection() as conn:
                known = {r["id"]: r for r in await fencing.nodes(conn)}
            if target not in known:
                raise HTTPException(404, f"no node {target!r} in this cluster")
            if known[target]["draining"]:
                raise HTTPException(409, f"node {target!r} is draining; it will not lead")
        try:
            record = await ctx.leadership.request_handoff(target)
        except NoElection as exc:
            raise HTTPException(409, str(exc)) from None
        except StoreUnavailable as exc:
            raise HTTPException(503, f"cannot reach etcd: {exc}") from None
        return {
            "status": "handoff requested",
            "from": record.node,
            "epoch": record.epoch,
            "to": target,
        }

    @router.post(
        "/nodes/{node_id}/drain",
        status_code=202,
        summary="Stop a node taking traffic and leadership",
    )
    async def drain(
        node_id: str, _: Principal = Depends(auth.require("admin"))
    ) -> dict[str, object]:
        return await _set_draining(node_id, True)

    @router.delete("/nodes/{node_id}/drain", summary="Let a drained node serve again")
    async def undrain(
        node_id: str, _: Principal = Depends(auth.require("admin"))
    ) -> dict[str, object]:
        return await _set_draining(node_id, False)

    async def _set_draining(node_id: str, draining: bool) -> dict[str, object]:
        async with ctx.db.connection() as conn, conn.transaction():
            if not await fencing.set_draining(conn, node_id, draining):
                raise HTTPException(404, f"no node {node_id!r} in this cluster")
        return {"node": node_id, "draining": draining}

    @router.post("/reconcile", status_code=202, summary="Run the reconciler now (admin)")
    async def reconcile(_: Principal = Depends(auth.require("admin"))) -> dict[str, str]:
        ctx.wake_reconciler()
        return {"status": "reconcile requested"}

    return router
