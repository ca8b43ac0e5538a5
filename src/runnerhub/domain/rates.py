"""Error rates (pure): the share of calls that failed over a sliding window.

Kept in one bucket per second, so memory is bounded by the window whatever the call rate.
A window with fewer than `min_calls` calls gives no sample (None): two failures out of
three calls are no trend, and a forecast must not be fitted on them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class ErrorRate:
    def __init__(
        self,
        window_s: float = 60.0,
        min_calls: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.min_calls = min_calls
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, calls, errors], oldest first

    def add(self, calls: int, errors: int) -> None:
        if calls <= 0:
            return
        second = math.floor(self._clock())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += calls
            self._buckets[-1][2] += errors
        else:
            self._buckets.append([second, calls, errors])
        self._trim(second)

    def record(self, ok: bool) -> None:
        self.add(1, 0 if ok else 1)

    def rate(self) -> float | None:
        """Failed share of the calls in the window; None with too few calls to say."""
        self._trim(math.floor(self._clock()))
        calls = sum(b[1] for b in self._buckets)
        if calls < self.min_calls:
            return None
        return sum(b[2] for b in self._buckets) / calls

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self.window_s:
            self._buckets.popleft()


class CounterErrorRate:
    """The same from two cumulative counters read now and then (calls, errors), as a
    connection pool keeps them: each reading adds what changed since the last."""

    def __init__(self, read: Callable[[], tuple[int, int]], rate: ErrorRate) -> None:
        self._read = read
        self._rate = rate
        self._last: tuple[int, int] | None = None

    def sample(self) -> float | None:
        calls, errors = self._read()
        if self._last is not None and calls >= self._last[0]:  # not reset meanwhile
            self._rate.add(calls - self._last[0], max(0, errors - self._last[1]))
        self._last = (calls, errors)
        return self._rate.rate()
