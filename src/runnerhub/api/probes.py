"""What monitors and load balancers ask without a token: `/livez`, `/readyz`, `/health`,
`/metrics`. Every answer comes from memory or under a short deadline (I8)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runnerhub import metrics
from runnerhub.api.deps import Context, authenticate
from runnerhub.context import NodeContext
from runnerhub.intake.webhook import WebhookIntake
from runnerhub.store import jobs as job_store
from runnerhub.store import runners as runner_store
from runnerhub.store.db import UNAVAILABLE_OR_SLOW

log = structlog.get_logger("runnerhub.api")

router = APIRouter(tags=["probes"])


async def get_intake(request: Request) -> WebhookIntake:
    intake: WebhookIntake = request.app.state.intake
    return intake


Intake = Annotated[WebhookIntake, Depends(get_intake)]


@router.get("/livez", summary="The process serves")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="This node can accept deliveries")
async def readyz(request: Request, ctx: Context, intake: Intake) -> JSONResponse:
    """Ready or not for anyone (load balancers); why, with a read token (the detail names
    addresses and errors)."""
    db_ok = await _database_ok(ctx)
    spool = intake.spool.stats()
    # Ready while deliveries can be made durable: in PostgreSQL, or else in the spool. A
    # standby region's node takes none.
    standby = ctx.settings.node.standby
    ready = (db_ok or spool.writable) and not ctx.state.draining and not standby
    replication = ctx.state.replication
    body = {
        "status": "ok" if ready else "standby" if standby else "unavailable",
        "database": "ok" if db_ok else "unreachable",
        "spool": {
            "writable": spool.writable,
            "entries": spool.entries,
            "oldest_age_s": round(spool.oldest_age_s, 3),
        },
        "draining": ctx.state.draining,
        "leader": ctx.leadership.is_leader,
        # Informational: a lagging replica does not make this node unready.
        "replication": {
            "replicas": len(replication.replicas),
            "synchronous": replication.synchronous,
            "lagging": replication.lagging,
        }
        if replication
        else None,
        # Informational too: losing Redis only makes things slower (I7).
        "cache": {"configured": ctx.settings.redis.enabled, **ctx.cache.status()},
    }
    header = request.headers.get("authorization")
    if header is None:
        body = {"status": body["status"]}
    else:
        await authenticate(request, "read")  # a wrong token is a 401, not a silent summary
    return JSONResponse(body, status_code=200 if ready else 503)


async def _database_ok(ctx: NodeContext) -> bool:
    """From the background check when there is one (answers at once, I8); else ask."""
    if ctx.health is None:
        return await ctx.database_ok(timeout_s=0.5)
    result = ctx.health.result("database")
    return result is not None and result.status == "ok"


@router.get("/health", summary="Every dependency's health, from background checks")
async def health(request: Request, ctx: Context) -> JSONResponse:
    """Each check's status, latency and age for anyone (monitors, load balancers); its
    detail and message (addresses, members, rate limits) only with a read token."""
    if ctx.health is None:
        return JSONResponse({"status": "failing", "detail": "no health monitor"}, 503)
    report = ctx.health.snapshot()
    body: dict[str, Any] = {"node": ctx.settings.node.id, **report.as_json()}
    header = request.headers.get("authorization")
    if header is None:
        for check in body["checks"].values():
            del check["detail"], check["message"]
    else:
        await authenticate(request, "read")  # a wrong token is a 401, not a silent summary
    return JSONResponse(body, status_code=503 if report.status == "failing" else 200)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus(ctx: Context) -> Response:
    try:
        # Short: a scrape must not hang on a hung database (I8).
        await asyncio.wait_for(refresh_gauges(ctx), timeout=0.5)
    except UNAVAILABLE_OR_SLOW:
        log.warning("metrics: database gauges not refreshed")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def refresh_gauges(ctx: NodeContext) -> None:
    """The gauges that describe the database: jobs by state, oldest queued, runners."""
    async with ctx.db.connection(2.0) as conn:
        states = await job_store.counts_by_state(conn)
        oldest = await job_store.oldest_queued_at(conn)
        runner_counts = await runner_store.counts(conn)
    for state in ("waiting", "queued", "in_progress", "completed"):
        metrics.JOBS.labels(state).set(states.get(state, 0))
    age = (datetime.now().astimezone() - oldest).total_seconds() if oldest else 0.0
    metrics.OLDEST_QUEUED.set(max(0.0, age))
    metrics.RUNNERS.clear()
    for (pool, state), n in runner_counts.items():
        metrics.RUNNERS.labels(pool, state).set(n)
