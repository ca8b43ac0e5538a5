"""`/api/v1/jobs`: the jobs RunnerHub knows, newest first, with why a queued one waits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from runnerhub.api.deps import BIGINT_MAX, Context, Reader, cursor_in, cursor_out
from runnerhub.api.schemas import (
    DeliveryOut,
    EventOut,
    JobHistoryOut,
    JobOut,
    JobPage,
    JobStateParam,
    RunnerOut,
)
from runnerhub.store import deliveries as delivery_store
from runnerhub.store import events as event_store
from runnerhub.store import jobs as job_store
from runnerhub.store import runners as runner_store

router = APIRouter(tags=["jobs"])


@router.get("/jobs", response_model=JobPage, summary="List jobs, newest first")
async def list_jobs(
    ctx: Context,
    _: Reader,
    state: JobStateParam | None = None,
    repository: str | None = None,
    pool: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = None,
) -> JobPage:
    flt = job_store.JobFilter(state, repository, pool)
    async with ctx.db.connection() as conn:
        rows = await job_store.list_jobs(conn, flt, limit, cursor_in(cursor))
    return JobPage(
        items=[JobOut.model_validate(r) for r in rows], next_cursor=cursor_out(rows, limit)
    )


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job")
async def get_job(
    ctx: Context, _: Reader, job_id: Annotated[int, Path(ge=0, le=BIGINT_MAX)]
) -> JobOut:
    async with ctx.db.connection() as conn:
        row = await job_store.get_job(conn, job_id)
    if row is None:
        raise HTTPException(404, f"no job with id {job_id}")
    return JobOut.model_validate(row)


# The newest this many of each of a job's deliveries and events (a job has a handful).
HISTORY_LIMIT = 500


@router.get(
    "/jobs/{job_id}/history",
    response_model=JobHistoryOut,
    summary="One job with its deliveries, runners and audit events",
)
async def job_history(
    ctx: Context, _: Reader, job_id: Annotated[int, Path(ge=0, le=BIGINT_MAX)]
) -> JobHistoryOut:
    async with ctx.db.connection() as conn:
        row = await job_store.get_job(conn, job_id)
        if row is None:
            raise HTTPException(404, f"no job with id {job_id}")
        deliveries = await delivery_store.for_job(conn, job_id, HISTORY_LIMIT)
        runners = await runner_store.for_job(conn, job_id)
        subjects = [f"job:{job_id}", *(f"runner:{r.name}" for r in runners)]
        events = await event_store.for_subjects(conn, subjects, HISTORY_LIMIT)
    return JobHistoryOut(
        job=JobOut.model_validate(row),
        deliveries=[DeliveryOut.model_validate(d) for d in deliveries],
        runners=[RunnerOut.model_validate(r) for r in runners],
        events=[EventOut.model_validate(e) for e in events],
    )
