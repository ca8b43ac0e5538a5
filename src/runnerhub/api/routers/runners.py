"""`/api/v1/runners`: every runner RunnerHub provisioned, newest first."""

from __future__ import annotations

from fastapi import APIRouter, Query

from runnerhub.api.deps import Context, Reader, cursor_in, cursor_out
from runnerhub.api.schemas import RunnerOut, RunnerPage, RunnerStateParam
from runnerhub.store import runners as runner_store

router = APIRouter(tags=["runners"])


@router.get("/runners", response_model=RunnerPage, summary="List runners, newest first")
async def list_runners(
    ctx: Context,
    _: Reader,
    state: RunnerStateParam | None = None,
    pool: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = None,
) -> RunnerPage:
    async with ctx.db.connection() as conn:
        rows = await runner_store.list_runners(conn, state, pool, limit, cursor_in(cursor))
    return RunnerPage(
        items=[RunnerOut.model_validate(r) for r in rows], next_cursor=cursor_out(rows, limit)
    )
