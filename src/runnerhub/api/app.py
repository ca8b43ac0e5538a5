"""The HTTP face of a node: webhooks, REST API, probes, OpenAPI (FastAPI).

FastAPI on Starlette gives typed routes and an OpenAPI description for free; the webhook
route is a plain Starlette endpoint because it must see the raw bytes (and is the hot path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from runnerhub import __version__
from runnerhub.aio import forget
from runnerhub.api import probes
from runnerhub.api.auth import FailedAuthLimit, Found, Lookup, Principal, Role, TokenAuth
from runnerhub.api.deps import Reader
from runnerhub.api.routers import api_v1
from runnerhub.context import NodeContext
from runnerhub.intake.webhook import WebhookIntake
from runnerhub.store import tokens
from runnerhub.store.db import UNAVAILABLE
from runnerhub.web.router import dashboard_router

log = structlog.get_logger("runnerhub.api")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
FIRST = asyncio.FIRST_COMPLETED


def _holds_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


class RunnerHubApp:
    """The node's ASGI app: webhooks take a short path of their own, the rest is FastAPI.

    Deliveries are the hot path; FastAPI's middleware stack and router cost a good share
    of the CPU per request on a small machine, and the endpoint needs none of it.

    Every other request starts its answer within `answer_within_s` or gets a 503 saying so:
    a hung database (a frozen primary answers nothing, and its TCP connections stay open)
    must not hold a client for longer. The request itself is cancelled in the background,
    which makes psycopg drop its connection to the hung server.
    """

    WEBHOOK_PATH = "/webhooks/github"

    def __init__(
        self,
        api: FastAPI,
        intake: WebhookIntake,
        standby: bool = False,
        answer_within_s: float = 1.0,
    ) -> None:
        self.api = api
        self.intake = intake
        self.standby = standby  # a standby region's node takes no webhooks
        self.answer_within_s = answer_within_s

    @property
    def state(self) -> Any:
        return self.api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.WEBHOOK_PATH:
            if scope["method"] != "POST":
                response: Response = JSONResponse(
                    {"detail": "use POST"}, 405, headers={"Allow": "POST"}
                )
            elif self.standby:
                # Nothing stored: the active region takes deliveries (its reconciler
                # redelivers whatever was sent here by mistake).
                response = JSONResponse(
                    {"outcome": "standby", "message": "this node stands by for another region"},
                    503,
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
        if scope["type"] == "http":
            if _holds_nul(scope):
                # PostgreSQL's text cannot hold NUL: said here, not as a 500 from a query.
                bad = JSONResponse({"detail": "the request's path or query holds a NUL"}, 400)
                await bad(scope, receive, send)
                return
            await self._within_deadline(scope, receive, send)
            return
        await self.api(scope, receive, send)

    async def _within_deadline(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The API's answer, if it starts within `answer_within_s`; else a 503 (a stream,
        once started, runs on)."""
        started = asyncio.Event()
        gave_up = False

        async def watched(message: Message) -> None:
            if gave_up:
                return  # the 503 went out: nothing of the late answer follows it
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        answering = asyncio.ensure_future(self.api(scope, receive, watched))
        start = asyncio.ensure_future(started.wait())
        await asyncio.wait({answering, start}, timeout=self.answer_within_s, return_when=FIRST)
        start.cancel()
        if started.is_set() or answering.done():
            await answering
            return
        gave_up = True
        answering.cancel()
        answering.add_done_callback(forget)
        log.warning("no answer in time", path=scope["path"], within_s=self.answer_within_s)
        late = JSONResponse(
            {
                "detail": f"no answer within {self.answer_within_s:g}s: the database is slow "
                "or unreachable; try again"
            },
            503,
            headers={"Retry-After": "1"},
        )
        await late(scope, receive, send)


def stored_tokens(ctx: NodeContext) -> Lookup:
    """Tokens made with `runnerhub token create`, looked up by hash in PostgreSQL (a
    revocation holds at once on every node: there is no cache to outlive it)."""

    async def lookup(token: str) -> Found | None:
        if not tokens.is_stored_token(token):
            return None  # not one of ours: no query for what cannot be there
        async with ctx.db.connection() as conn:
            row = await tokens.find(conn, token)
        if row is None or row.role not in ("read", "admin"):
            return None
        return Found(Principal(row.name, cast(Role, row.role)), row.expires_at)

    return lookup


def create_app(
    ctx: NodeContext, intake: WebhookIntake, lifespan: Lifespan | None = None
) -> RunnerHubApp:
    public = ctx.settings.api.public_docs
    app = FastAPI(
        title="RunnerHub",
        version=__version__,
        description="Control plane for self-hosted GitHub Actions runners.",
        lifespan=lifespan,
        # Without public docs: no browsable pages, and the description behind a read token.
        docs_url="/docs" if public else None,
        redoc_url="/redoc" if public else None,
        openapi_url="/openapi.json" if public else None,
    )
    # What the routes' dependencies (`api.deps`) hand them.
    app.state.context = ctx
    app.state.auth = TokenAuth(
        ctx.settings.api_tokens,
        stored=stored_tokens(ctx),
        limit=FailedAuthLimit(ctx.settings.api.auth_failures_per_minute),
    )
    app.state.intake = intake
    app.include_router(api_v1())
    app.include_router(probes.router)
    app.include_router(dashboard_router())  # `/` and `/ui/`: the dashboard (docs/dashboard.md)
    if not public:

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(_: Reader) -> JSONResponse:
            return JSONResponse(app.openapi())

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", path=request.url.path, error=type(exc).__name__)
        return JSONResponse({"detail": "the database is unavailable; try again"}, 503)

    for exc_type in UNAVAILABLE:
        app.add_exception_handler(exc_type, unavailable)

    @app.exception_handler(psycopg.DataError)
    async def bad_value(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # A value the database cannot take (out of range, not valid text): the request's.
        log.warning("request value refused by the database", path=request.url.path, error=str(exc))
        return JSONResponse({"detail": "a value in the request is out of range or invalid"}, 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback; the client gets no stack trace.
        return JSONResponse({"detail": "internal error; see the node's log"}, 500)

    return RunnerHubApp(
        app,
        intake,
        standby=ctx.settings.node.standby,
        answer_within_s=ctx.settings.api.answer_within_s,
    )
