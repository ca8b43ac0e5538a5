"""The HTTP face of a node: webhooks, REST API, health, metrics, OpenAPI (FastAPI).

FastAPI on Starlette gives typed routes and an OpenAPI description for free; the webhook
route is a plain Starlette endpoint because it must see the raw bytes (and is the hot path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

from runnerhub import __version__, metrics
from runnerhub.api.auth import TokenAuth
from runnerhub.api.routes import build_router
from runnerhub.context import NodeContext
from runnerhub.intake.webhook import WebhookIntake
from runnerhub.store import jobs as job_store
from runnerhub.store import runners as runner_store
from runnerhub.store.db import UNAVAILABLE, UNAVAILABLE_OR_SLOW

log = structlog.get_logger("runnerhub.api")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


async def refresh_gauges(ctx: NodeContext) -> None:
    async with ctx.db.connection(2.0) as conn:
        states = await job_store.counts_by_state(conn)
        oldest = await job_store.oldest_queued_at(conn)
        runner_counts = await runner_store.counts(conn)
    for state in ("waiting", "queued", "in_progress", "completed"):
        metrics.JOBS.labels(state).set(states.get(state, 0))
    age = (datetime.now().astimezone() - oldest).total_seconds() if oldest else 0.0
    metrics.OLDEST_QUEUED.set(max(0.0, age))
    metrics.RUNNERS.clear()
    for row in runner_counts:
        metrics.RUNNERS.labels(row["pool"], row["state"]).set(row["n"])


class RunnerHubApp:
    """The node's ASGI app: webhooks take a short path of their own, the rest is FastAPI.

    Deliveries are the hot path; FastAPI's middleware stack and router cost a good share
    of the CPU per request on a small machine, and the endpoint needs none of it.
    """

    WEBHOOK_PATH = "/webhooks/github"

    def __init__(self, api: FastAPI, intake: WebhookIntake) -> None:
        self.api = api
        self.intake = intake

    @property
    def state(self) -> Any:
        return self.api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.WEBHOOK_PATH:
            if scope["method"] != "POST":
                response: Response = JSONResponse(
                    {"detail": "use POST"}, 405, headers={"Allow": "POST"}
                )
            else:
                try:
                    response = await self.intake.endpoint(Request(scope, receive))
                except Exception:
                    log.exception("webhook intake failed")
                    response = JSONResponse(
                        {"outcome": "error", "message": "internal error; see the node's log"}, 500
                    )
            await response(scope, receive, send)
            return
        await self.api(scope, receive, send)


def create_app(ctx: NodeContext, lifespan: Lifespan | None = None) -> RunnerHubApp:
    app = FastAPI(
        title="RunnerHub",
        version=__version__,
        description="Control plane for self-hosted GitHub Actions runners.",
        lifespan=lifespan,
    )
    intake = WebhookIntake(ctx.settings, ctx.db)
    app.state.intake = intake
    auth = TokenAuth(ctx.settings.api_tokens)
    app.include_router(build_router(ctx, auth))

    @app.get("/livez", summary="The process serves")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="This node can accept deliveries")
    async def readyz() -> JSONResponse:
        db_ok = await _database_ok()
        spool = intake.spool.stats()
        # Ready while deliveries can be made durable: in PostgreSQL, or else in the spool.
        ready = (db_ok or spool.writable) and not ctx.draining
        body = {
            "status": "ok" if ready else "unavailable",
            "database": "ok" if db_ok else "unreachable",
            "spool": {
                "writable": spool.writable,
                "entries": spool.entries,
                "oldest_age_s": round(spool.oldest_age_s, 3),
            },
            "draining": ctx.draining,
            "leader": ctx.leadership.is_leader,
            # Informational: a lagging replica does not make this node unready.
            "replication": {
                "replicas": len(ctx.replication.replicas),
                "synchronous": ctx.replication.synchronous,
                "lagging": ctx.replication.lagging,
            }
            if ctx.replication
            else None,
            # Informational too: losing Redis only makes things slower (I7).
            "cache": {"configured": ctx.settings.redis.enabled, **ctx.cache.status()},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _database_ok() -> bool:
        """From the background check when there is one (answers at once, I8); else ask."""
        if ctx.health is None:
            return await ctx.database_ok(timeout_s=0.5)
        result = ctx.health.result("database")
        return result is not None and result.status == "ok"

    @app.get("/health", summary="Every dependency's health, from background checks")
    async def health(request: Request) -> JSONResponse:
        """Each check's status, latency and age for anyone (monitors, load balancers); its
        detail and message (addresses, members, rate limits) only with a read token."""
        if ctx.health is None:
            return JSONResponse({"status": "failing", "detail": "no health monitor"}, 503)
        report = ctx.health.snapshot()
        body = {"node": ctx.settings.node.id, **report.as_json()}
        header = request.headers.get("authorization")
        if header is None:
            for check in body["checks"].values():
                del check["detail"], check["message"]
        else:
            auth.identify(header)  # a wrong token is a 401, not a silent summary
        return JSONResponse(body, status_code=503 if report.status == "failing" else 200)

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus() -> Response:
        try:
            # Short: a scrape must not hang on a hung database (I8).
            await asyncio.wait_for(refresh_gauges(ctx), timeout=0.5)
        except UNAVAILABLE_OR_SLOW:
            log.warning("metrics: database gauges not refreshed")
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", path=request.url.path, error=type(exc).__name__)
        return JSONResponse({"detail": "the database is unavailable; try again"}, 503)

    for exc_type in UNAVAILABLE:
        app.add_exception_handler(exc_type, unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback; the client gets no stack trace.
        return JSONResponse({"detail": "internal error; see the node's log"}, 500)

    return RunnerHubApp(app, intake)
