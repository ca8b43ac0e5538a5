"""Serve a node with uvicorn (uvloop + httptools when available: the intake is the hot path)."""

from __future__ import annotations

import gc
import importlib.util
import os
import socket
from types import FrameType

import uvicorn

from runnerhub import logs
from runnerhub.config import Settings
from runnerhub.health import sd_notify
from runnerhub.node import Node


def uvicorn_config(node: Node, settings: Settings) -> uvicorn.Config:
    fast = importlib.util.find_spec("uvloop") is not None
    return uvicorn.Config(
        node.app,
        host=settings.node.host,
        port=settings.node.port,
        loop="uvloop" if fast else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_config=None,
        access_log=False,
        # Nothing here reads X-Forwarded-*: skip the middleware that would, and the headers
        # nobody needs, on every request (intake is CPU-bound on small machines).
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
        limit_concurrency=settings.node.max_connections,
        timeout_keep_alive=5,
    )


class NodeServer(uvicorn.Server):
    """uvicorn, but a stop signal makes the leader hand over *first*: the successor takes
    office while this node still finishes its requests and shuts down. Under systemd
    (Type=notify) it says when it is ready and when it begins to stop."""

    def __init__(self, config: uvicorn.Config, node: Node) -> None:
        super().__init__(config)
        self.node = node

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # The node has started (lifespan) and listens: ready. Not "the database answers":
        # a node without it still takes deliveries into its spool and answers /health, and
        # a start that waited for PostgreSQL would be killed by systemd during an outage.
        if self.started and not self.should_exit:
            s = self.node.settings.node
            sd_notify.notify(sd_notify.READY, sd_notify.status(f"node {s.id} serving on {s.url}"))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        sd_notify.notify(sd_notify.STOPPING, sd_notify.status("stopping: handing over, draining"))
        self.node.hand_over_soon()
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    # Whatever the node creates (spool segments, runner records, logs) is its own alone.
    os.umask(0o077)
    logs.setup(settings.log.level, settings.log.format)
    node = Node(settings)
    # Everything imported and built so far lives as long as the process: keep it out of the
    # garbage collector's full passes, which otherwise show up as latency spikes in intake.
    gc.collect()
    gc.freeze()
    NodeServer(uvicorn_config(node, settings), node).run()
