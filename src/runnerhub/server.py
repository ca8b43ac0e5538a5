"""Serve a node with uvicorn (uvloop + httptools when available: the intake is the hot path)."""

from __future__ import annotations

import importlib.util

import uvicorn

from runnerhub import logs
from runnerhub.config import Settings
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
        timeout_graceful_shutdown=10,
        lifespan="on",
    )


def serve(settings: Settings) -> None:
    logs.setup(settings.log.level, settings.log.format)
    node = Node(settings)
    uvicorn.Server(uvicorn_config(node, settings)).run()
