"""Where a runner goes among a pool's runner hosts (pure: tests/unit/test_placement.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HostLoad:
    """A runner host that answered: the pool's runners running on it, and its limit."""

    host: str
    running: int
    capacity: int | None = None  # None: no limit of its own

    @property
    def room(self) -> float:
        return math.inf if self.capacity is None else self.capacity - self.running


def placement_order(hosts: Sequence[HostLoad]) -> list[str]:
    """The hosts to try, best first: only those with room, the most room first, then the
    fewest runners (hosts without a limit of their own share evenly); ties keep the pool's
    order of hosts."""
    with_room = [h for h in hosts if h.room > 0]
    return [h.host for h in sorted(with_room, key=lambda h: (-h.room, h.running))]
