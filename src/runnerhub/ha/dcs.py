"""Where the leader is decided: an abstract store of one leader key bound to a lease.

One module per backend (the way Patroni splits its DCS): `etcd.py` is the real one,
`memory.py` a test double for the unit tests of the decision logic. The election loop
(`elector.py`) only talks to this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer in time."""


@dataclass(frozen=True)
class LeaderRecord:
    node: str
    url: str | None
    epoch: int  # the leader key's create revision: grows with every new leadership


@dataclass(frozen=True)
class Handoff:
    """A request that the leader of `from_epoch` step down (for `target`, or for anyone)."""

    from_epoch: int
    target: str | None


@dataclass(frozen=True)
class Term:
    """This node's hold on the leader key."""

    epoch: int
    lease_id: int
    ttl_s: float


class LeaderStore(ABC):
    @abstractmethod
    async def campaign(self, node: str, url: str | None, ttl_s: float) -> Term | None:
        """Take the leader key if nobody holds it (one transaction); None if somebody does."""

    @abstractmethod
    async def keepalive(self, term: Term) -> bool:
        """Renew the lease once; False when it is gone (expired or revoked)."""

    @abstractmethod
    async def resign(self, term: Term) -> None:
        """Give the key up at once (revoke the lease), so a successor need not wait."""

    @abstractmethod
    async def leader(self) -> tuple[LeaderRecord | None, int]:
        """The current leader (or None) and the store revision it was read at."""

    @abstractmethod
    def changes(self, after_revision: int) -> AsyncIterator[LeaderRecord | None]:
        """Leader key changes after a revision: a record when set, None when deleted."""

    @abstractmethod
    async def put_handoff(self, request: Handoff, ttl_s: float) -> None:
        """Ask the leader of `request.from_epoch` to step down; the request lasts `ttl_s`."""

    @abstractmethod
    async def handoff(self) -> Handoff | None:
        """The pending handoff request, if any."""

    @abstractmethod
    async def close(self) -> None: ...
