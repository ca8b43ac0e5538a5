"""`/api/v1/pools`, `/api/v1/summary` and `/api/v1/activity`: capacity per pool, counts at
a glance, and jobs per minute."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query

from runnerhub.api.deps import Context, Reader
from runnerhub.api.schemas import ActivityOut, MinuteOut, PoolOut, SummaryOut
from runnerhub.domain.capacity import desired_capacity
from runnerhub.store import jobs as job_store
from runnerhub.store import runners as runner_store

router = APIRouter(tags=["pools"])


@router.get("/pools", response_model=list[PoolOut], summary="Pools and their capacity")
async def list_pools(ctx: Context, _: Reader) -> list[PoolOut]:
    async with ctx.db.connection() as conn:
        queued = await job_store.queued_by_pool(conn)
        counts = await runner_store.counts(conn)
    live: dict[str, int] = {}
    for (pool, state), n in counts.items():
        if state in runner_store.LIVE_STATES:
            live[pool] = live.get(pool, 0) + n
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
async def summary(ctx: Context, _: Reader) -> SummaryOut:
    async with ctx.db.connection() as conn:
        jobs = await job_store.counts_by_state(conn)
        oldest = await job_store.oldest_queued_at(conn)
        counts = await runner_store.counts(conn)
    runners: dict[str, int] = {}
    for (_pool, state), n in counts.items():
        runners[state] = runners.get(state, 0) + n
    age = (datetime.now().astimezone() - oldest).total_seconds() if oldest else 0.0
    return SummaryOut(jobs=jobs, runners=runners, oldest_queued_age_s=max(0.0, age))


@router.get(
    "/activity",
    response_model=ActivityOut,
    summary="Per minute: deliveries, jobs queued and started, queue wait p50/p99, replica lag",
)
async def activity(
    ctx: Context,
    _: Reader,
    minutes: int = Query(30, ge=1, le=1440, description="how many minutes back, this one too"),
) -> ActivityOut:
    async with ctx.db.connection() as conn:
        rows = await job_store.activity(conn, minutes)
    return ActivityOut(minutes=[MinuteOut.model_validate(r) for r in rows])
