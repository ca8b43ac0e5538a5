"""REST API v1: jobs, runners, pools, cluster. Read with a `read` token; act with `admin`."""

from __future__ import annotations

import base64
import binascii
import os
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from runnerhub.api.auth import Principal, TokenAuth
from runnerhub.context import NodeContext
from runnerhub.domain.capacity import desired_capacity
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
    pid: int
    role: str
    healthy: bool
    last_seen: datetime


class ClusterOut(BaseModel):
    nodes: list[NodeOut]
    leader: str | None
    epoch: int | None
    leader_since: datetime | None


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
        me = NodeOut(
            id=ctx.settings.node.id,
            url=ctx.public_url,
            pid=os.getpid(),
            role="leader",
            healthy=await ctx.database_ok(),
            last_seen=datetime.now().astimezone(),
        )
        return ClusterOut(nodes=[me], leader=me.id, epoch=None, leader_since=ctx.started_at)

    @router.post("/reconcile", status_code=202, summary="Run the reconciler now (admin)")
    async def reconcile(_: Principal = Depends(auth.require("admin"))) -> dict[str, str]:
        ctx.wake_reconciler()
        return {"status": "reconcile requested"}

    return router
