"""Live cluster events for dashboards: the events table, fanned out through Redis.

The leader tails the events table (every node's audit trail lands there) and publishes new
rows on one Redis channel; every node subscribes and hands them to its own live
subscribers (`GET /api/v1/events/stream`). So N nodes and any number of dashboards cost the
database one small query per `poll_s`, whoever serves them.

Redis may vanish (I7): while a node's subscription is down it tails the table itself, for
as long as it has subscribers, and keeps doing so for a short overlap after the
subscription is back. Ids make that safe: a hub hands each event id to its subscribers at
most once. The stream is a live view, not a guarantee: a subscriber that falls behind
loses events (counted) and can read them back from `GET /api/v1/events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from prometheus_client import Counter, Gauge

from runnerhub.cache import Cache, CacheUnavailable
from runnerhub.live.outbox import OutboxCursor
from runnerhub.store import events as event_store
from runnerhub.store.db import UNAVAILABLE_OR_SLOW, Pool
from runnerhub.store.events import EventRow

log = structlog.get_logger("runnerhub.live")

CHANNEL = "runnerhub:events"
# Rows read per query: a backlog larger than this drains over several polls.
BATCH = 500
# A hub waits this long for an event id it skipped to arrive (by Redis or its own read)
# before giving it up: longer than the leader's wait, as the leader may publish it late.
HUB_GAP_WAIT_S = 30.0
# Events the leader could not publish (Redis away) are kept and tried again, up to this
# many: the newest win.
MAX_PENDING = 5000
# A new leader publishes this many of the newest events again.
REPUBLISH_IDS = 100

LIVE_EVENTS = Counter(
    "runnerhub_live_events_total",
    "Events handed to this node's live subscribers, by where the node learned of them "
    "(redis: the leader's fan-out; database: read by this node while Redis was away).",
    ["source"],
)
LIVE_PUBLISHED = Counter(
    "runnerhub_live_events_published_total",
    "Events the leader published to Redis for the other nodes, by outcome.",
    ["outcome"],
)
LIVE_DROPPED = Counter(
    "runnerhub_live_events_dropped_total",
    "Events a slow live subscriber missed because its queue was full.",
)
LIVE_SUBSCRIBERS = Gauge("runnerhub_live_subscribers", "Live event streams this node serves.")
LIVE_SOURCE = Gauge(
    "runnerhub_live_redis_subscribed",
    "1 while this node receives live events through Redis, 0 while it reads them itself.",
)


def encode_event(row: EventRow) -> dict[str, Any]:
    """An event as JSON-ready data (the API's and Redis's shape)."""
    return {
        "id": row.id,
        "at": row.at.isoformat(),
        "node": row.node,
        "kind": row.kind,
        "subject": row.subject,
        "detail": row.detail,
    }


def decode_batch(payload: bytes) -> list[dict[str, Any]]:
    """A published batch; an event not in `encode_event`'s shape is dropped (it came over
    the network from Redis, which anyone who can write to it can fill): one bad event
    must not end every stream it would reach."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    if not isinstance(data, list):
        return []
    return [e for e in data if _well_formed(e)]


def _well_formed(e: object) -> bool:
    return (
        isinstance(e, dict)
        and type(e.get("id")) is int
        and isinstance(e.get("kind"), str)
        and isinstance(e.get("at"), str)
        and isinstance(e.get("node"), str)
        and isinstance(e.get("subject"), str | None)
        and isinstance(e.get("detail"), dict)
    )


def kind_matches(kinds: tuple[str, ...], kind: object) -> bool:
    """An event kind against a filter of prefixes (none: everything)."""
    return not kinds or (isinstance(kind, str) and kind.startswith(kinds))


class Subscription:
    """One live stream's queue; `dropped` counts what it missed by being slow."""

    def __init__(self, size: int, kinds: tuple[str, ...], after: int) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(size)
        self.kinds = kinds
        self.after = after  # older events are history, not live
        self.dropped = 0

    def wants(self, event: dict[str, Any]) -> bool:
        if event["id"] <= self.after:
            return False
        return kind_matches(self.kinds, event.get("kind"))

    def offer(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            LIVE_DROPPED.inc()


class EventTail:
    """New rows of the events table, each once, as `OutboxCursor` tells."""

    def __init__(self, db: Pool, start_after: int, gap_wait_s: float, clock: Callable[[], float]):
        self._db = db
        self._cursor = OutboxCursor(start_after, gap_wait_s)
        self._clock = clock

    @property
    def high(self) -> int:
        return self._cursor.high

    async def read(self, timeout_s: float) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout_s), self._db.connection(timeout_s) as conn:
            rows = await event_store.read_after(conn, self._cursor.read_after, BATCH)
        fresh = set(self._cursor.accept((r.id for r in rows), self._clock()))
        return [encode_event(r) for r in rows if r.id in fresh]


class LiveHub:
    def __init__(
        self,
        db: Pool,
        cache: Cache,
        *,
        use_redis: bool,
        poll_s: float = 0.5,
        gap_wait_s: float = 5.0,
        overlap_s: float = 2.0,
        queue_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._cache = cache
        self._use_redis = use_redis
        self.poll_s = poll_s
        self._gap_wait_s = gap_wait_s
        self._overlap_s = overlap_s
        self._queue_size = queue_size
        self._clock = clock
        self._subscriptions: set[Subscription] = set()
        # What was handed out: each id once, and where the oldest missing one is.
        self._handed = OutboxCursor(0, HUB_GAP_WAIT_S)
        self._started = asyncio.Event()
        self.redis_subscribed = False
        self._redis_since = 0.0

    # -- subscribers -----------------------------------------------------------------------

    @contextmanager
    def subscribe(
        self, kinds: tuple[str, ...] = (), after: int | None = None
    ) -> Iterator[Subscription]:
        """Events from now on (or with an id above `after`, for a caller that has read the
        history up to there), whose kind starts with one of `kinds` (none: all)."""
        # Default: everything not handed out yet, late commits below the newest id included.
        start = self._handed.read_after if after is None else after
        sub = Subscription(self._queue_size, kinds, start)
        self._subscriptions.add(sub)
        LIVE_SUBSCRIBERS.set(len(self._subscriptions))
        try:
            yield sub
        finally:
            self._subscriptions.discard(sub)
            LIVE_SUBSCRIBERS.set(len(self._subscriptions))

    def deliver(self, events: list[dict[str, Any]], source: str) -> int:
        """Hand events to every subscriber that wants them, each id once; how many were new."""
        fresh = set(self._handed.accept((e["id"] for e in events), self._clock()))
        count = len(fresh)
        for event in events:
            if event["id"] not in fresh:
                continue
            fresh.discard(event["id"])  # a batch may hold one id twice
            for sub in self._subscriptions:
                if sub.wants(event):
                    sub.offer(event)
        if count:
            LIVE_EVENTS.labels(source).inc(count)
        return count

    # -- receiving: every node -------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Receive events until `stop`: through Redis, or from the table while Redis is away."""
        await self._learn_start(stop)
        tasks = [asyncio.create_task(self._fallback(stop), name="live-fallback")]
        if self._use_redis:
            tasks.append(asyncio.create_task(self._listen(stop), name="live-listen"))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _learn_start(self, stop: asyncio.Event) -> None:
        """Live means from now on: start after the table's newest row."""
        while not stop.is_set():
            try:
                async with self._db.connection(2.0) as conn:
                    self._handed = OutboxCursor(await event_store.latest_id(conn), HUB_GAP_WAIT_S)
                self._started.set()
                return
            except UNAVAILABLE_OR_SLOW:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def _listen(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async for payload in self._cache.subscribe(CHANNEL, self._on_subscribed):
                    self.deliver(decode_batch(payload), "redis")
            except CacheUnavailable as exc:
                if self.redis_subscribed:
                    log.warning("live events: Redis subscription lost", error=str(exc))
            self._subscribed(False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_s)

    def _on_subscribed(self) -> None:
        self._subscribed(True)

    def _subscribed(self, on: bool) -> None:
        if on and not self.redis_subscribed:
            self._redis_since = self._clock()
            log.info("live events: receiving through Redis")
        self.redis_subscribed = on
        LIVE_SOURCE.set(1 if on else 0)

    def reads_table(self) -> bool:
        if not self._subscriptions:
            return False
        if not self.redis_subscribed:
            return True
        # Just back on Redis: what was published while we were away is not replayed.
        return self._clock() - self._redis_since < self._overlap_s

    async def _fallback(self, stop: asyncio.Event) -> None:
        tail: EventTail | None = None
        while not stop.is_set():
            if self.reads_table():
                if tail is None:  # from the oldest event not handed out yet
                    tail = EventTail(
                        self._db, self._handed.read_after, self._gap_wait_s, self._clock
                    )
                with contextlib.suppress(*UNAVAILABLE_OR_SLOW):
                    self.deliver(await tail.read(2.0), "database")
            else:
                tail = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_s)

    # -- publishing: the leader ------------------------------------------------------------

    async def publish(self, stop: asyncio.Event) -> None:
        """Tail the table and publish each new event, until `stop` (leadership ends).
        What Redis does not take is kept and offered again, so a failover of Redis loses
        nothing for nodes that are subscribed again before it ends."""
        tail: EventTail | None = None
        pending: list[dict[str, Any]] = []
        while not stop.is_set():
            try:
                if tail is None:
                    async with self._db.connection(2.0) as conn:
                        start = await event_store.latest_id(conn)
                    # The last moments again: the old leader may have died before publishing
                    # them, and hubs hand each id out once.
                    tail = EventTail(
                        self._db, max(0, start - REPUBLISH_IDS), self._gap_wait_s, self._clock
                    )
                pending += await tail.read(2.0)
            except UNAVAILABLE_OR_SLOW:
                pass
            if pending:
                pending = await self._publish(pending[-MAX_PENDING:])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_s)

    async def _publish(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish in messages of BATCH events; what is left when Redis refuses."""
        for i in range(0, len(events), BATCH):
            chunk = events[i : i + BATCH]
            if not await self._cache.publish(CHANNEL, json.dumps(chunk, default=str).encode()):
                LIVE_PUBLISHED.labels("failed").inc(len(events) - i)
                return events[i:]
            LIVE_PUBLISHED.labels("ok").inc(len(chunk))
        return []

    async def started(self) -> None:
        """Until the hub knows where "now" is in the table (it needs the database once)."""
        await self._started.wait()
