"""An in-memory LeaderStore: a test double for the election logic's unit tests.

It keeps etcd's semantics that matter here: a revision counter, a key bound to a lease that
expires `ttl_s` after its last renewal (on an injectable clock), watches that see deletes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from runnerhub.ha.dcs import Handoff, LeaderRecord, LeaderStore, StoreUnavailable, Term


@dataclass
class _Lease:
    ttl_s: float
    expires_at: float


class MemoryLeaderStore(LeaderStore):
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.revision = 1
        self.available = True
        self._leases: dict[int, _Lease] = {}
        self._ids = itertools.count(100)
        self._leader: tuple[LeaderRecord, int] | None = None  # record, lease id
        self._history: list[tuple[int, LeaderRecord | None]] = []
        self._changed = asyncio.Condition()
        self._handoff: tuple[Handoff, float] | None = None

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("memory store switched off")

    async def expire(self) -> None:
        """Apply lease expiry as of now (etcd does this on its own; tests call it)."""
        now = self.clock()
        for lease_id, lease in list(self._leases.items()):
            if lease.expires_at <= now:
                await self._drop_lease(lease_id)

    async def _drop_lease(self, lease_id: int) -> None:
        self._leases.pop(lease_id, None)
        if self._leader is not None and self._leader[1] == lease_id:
            await self.delete_leader()

    async def campaign(self, node: str, url: str | None, ttl_s: float) -> Term | None:
        self._check()
        await self.expire()
        if self._leader is not None:
            return None
        lease_id = next(self._ids)
        self._leases[lease_id] = _Lease(ttl_s, self.clock() + ttl_s)
        self.revision += 1
        record = LeaderRecord(node, url, self.revision)
        self._leader = (record, lease_id)
        self._history.append((self.revision, record))
        async with self._changed:
            self._changed.notify_all()
        return Term(self.revision, lease_id, ttl_s)

    async def keepalive(self, term: Term) -> bool:
        self._check()
        await self.expire()
        lease = self._leases.get(term.lease_id)
        if lease is None:
            return False
        lease.expires_at = self.clock() + lease.ttl_s
        return self._leader is not None and self._leader[1] == term.lease_id

    async def delete_leader(self) -> None:
        """Delete the key (tests call it alone for an operator's `etcdctl del`: the lease
        lives on)."""
        if self._leader is not None:
            self._leader = None
            self.revision += 1
            self._history.append((self.revision, None))
            async with self._changed:
                self._changed.notify_all()

    async def resign(self, term: Term) -> None:
        self._check()
        await self._drop_lease(term.lease_id)

    async def leader(self) -> tuple[LeaderRecord | None, int]:
        self._check()
        await self.expire()
        return (self._leader[0] if self._leader else None), self.revision

    async def changes(self, after_revision: int) -> AsyncIterator[LeaderRecord | None]:
        seen = after_revision
        while True:
            self._check()
            for rev, record in self._history:
                if rev > seen:
                    seen = rev
                    yield record
            # etcd expires leases on its own; here a watcher's poll applies the expiry.
            async with self._changed:
                with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
                    async with asyncio.timeout(0.02):
                        await self._changed.wait()
            await self.expire()

    async def put_handoff(self, request: Handoff, ttl_s: float) -> None:
        self._check()
        self._handoff = (request, self.clock() + ttl_s)

    async def handoff(self) -> Handoff | None:
        self._check()
        if self._handoff is None or self._handoff[1] <= self.clock():
            return None
        return self._handoff[0]

    async def close(self) -> None:
        return None
