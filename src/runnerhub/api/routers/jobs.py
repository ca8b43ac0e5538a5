"""`/api/v1/jobs`: the jobs RunnerHub knows, newest first, with why a queued one waits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from runnerhub.api.deps import BIGINT_MAX, Admin, Context, Reader, audit, cursor_in, cursor_out
from runnerhub.api.schemas import (
    DeliveryOut,
    EventOut,
    JobHistoryOut,
    JobOut,
    JobPage,
    JobStateParam,
    RetryOut,
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


@router.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    response_model=RetryOut,
    summary="Retry a queued job's failed provisioning now (admin; audited)",
)
async def retry_provisioning(
    ctx: Context, who: Admin, job_id: Annotated[int, Path(ge=0, le=BIGINT_MAX)]
) -> RetryOut:
    """For when the cause is fixed (a backend back, a quota raised): the leader's scheduler
    tries at once instead of at the backed-off time. Still one runner per job: the same
    runner is retried, by name."""
    async with ctx.db.connection() as conn, conn.transaction():
        row = await job_store.get_job(conn, job_id)
        if row is None:
            raise HTTPException(404, f"no job with id {job_id}")
        if row.state != "queued":
            raise HTTPException(409, f"job {job_id} is {row.state}: it needs no runner")
        names = await runner_store.retry_now(conn, job_id)
        if not names:
            why = row.waiting_reason or "no runner is being provisioned for it"
            raise HTTPException(409, f"job {job_id} has no failed provisioning to retry ({why})")
        await audit(conn, ctx, who, "provisioning_retried", f"job:{job_id}", runners=names)
    return RetryOut(job_id=job_id, runners=names)
