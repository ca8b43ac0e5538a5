"""One RunnerHub node: the HTTP app (intake, API, health) plus the control loops.

Every node serves webhooks and the API. The control loops (scheduler, reconciler, janitor)
run here while this node may act; with one node that is always. The next step puts them
behind leader election, which is why they start and stop as a group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import structlog
from fastapi import FastAPI

from runnerhub.api.app import RunnerHubApp, create_app
from runnerhub.backends.base import RunnerBackend
from runnerhub.backends.process import ProcessBackend
from runnerhub.config import Settings
from runnerhub.context import NodeContext
from runnerhub.control.janitor import Janitor
from runnerhub.control.listener import listen
from runnerhub.control.loop import ControlLoop
from runnerhub.control.reconciler import Reconciler
from runnerhub.control.scheduler import Scheduler
from runnerhub.github.client import GitHubClient
from runnerhub.store.db import UNAVAILABLE, make_pool
from runnerhub.store.migrate import migrate

log = structlog.get_logger("runnerhub.node")


def make_backends(settings: Settings) -> dict[str, RunnerBackend]:
    process_pools = {p.name: p.process for p in settings.pools if p.process is not None}
    backends: dict[str, RunnerBackend] = {}
    if process_pools:
        backends["process"] = ProcessBackend(settings.node.state_dir / "process", process_pools)
    return backends


class Node:
    def __init__(self, settings: Settings, run_control_loops: bool = True) -> None:
        self.settings = settings
        settings.node.state_dir.mkdir(parents=True, exist_ok=True)
        self.db = make_pool(settings.database)
        self.ctx = NodeContext(settings, self.db)
        self.github = GitHubClient.from_settings(settings.github)
        self.backends = make_backends(settings)
        self.scheduler = Scheduler(self.ctx, self.github, self.backends)
        self.janitor = Janitor(self.ctx, self.github, self.backends)
        self.reconciler = Reconciler(self.ctx, self.github, self.backends)
        self.loops: list[ControlLoop] = [self.scheduler, self.janitor, self.reconciler]
        self.run_control_loops = run_control_loops
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.app: RunnerHubApp = create_app(self.ctx, lifespan=self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        await self.db.open(wait=False)
        self._stop.clear()
        self._tasks.append(asyncio.create_task(self._run(), name="runnerhub-control"))
        log.info("node started", node=self.settings.node.id, url=self.ctx.public_url)

    async def _migrate_when_reachable(self) -> None:
        dsn = self.settings.database.dsn.get_secret_value()
        while not self._stop.is_set():
            try:
                applied = await migrate(dsn)
                if applied:
                    log.info("database migrated", applied=[m.version for m in applied])
                return
            except UNAVAILABLE as exc:
                log.warning("database not reachable for migrations; retrying", error=str(exc))
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=2.0)

    async def _run(self) -> None:
        await self._migrate_when_reachable()
        if not self.run_control_loops or self._stop.is_set():
            return
        dsn = self.settings.database.dsn.get_secret_value()
        loops = [asyncio.create_task(loop.run(self._stop), name=loop.name) for loop in self.loops]
        loops.append(asyncio.create_task(listen(dsn, self.scheduler.wake, self._stop)))
        await asyncio.gather(*loops)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=15)
            except TimeoutError:
                task.cancel()
        await self.scheduler.drain()
        await self.app.state.intake.batcher.close()
        await self.github.aclose()
        await self.db.close()
        log.info("node stopped", node=self.settings.node.id)
