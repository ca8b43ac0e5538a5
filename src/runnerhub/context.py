"""What the API and the control loops of one node share: settings, the database, wake-ups."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from runnerhub import metrics
from runnerhub.cache import Cache, NullCache
from runnerhub.config import Settings
from runnerhub.ha.dcs import LeaderRecord
from runnerhub.health.monitor import HealthMonitor
from runnerhub.live.hub import LiveHub
from runnerhub.store.db import UNAVAILABLE_OR_SLOW, Conn, Pool
from runnerhub.store.fencing import StaleLeader, check_epoch
from runnerhub.store.replication import ReplicationStatus


class Leadership(Protocol):
    """What the control loops need to know about this node's leadership."""

    @property
    def epoch(self) -> int | None: ...

    @property
    def is_leader(self) -> bool: ...

    def may_act(self) -> bool: ...

    def request_resign(self, reason: str) -> None: ...

    async def request_handoff(self, target: str | None) -> LeaderRecord: ...


class NoElection(Exception):
    """Asked for something only a node with leader election can do."""


class SoleNode:
    """No election configured: the one node always leads, with no epoch to check."""

    epoch: int | None = None
    is_leader = True

    def may_act(self) -> bool:
        return True

    def request_resign(self, reason: str) -> None:
        return None

    async def request_handoff(self, target: str | None) -> LeaderRecord:
        raise NoElection("this node runs without leader election (no ha.etcd_endpoints)")


@dataclass
class NodeContext:
    settings: Settings
    db: Pool
    started_at: datetime = field(default_factory=lambda: datetime.now().astimezone())
    reconcile_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    leadership: Leadership = field(default_factory=SoleNode)
    # The primary's replication state as last read (None: not read yet, or unreachable).
    replication: ReplicationStatus | None = None
    cache: Cache = field(default_factory=NullCache)
    cache_replication: dict[str, Any] | None = None  # Redis INFO replication, as last read
    live: LiveHub | None = None  # live events for dashboards (set by the node)
    health: HealthMonitor | None = None  # background health checks (set by the node)
    # Other nodes and their URLs, as the leader last read them (usable when the database
    # is not: a degraded leader looks for a healthy successor over HTTP).
    peers: dict[str, str] = field(default_factory=dict)
    draining: bool = False

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

    def ensure_may_act(self) -> None:
        """Before an action outside the database (GitHub, a backend): only while leading."""
        if not self.leadership.may_act():
            metrics.FENCED_WRITES.labels("lease").inc()
            raise StaleLeader("this node is not the leader, or its lease may have expired")

    @asynccontextmanager
    async def control_tx(self) -> AsyncIterator[Conn]:
        """A transaction for a control-loop write (I4). Every write a control loop makes
        goes through here: refused unless this node may act and its epoch is the newest."""
        self.ensure_may_act()
        epoch = self.leadership.epoch
        async with self.db.connection() as conn, conn.transaction():
            if epoch is not None:
                try:
                    await check_epoch(conn, epoch)
                except StaleLeader:
                    metrics.FENCED_WRITES.labels("epoch").inc()
                    self.leadership.request_resign("fenced: a newer leader's epoch is recorded")
                    raise
            yield conn
