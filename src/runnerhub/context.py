"""What the API and the control loops of one node share: settings, the database, wake-ups."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from runnerhub.config import Settings
from runnerhub.store.db import UNAVAILABLE_OR_SLOW, Conn, Pool


@dataclass
class NodeContext:
    settings: Settings
    db: Pool
    started_at: datetime = field(default_factory=lambda: datetime.now().astimezone())
    reconcile_wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def public_url(self) -> str | None:
        node = self.settings.node
        return node.public_url or f"http://{node.host}:{node.port}"

    async def database_ok(self, timeout_s: float = 1.0) -> bool:
        """Can this node write to PostgreSQL right now? Answers within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s), self.db.connection(timeout_s) as conn:
                await conn.execute("SELECT 1")
            return True
        except UNAVAILABLE_OR_SLOW:
            return False

    def wake_reconciler(self) -> None:
        self.reconcile_wakeup.set()

    @asynccontextmanager
    async def control_tx(self) -> AsyncIterator[Conn]:
        """A transaction for a control-loop write. Every write a control loop makes goes
        through here, so that fencing (the leader's epoch check) has one place to live."""
        async with self.db.connection() as conn, conn.transaction():
            yield conn
