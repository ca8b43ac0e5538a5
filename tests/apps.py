"""A node's HTTP app for in-process tests: the API and intake over a given context, without
the node's loops (`runnerhub.node.Node` builds the real one)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from runnerhub.api.app import RunnerHubApp, create_app
from runnerhub.context import NodeContext
from runnerhub.intake.webhook import WebhookIntake


def node_app(ctx: NodeContext) -> RunnerHubApp:
    return create_app(ctx, WebhookIntake(ctx.settings, ctx.db))


@contextlib.asynccontextmanager
async def in_process_client(ctx: NodeContext) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to `node_app(ctx)` in this process (no socket)."""
    app = node_app(ctx)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://node"
    ) as c:
        yield c
    await app.state.intake.batcher.close()
