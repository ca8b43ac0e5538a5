"""Live events: what any node writes to the events table reaches the live subscribers of
every node, through Redis when it is there and from PostgreSQL when it is not, each event
once; late commits are not skipped; a reconnecting stream replays what it missed."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from runnerhub.api.sse import event_stream
from runnerhub.cache import NullCache
from runnerhub.dev.cluster.redis import LocalRedis
from runnerhub.dev.waiting import wait_until
from runnerhub.live.hub import LiveHub, Subscription
from runnerhub.store.db import Pool
from tests.conftest import shared_cache

POLL_S = 0.05


async def insert(db: Pool, count: int, kind: str = "job.recorded") -> list[int]:
    ids = []
    async with db.connection() as conn:
        for i in range(count):
            cur = await conn.execute(
                "INSERT INTO events (node, kind, subject, detail) VALUES ('n1', %s, %s, '{}')"
                " RETURNING id",
                (kind, f"job:{i}"),
            )
            row = await cur.fetchone()
            assert row is not None
            ids.append(row["id"])
    return ids


def drain(sub: Subscription) -> list[dict[str, Any]]:
    got = []
    while not sub.queue.empty():
        got.append(sub.queue.get_nowait())
    return got


class Received:
    """Everything a subscription has been handed so far, in order."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.events: list[dict[str, Any]] = []

    @property
    def ids(self) -> list[int]:
        self.events += drain(self.sub)
        return [e["id"] for e in self.events]

    async def wait_for(self, ids: list[int], timeout_s: float = 10) -> None:
        await wait_until(lambda: set(ids) <= set(self.ids), timeout_s, f"events {ids}")


async def running(hub: LiveHub, stop: asyncio.Event, publish: bool = False) -> list[Any]:
    tasks = [asyncio.create_task(hub.run(stop))]
    if publish:
        tasks.append(asyncio.create_task(hub.publish(stop)))
    await asyncio.wait_for(hub.started(), 10)
    return tasks


@pytest.fixture
async def stop() -> AsyncIterator[asyncio.Event]:
    event = asyncio.Event()
    yield event
    event.set()


def live_count(source: str) -> float:
    return REGISTRY.get_sample_value("runnerhub_live_events_total", {"source": source}) or 0.0


async def test_without_redis_a_node_reads_its_live_events_itself(
    db: Pool, stop: asyncio.Event
) -> None:
    hub = LiveHub(db, NullCache(), use_redis=False, poll_s=POLL_S)
    history = await insert(db, 2)
    tasks = await running(hub, stop)
    with hub.subscribe(kinds=("job.",)) as sub:
        received = Received(sub)
        jobs = await insert(db, 3)
        await insert(db, 2, kind="runner.exited")  # not asked for
        more = await insert(db, 1, kind="job.completed")
        await received.wait_for(jobs + more)
        assert received.ids == jobs + more  # no history, no runner events, each once
        assert not set(history) & set(received.ids)
        assert hub.redis_subscribed is False
    stop.set()
    await asyncio.gather(*tasks)


async def test_an_event_committed_late_is_not_skipped(db: Pool, stop: asyncio.Event) -> None:
    hub = LiveHub(db, NullCache(), use_redis=False, poll_s=POLL_S)
    tasks = await running(hub, stop)
    with hub.subscribe() as sub:
        received = Received(sub)
        async with db.connection() as slow, slow.transaction():
            cur = await slow.execute(
                "INSERT INTO events (node, kind) VALUES ('n2', 'job.slow') RETURNING id"
            )
            row = await cur.fetchone()
            assert row is not None
            late = row["id"]
            early = await insert(db, 2)  # higher ids, committed first
            await received.wait_for(early)
            # Committed now: below ids already handed out, still delivered.
        await received.wait_for([late])
        assert sorted(received.ids) == sorted([late, *early])
        assert len(received.ids) == 3
    stop.set()
    await asyncio.gather(*tasks)


async def test_a_reconnecting_stream_replays_what_it_missed_then_goes_live(
    db: Pool, stop: asyncio.Event
) -> None:
    hub = LiveHub(db, NullCache(), use_redis=False, poll_s=POLL_S)
    tasks = await running(hub, stop)
    seen = await insert(db, 2)
    missed = await insert(db, 3)
    await insert(db, 1, kind="runner.busy")  # filtered out of the replay too
    stream = event_stream(db, hub, ("job.",), after=seen[-1])
    assert (await anext(stream)).startswith(b":")
    frames = [await anext(stream) for _ in missed]
    live = await insert(db, 1)
    frames.append(await asyncio.wait_for(anext(stream), 10))
    ids = [int(f.split(b"\n")[0].removeprefix(b"id: ")) for f in frames]
    assert ids == missed + live
    first = frames[0].decode().split("\n")
    assert first[1] == "event: job.recorded"
    assert json.loads(first[2].removeprefix("data: "))["subject"] == "job:0"
    await stream.aclose()
    stop.set()
    await asyncio.gather(*tasks)


async def test_events_reach_other_nodes_through_redis_and_survive_its_failover(
    db: Pool, local_redis: LocalRedis, stop: asyncio.Event
) -> None:
    leader_cache, follower_cache = shared_cache(local_redis), shared_cache(local_redis)
    leader = LiveHub(db, leader_cache, use_redis=True, poll_s=POLL_S)
    follower = LiveHub(db, follower_cache, use_redis=True, poll_s=POLL_S, overlap_s=0.3)
    tasks = await running(leader, stop, publish=True) + await running(follower, stop)
    try:
        await wait_until(lambda: follower.redis_subscribed, 10, "the follower's subscription")
        with follower.subscribe() as sub:
            received = Received(sub)
            await wait_until(lambda: not follower.reads_table(), 5, "the overlap to end")
            via_redis, via_db = live_count("redis"), live_count("database")
            first = await insert(db, 5)
            await received.wait_for(first)
            assert live_count("redis") - via_redis >= 5
            assert live_count("database") == via_db  # Redis carried them all

            # Kill the Redis primary while events keep coming: the follower reads the table
            # itself until it is subscribed to the promoted replica again.
            written: list[int] = []
            lost_subscription = asyncio.Event()

            async def write_events() -> None:
                while not stop.is_set():
                    written.extend(await insert(db, 1))
                    if not follower.redis_subscribed:
                        lost_subscription.set()
                    await asyncio.sleep(0.05)  # the pace of the load, not a wait for a state

            writer = asyncio.create_task(write_events())
            old = local_redis.primary()
            name = local_redis.name_of("primary")
            assert name is not None
            local_redis.kill(name, signal.SIGKILL)
            await asyncio.wait_for(lost_subscription.wait(), 10)
            local_redis.wait_failover(old, 30)
            await wait_until(lambda: follower.redis_subscribed, 20, "a new subscription")
            via_redis = live_count("redis")
            await wait_until(lambda: live_count("redis") > via_redis, 10, "events via Redis")
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await received.wait_for(first + written)
            assert live_count("database") > via_db  # the gap was covered from the table
            assert sorted(received.ids) == first + written  # every event, each once
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await leader_cache.close()
        await follower_cache.close()
