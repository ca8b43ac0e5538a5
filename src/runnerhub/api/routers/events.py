"""`/api/v1/events`: the audit trail (every job, runner and leadership change), as a list
and live as Server-Sent Events from any node."""

from __future__ import annotations

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import StreamingResponse

from runnerhub.api.deps import BIGINT_MAX, Context, Reader, cursor_in, cursor_out
from runnerhub.api.schemas import EventOut, EventPage
from runnerhub.api.sse import event_stream
from runnerhub.intake.webhook import header_int
from runnerhub.store import events as event_store

router = APIRouter(tags=["events"])


@router.get("/events", response_model=EventPage, summary="The audit trail, newest first")
async def list_events(
    ctx: Context,
    _: Reader,
    kind: list[str] = Query([], description="kind prefixes, e.g. job. or runner.exited"),
    subject: str | None = Query(None, description="e.g. job:42 or runner:rh-linux-42-1"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = None,
) -> EventPage:
    async with ctx.db.connection() as conn:
        rows = await event_store.list_events(conn, kind, subject, limit, cursor_in(cursor))
    return EventPage(
        items=[EventOut.model_validate(r) for r in rows], next_cursor=cursor_out(rows, limit)
    )


@router.get(
    "/events/stream",
    summary="Live events (Server-Sent Events), from any node",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_events(
    ctx: Context,
    _: Reader,
    kind: list[str] = Query([], description="kind prefixes, e.g. job. or leader."),
    after: int | None = Query(
        None, ge=0, le=BIGINT_MAX, description="replay history after this id"
    ),
    last_event_id: str | None = Header(None),
) -> StreamingResponse:
    if ctx.live is None:
        raise HTTPException(503, "live events are not running on this node")
    if after is None and last_event_id is not None:
        after = header_int(last_event_id)
        if after is None:
            raise HTTPException(400, "Last-Event-ID must be an event id")
    return StreamingResponse(
        event_stream(ctx.db, ctx.live, tuple(kind), after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
