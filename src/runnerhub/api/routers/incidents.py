"""`/api/v1/incidents`: failovers and incidents, newest first."""

from __future__ import annotations

from fastapi import APIRouter, Query

from runnerhub.api.deps import Context, Reader, cursor_in, cursor_out
from runnerhub.api.schemas import IncidentOut, IncidentPage
from runnerhub.store import incidents as incident_store

router = APIRouter(tags=["incidents"])


@router.get(
    "/incidents", response_model=IncidentPage, summary="Failovers and incidents, newest first"
)
async def list_incidents(
    ctx: Context,
    _: Reader,
    component: str | None = Query(
        None, description="postgres, etcd, redis, github, leader, node, breaker..."
    ),
    open: bool = Query(False, description="only those not over yet"),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = None,
) -> IncidentPage:
    async with ctx.db.connection() as conn:
        rows = await incident_store.list_incidents(conn, component, open, limit, cursor_in(cursor))
    return IncidentPage(
        items=[IncidentOut.model_validate(r) for r in rows], next_cursor=cursor_out(rows, limit)
    )
