"""`/api/v1/incidents`: failovers and incidents, newest first; an operator acknowledges
one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from runnerhub.api.deps import BIGINT_MAX, Admin, Context, Reader, audit, cursor_in, cursor_out
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


@router.post(
    "/incidents/{incident_id}/acknowledge",
    response_model=IncidentOut,
    summary="Acknowledge an incident (admin; audited)",
)
async def acknowledge(
    ctx: Context, who: Admin, incident_id: Annotated[int, Path(ge=0, le=BIGINT_MAX)]
) -> IncidentOut:
    async with ctx.db.connection() as conn, conn.transaction():
        row = await incident_store.acknowledge(conn, incident_id, who.name)
        if row is None:
            raise HTTPException(404, f"no incident with id {incident_id}")
        await audit(
            conn,
            ctx,
            who,
            "incident_acknowledged",
            f"incident:{incident_id}",
            component=row.component,
            acknowledged_at=row.acknowledged_at,
        )
    return IncidentOut.model_validate(row)
