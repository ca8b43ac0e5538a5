"""Every node's part in the cluster's membership: a heartbeat row in PostgreSQL that says it
is alive (the leader's node watch reads it), and the drain flag an operator set on it."""

from __future__ import annotations

import asyncio
import contextlib
import os

import structlog

from runnerhub.context import NodeContext
from runnerhub.store import nodes
from runnerhub.store.db import UNAVAILABLE

log = structlog.get_logger("runnerhub.node")


async def heartbeat(ctx: NodeContext, stop: asyncio.Event) -> None:
    """Tell the cluster this node is alive, every `ha.heartbeat_s`, and learn whether it
    is to drain (then it stops taking traffic and leadership)."""
    node = ctx.settings.node
    while not stop.is_set():
        role = "leader" if ctx.leadership.is_leader else "follower"
        try:
            async with ctx.db.connection(2.0) as conn:
                draining = await nodes.heartbeat(conn, node.id, node.url, os.getpid(), role)
            if draining and not ctx.state.draining:
                log.warning("draining: no more traffic or leadership for this node")
            ctx.state.draining = draining
            if draining:
                ctx.leadership.request_resign("draining")
        except UNAVAILABLE as exc:
            log.warning("heartbeat failed", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=ctx.settings.ha.heartbeat_s)
