"""GitHub's rate limits, shared by every node through Redis.

GitHub counts calls per identity (a token, an App installation), not per node. So when
one node learns that a window is used up, or is told to back off by a secondary limit,
the others should not each find out by being refused: they read the pause here first.
The content-creating requests GitHub's secondary limits count (POST, PATCH, PUT, DELETE)
can also be paced to a cluster-wide budget per minute (`github.writes_per_minute`).

Redis may be lost (I7): then each node keeps to what it has seen itself, and counts its own
writes against the whole budget (only the leader provisions, so that is close).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from runnerhub.cache import Cache
from runnerhub.github.ratelimit import RateLimit

# A window is never longer than an hour; a pause longer than that is a bad header.
MAX_TTL_S = 3600.0
# Windows are shared at most this often per bucket (the last one always, when used up).
SHARE_EVERY_S = 1.0


@dataclass(frozen=True)
class SharedPause:
    until: float  # Unix time
    secondary: bool
    reset: float | None  # the primary window's reset (Unix time), when that is the cause


def write_wait(count: int, budget: int, now_wall: float) -> float | None:
    """Seconds until the next minute's budget, when `count` writes this minute exceed it."""
    if count <= budget:
        return None
    return (math.floor(now_wall / 60) + 1) * 60 - now_wall


class SharedRateLimits:
    def __init__(
        self,
        cache: Cache,
        identity: str,
        writes_per_minute: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._prefix = f"runnerhub:github:{identity}:"
        self.writes_per_minute = writes_per_minute
        self._clock = clock
        self._shared_at: dict[str, float] = {}
        self._local_writes: tuple[int, int] = (0, 0)  # (minute, count) while Redis is away

    async def share_window(self, bucket: str, limit: RateLimit, now_wall: float) -> None:
        now = self._clock()
        if limit.remaining > 0 and now - self._shared_at.get(bucket, -math.inf) < SHARE_EVERY_S:
            return
        self._shared_at[bucket] = now
        ttl = min(MAX_TTL_S, max(1.0, limit.reset - now_wall))
        await self._cache.set(
            self._prefix + "window:" + bucket, json.dumps(limit.as_json()).encode(), ttl
        )
        if limit.remaining == 0:
            await self.share_pause(bucket, limit.reset, False, limit.reset, now_wall)

    async def window(self, bucket: str) -> RateLimit | None:
        raw = await self._cache.get(self._prefix + "window:" + bucket)
        if raw is None:
            return None
        try:
            return RateLimit.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # written by another version, or damaged: as good as absent

    async def share_pause(
        self, bucket: str, until: float, secondary: bool, reset: float | None, now_wall: float
    ) -> None:
        wait = until - now_wall
        if wait <= 0:
            return
        value = {"until": until, "secondary": secondary, "reset": reset}
        await self._cache.set(
            self._prefix + "pause:" + bucket, json.dumps(value).encode(), min(MAX_TTL_S, wait)
        )

    async def pause(self, bucket: str, now_wall: float) -> SharedPause | None:
        raw = await self._cache.get(self._prefix + "pause:" + bucket)
        if raw is None:
            return None
        try:
            v = json.loads(raw)
            pause = SharedPause(
                until=float(v["until"]),
                secondary=bool(v["secondary"]),
                reset=None if v.get("reset") is None else float(v["reset"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return pause if pause.until > now_wall else None

    async def take_write(self, now_wall: float) -> float | None:
        """Count one content-creating request; seconds to wait instead when over budget."""
        budget = self.writes_per_minute
        if not budget:
            return None
        minute = math.floor(now_wall / 60)
        count = await self._cache.incr_window(f"{self._prefix}writes:{minute}", 1, 120)
        if count is None:  # Redis away: this node alone may use the whole budget
            last_minute, last_count = self._local_writes
            count = last_count + 1 if last_minute == minute else 1
            self._local_writes = (minute, count)
        return write_wait(count, budget, now_wall)
