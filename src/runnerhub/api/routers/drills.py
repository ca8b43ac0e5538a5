"""`/api/v1/dr/drills`: the disaster-recovery drills run against this cluster and what each
measured (recorded by `runnerhub dr drill` in the active region's database)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from runnerhub.api.deps import Context, Reader
from runnerhub.api.schemas import DrillOut, DrillPage
from runnerhub.store import drills as drill_store

router = APIRouter(tags=["disaster recovery"])


@router.get("/dr/drills", response_model=DrillPage, summary="DR drills, newest first")
async def list_drills(ctx: Context, _: Reader, limit: int = Query(10, ge=1, le=100)) -> DrillPage:
    async with ctx.db.connection() as conn:
        rows = await drill_store.recent(conn, limit)
    return DrillPage(items=[DrillOut.model_validate(r) for r in rows])
