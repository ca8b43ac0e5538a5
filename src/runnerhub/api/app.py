"""The HTTP face of a node: webhooks, REST API, probes, OpenAPI (FastAPI).

FastAPI on Starlette gives typed routes and an OpenAPI description for free; the webhook
route is a plain Starlette endpoint because it must see the raw bytes (and is the hot path).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from runnerhub import __version__
from runnerhub.api import probes
from runnerhub.api.auth import TokenAuth
from runnerhub.api.deps import Reader
from runnerhub.api.routers import api_v1
from runnerhub.context import NodeContext
from runnerhub.intake.webhook import WebhookIntake
from runnerhub.store.db import UNAVAILABLE

log = structlog.get_logger("runnerhub.api")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class RunnerHubApp:
    """The node's ASGI app: webhooks take a short path of their own, the rest is FastAPI.

    Deliveries are the hot path; FastAPI's middleware stack and router cost a good share
    of the CPU per request on a small machine, and the endpoint needs none of it.
    """

    WEBHOOK_PATH = "/webhooks/github"

    def __init__(self, api: FastAPI, intake: WebhookIntake, standby: bool = False) -> None:
        self.api = api
        self.intake = intake
        self.standby = standby  # a standby region's node takes no webhooks

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
        await self.api(scope, receive, send)


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
    app.state.auth = TokenAuth(ctx.settings.api_tokens)
    app.state.intake = intake
    app.include_router(api_v1())
    app.include_router(probes.router)
    if not public:

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(_: Reader) -> JSONResponse:
            return JSONResponse(app.openapi())

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", path=request.url.path, error=type(exc).__name__)
        return JSONResponse({"detail": "the database is unavailable; try again"}, 503)

    for exc_type in UNAVAILABLE:
        app.add_exception_handler(exc_type, unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback; the client gets no stack trace.
        return JSONResponse({"detail": "internal error; see the node's log"}, 500)

    return RunnerHubApp(app, intake, standby=ctx.settings.node.standby)
