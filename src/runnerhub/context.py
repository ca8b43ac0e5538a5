"""What the API and the control loops of one node share: its settings and connections, its
part in the election, its health monitor, and what it has learnt while running."""

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
from runnerhub.domain.backups import Archiver
from runnerhub.domain.replicas import ReplicationStatus, StandbyStatus
from runnerhub.ha.dcs import LeaderRecord
from runnerhub.health.monitor import HealthMonitor
from runnerhub.live.hub import LiveHub
from runnerhub.store.db import UNAVAILABLE_OR_SLOW, Conn, Pool, ping
from runnerhub.store.leadership import StaleLeader, check_epoch


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


class StandbyNode(SoleNode):
    """A node of a standby region: it never leads, and nothing it does needs a leader."""

    is_leader = False

    def may_act(self) -> bool:
        return False

    async def request_handoff(self, target: str | None) -> LeaderRecord:
        raise NoElection(
            "this node stands by for another region (node.role: standby); "
            "`runnerhub dr promote` makes its region the active one"
        )


@dataclass
class NodeState:
    """What this node learns while it runs. Each field has one writer."""

    # An operator asked this node to drain (the heartbeat reads the flag).
    draining: bool = False
    # Other nodes and their URLs, as the leader last read them (the node watch): usable
    # when the database is not, for a degraded leader to find a healthy successor.
    peers: dict[str, str] = field(default_factory=dict)
    # The primary's replication state as last read (None: not read yet, or unreachable).
    replication: ReplicationStatus | None = None
    # Redis's INFO replication, as last read.
    cache_replication: dict[str, Any] | None = None
    # The primary's WAL archiver (pg_stat_archiver), as last read (None: off or unknown).
    archiver: Archiver | None = None
    # A standby region's database: its lag behind the active region (None: not standby).
    standby: StandbyStatus | None = None
    # Per repository: WAL segments its archive ends before the primary's (the backup loop).
    archive_behind: dict[int, int] = field(default_factory=dict)


@dataclass
class NodeContext:
    settings: Settings
    db: Pool
    leadership: Leadership = field(default_factory=SoleNode)
    cache: Cache = field(default_factory=NullCache)
    live: LiveHub | None = None  # live events for streams (None: not served here)
    health: HealthMonitor | None = None  # background health checks (None: none run)
    state: NodeState = field(default_factory=NodeState)
    started_at: datetime = field(default_factory=lambda: datetime.now().astimezone())

    async def database_ok(self, timeout_s: float = 1.0) -> bool:
        """Can this node write to PostgreSQL right now? Answers within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s), self.db.connection(timeout_s) as conn:
                await ping(conn)
            return True
        except UNAVAILABLE_OR_SLOW:
            return False

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
