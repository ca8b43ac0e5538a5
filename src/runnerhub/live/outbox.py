"""Which rows of the append-only events table are new: pure, no I/O.

Event ids come from a sequence, but transactions commit in their own order: id 11 may be
visible before id 10 (still committing), and id 12 may never appear (rolled back). So a
reader cannot simply remember the highest id it has seen. `OutboxCursor` remembers the
holes below it, keeps reading from the oldest hole, and gives a hole up after `gap_wait_s`
(a transaction that has not committed in that long has almost certainly rolled back).
Each id is handed out once.
"""

from __future__ import annotations

from collections.abc import Iterable

# A rolled-back batch of this many ids is remembered hole by hole; beyond it, only the
# newest are (a burst that large is an outage, not a commit race).
MAX_HOLES = 10_000


class OutboxCursor:
    def __init__(self, start_after: int, gap_wait_s: float = 5.0) -> None:
        if gap_wait_s < 0:
            raise ValueError(f"gap_wait_s must not be negative, not {gap_wait_s}")
        self.high = start_after
        self.gap_wait_s = gap_wait_s
        self._holes: dict[int, float] = {}  # missing id -> when it was first missed

    @property
    def read_after(self) -> int:
        """Read rows with an id above this: the oldest hole may still fill."""
        return min(self._holes) - 1 if self._holes else self.high

    @property
    def holes(self) -> int:
        return len(self._holes)

    def accept(self, ids: Iterable[int], now: float) -> list[int]:
        """The ids among `ids` (as read at `now`) not handed out before, in id order."""
        fresh: list[int] = []
        for i in sorted(set(ids)):
            if i > self.high:
                first_missing = max(self.high + 1, i - MAX_HOLES)
                for missing in range(first_missing, i):
                    self._holes[missing] = now
                self.high = i
                fresh.append(i)
            elif self._holes.pop(i, None) is not None:
                fresh.append(i)
        self._expire(now)
        return fresh

    def _expire(self, now: float) -> None:
        stale = [i for i, seen in self._holes.items() if now - seen > self.gap_wait_s]
        for i in stale:
            del self._holes[i]
        if len(self._holes) > MAX_HOLES:
            for i in sorted(self._holes)[: len(self._holes) - MAX_HOLES]:
                del self._holes[i]
