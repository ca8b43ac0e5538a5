"""A real Redis primary, replica and three Sentinels on loopback, and SharedCache in front:
it works through Sentinel, follows a failover by itself (primary killed or hung), and when
every Redis process is gone it answers "nothing" quickly instead of failing (I7)."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis

from runnerhub.cache import Cache, SharedCache
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.redis import Address, LocalRedis, RedisError
from runnerhub.dev.waiting import wait_until
from tests.conftest import shared_cache

# Socket timeouts are 0.25 s and every operation is capped at 1 s; the rest is slack for a
# loaded test machine.
MAX_CALL_S = 1.2


@pytest.fixture
async def cache(local_redis: LocalRedis) -> AsyncIterator[SharedCache]:
    c = shared_cache(local_redis)
    yield c
    await c.close()


def direct(cluster: LocalRedis, address: Address) -> redis.Redis:
    """A plain client to one data node, bypassing Sentinel."""
    return redis.Redis(host=address[0], port=address[1], password=cluster.password)


class Timed:
    """Runs cache calls, keeping how long each took; a call that raises fails the test."""

    def __init__(self) -> None:
        self.durations: list[float] = []

    async def __call__(self, call: Awaitable[Any]) -> Any:
        began = time.monotonic()
        result = await call
        self.durations.append(time.monotonic() - began)
        return result

    @property
    def slowest(self) -> float:
        return max(self.durations, default=0.0)


def every_operation(cache: Cache) -> list[tuple[str, Callable[[], Awaitable[Any]], Any]]:
    """(name, call, what it returns when Redis cannot be reached)."""
    return [
        ("get", lambda: cache.get("k"), None),
        ("set", lambda: cache.set("k", b"v", 60), False),
        ("delete", lambda: cache.delete("k"), False),
        ("incr_window", lambda: cache.incr_window("budget", 1, 60), None),
        ("publish", lambda: cache.publish("events", b"hello"), False),
        ("ping", lambda: cache.ping(), False),
    ]


async def test_reads_and_writes_go_to_the_primary_sentinel_reports(
    local_redis: LocalRedis, cache: SharedCache
) -> None:
    primary = local_redis.primary()
    assert local_redis.name_of("primary") == "redis-0"
    assert local_redis.name_of("replica") == "redis-1"
    assert local_redis.pid_of("primary") == local_redis.pids()["redis-0"]
    assert set(local_redis.pids()) == {"redis-0", "redis-1", *LocalRedis.SENTINELS}
    ports = [port for _, port in [*local_redis.sentinels, *local_redis.data_nodes]]
    assert len(set(ports)) == 5 and not {6379, 26379} & set(ports)

    assert await cache.ping()
    assert await cache.get("missing") is None
    assert await cache.set("greeting", b"hello", 30)
    assert await cache.get("greeting") == b"hello"
    assert await cache.delete("greeting")
    assert await cache.get("greeting") is None

    assert await cache.incr_window("budget", 5, 30) == 5
    assert await cache.incr_window("budget", 2, 0.001) == 7  # NX: the first expiry holds
    ttl_ms = direct(local_redis, primary).pttl("budget")
    assert 0 < ttl_ms <= 30_000

    subscriber = redis.asyncio.Redis(
        host=primary[0], port=primary[1], password=local_redis.password
    )
    async with subscriber.pubsub() as pubsub:
        await pubsub.subscribe("events")
        assert await cache.publish("events", b"job-queued")

        async def message() -> Any:
            got = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            return got and got["data"]

        assert await wait_until(message, 5, "the published message") == b"job-queued"
    await subscriber.aclose()

    assert cache.status() == {
        "available": True,
        "primary": f"{primary[0]}:{primary[1]}",
        "last_error": None,
        "consecutive_failures": 0,
    }
    with pytest.raises(RedisError, match="no process"):
        local_redis.kill("redis-9")


async def test_after_the_primary_is_killed_writes_reach_the_promoted_replica(
    local_redis: LocalRedis, cache: SharedCache
) -> None:
    old = local_redis.primary()
    old_name = local_redis.name_of("primary")
    assert old_name is not None
    assert await cache.set("before", b"1", 60)

    local_redis.kill(old_name, signal.SIGKILL)
    killed = time.monotonic()
    timed = Timed()

    promoted_s: list[float] = []

    async def write_lands() -> bool:
        if not promoted_s and local_redis.primary() != old:
            promoted_s.append(time.monotonic() - killed)
        return bool(await timed(cache.set("during", b"2", 60)))

    await wait_until(write_lands, 30, "a write through the same SharedCache", interval_s=0.05)
    recovered_s = time.monotonic() - killed
    new = local_redis.wait_failover(old, timeout_s=5)
    # The promotion may land between a probe's look at the Sentinels and its write: then it
    # was seen no later than the write that landed.
    promoted = promoted_s[0] if promoted_s else recovered_s
    print(
        f"primary SIGKILLed: Sentinel promoted {new} after {promoted:.2f}s, "
        f"cache writing again after {recovered_s:.2f}s "
        f"({len(timed.durations)} calls, slowest {timed.slowest:.3f}s)"
    )
    assert new != old
    assert timed.slowest < MAX_CALL_S
    assert direct(local_redis, new).get("during") == b"2"
    assert cache.status()["primary"] == f"{new[0]}:{new[1]}"
    assert cache.status()["available"]
    # Each Sentinel names the new primary, up, with the other two and a quorum.
    sentinels = await cache.sentinels()
    assert len(sentinels) == 3
    assert all(s["ok"] and s["primary"] == f"{new[0]}:{new[1]}" for s in sentinels), sentinels
    assert all(s["other_sentinels"] == 2 and s["quorum_ok"] for s in sentinels), sentinels

    # The old primary comes back as a replica of the new one.
    local_redis.restart(old_name)
    local_redis.wait_ready(timeout_s=15)
    assert local_redis.name_of("replica") == old_name
    assert local_redis.primary() == new
    assert await cache.set("after", b"3", 60)
    assert await cache.get("after") == b"3"


async def test_a_hung_primary_costs_bounded_time_per_call_then_fails_over(
    local_redis: LocalRedis, cache: SharedCache
) -> None:
    old = local_redis.primary()
    old_name = local_redis.name_of("primary")
    assert old_name is not None
    assert await cache.set("before", b"1", 60)

    local_redis.kill(old_name, signal.SIGSTOP)  # accepts connections, never answers
    stopped = time.monotonic()
    timed = Timed()

    async def write_lands() -> bool:
        return bool(await timed(cache.set("during", b"2", 60)))

    await wait_until(write_lands, 30, "a write past the hung primary", interval_s=0.05)
    new = local_redis.primary()
    print(
        f"primary SIGSTOPped: cache writing again after {time.monotonic() - stopped:.2f}s "
        f"({len(timed.durations)} calls, slowest {timed.slowest:.3f}s)"
    )
    assert new != old
    assert timed.slowest < MAX_CALL_S
    assert direct(local_redis, new).get("during") == b"2"

    # Resumed, the old primary still believes it is one until Sentinel next looks at it
    # (up to 10 s): the cache, already connected to the new primary, must not go back.
    local_redis.kill(old_name, signal.SIGCONT)
    for i in range(5):
        assert await cache.set(f"resumed-{i}", b"3", 60)
        assert direct(local_redis, new).get(f"resumed-{i}") == b"3"


async def test_without_any_redis_every_call_answers_nothing_quickly_then_recovers(
    local_redis: LocalRedis, cache: SharedCache
) -> None:
    assert await cache.set("k", b"v", 60)
    everything = list(local_redis.pids())

    # Hung, every process accepts connections and never answers: each call waits out its
    # timeouts, then the circuit opens and calls are skipped.
    for name in everything:
        local_redis.kill(name, signal.SIGSTOP)
    hung = Timed()
    for op, call, nothing in every_operation(cache):
        assert await hung(call()) == nothing, op
    print(f"Redis hung: {len(hung.durations)} calls, slowest {hung.slowest:.3f}s")
    assert hung.slowest < 1.5
    assert cache.status()["consecutive_failures"] == 3

    for name in everything:
        local_redis.kill(name, signal.SIGKILL)
    assert local_redis.pids() == {}

    timed = Timed()

    async def refused() -> bool:
        # After the cooldown one call tries again, and finds nobody: Sentinel is not there.
        await timed(cache.ping())
        return "MasterNotFoundError" in (cache.status()["last_error"] or "")

    await wait_until(refused, 5, "a call that finds Redis gone", interval_s=0.05)
    # Twice round: the first failures open the circuit, later calls are skipped.
    for _ in range(2):
        for op, call, nothing in every_operation(cache):
            assert await timed(call()) == nothing, op
    print(f"Redis gone: {len(timed.durations)} calls, slowest {timed.slowest:.3f}s")
    assert timed.slowest < 1.5
    status = cache.status()
    assert status["available"] is False and status["primary"] is None
    assert status["consecutive_failures"] >= 3
    assert status["last_error"] and local_redis.password not in status["last_error"]

    for name in [*LocalRedis.DATA_NODES, *LocalRedis.SENTINELS]:
        local_redis.restart(name)
    came_back = time.monotonic()
    await wait_until(cache.ping, 20, "the cache to answer again", interval_s=0.05)
    print(f"Redis restarted: cache available after {time.monotonic() - came_back:.2f}s")
    assert await cache.set("k", b"again", 60)
    assert await cache.get("k") == b"again"
    assert cache.status()["available"] is True
    assert cache.status()["consecutive_failures"] == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_circuit_opens_after_failures_then_lets_one_call_try() -> None:
    clock = Clock()
    nobody = [("127.0.0.1", free_port()), ("127.0.0.1", free_port())]  # nothing listens
    cache = SharedCache(
        nobody, password="s3cret-pw", sentinel_password="s3cret-pw", cooldown_s=1.0, clock=clock
    )
    try:
        for _ in range(3):
            assert await cache.get("k") is None
        assert cache.status()["consecutive_failures"] == 3
        assert "MasterNotFoundError" in (cache.status()["last_error"] or "")

        # Open: nothing is attempted, so nothing more fails.
        began = time.monotonic()
        assert await cache.set("k", b"v", 1) is False
        assert await cache.ping() is False
        assert time.monotonic() - began < 0.05
        assert cache.status()["consecutive_failures"] == 3

        clock.now += 1.01  # half-open: one call tries, fails, and the circuit opens again
        assert await cache.ping() is False
        assert cache.status()["consecutive_failures"] == 4
        assert await cache.ping() is False
        assert cache.status()["consecutive_failures"] == 4
        assert "s3cret-pw" not in str(cache.status())
    finally:
        await cache.close()
    assert await cache.get("k") is None  # closed: still no error
