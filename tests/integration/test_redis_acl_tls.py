"""Redis and its Sentinels with TLS only (certificates from a local CA) and an ACL user for
RunnerHub that may use only `runnerhub:*` keys and channels and no dangerous command: the
shared cache works through it, follows a failover over TLS, and everything else is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from runnerhub.cache import RedisTls, SharedCache
from runnerhub.dev.cluster.redis import LocalRedis
from runnerhub.dev.cluster.tls import LocalCA
from runnerhub.dev.waiting import wait_until

NODE_PASSWORD = "runnerhub-redis-pw-0123"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    base = tmp_path_factory.mktemp("redis-tls")
    cluster = LocalRedis(
        base / "redis", tls=LocalCA(base / "ca"), users={"runnerhub": NODE_PASSWORD}
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


def cache_of(cluster: LocalRedis, **overrides: object) -> SharedCache:
    assert cluster.tls is not None
    args: dict[str, object] = {
        "username": "runnerhub",
        "password": NODE_PASSWORD,
        "sentinel_password": cluster.password,
        "tls": RedisTls(cluster.tls.cert),
        "op_timeout_s": 2.0,
        "socket_timeout_s": 1.0,
        "connect_timeout_s": 1.0,
    }
    args.update(overrides)
    return SharedCache(cluster.sentinels, cluster.master_name, **args)  # type: ignore[arg-type]


@pytest.fixture
async def cache(secured: LocalRedis) -> AsyncIterator[SharedCache]:
    c = cache_of(secured)
    yield c
    await c.close()


def as_node_user(cluster: LocalRedis) -> redis.Redis:
    host, port = cluster.primary()
    return redis.Redis(
        host=host,
        port=port,
        username="runnerhub",
        password=NODE_PASSWORD,
        **cluster.client_tls(),
    )


async def test_the_cache_works_as_the_acl_user_over_tls(
    secured: LocalRedis, cache: SharedCache
) -> None:
    assert await cache.set("runnerhub:test:k", b"v", 60)
    assert await cache.get("runnerhub:test:k") == b"v"
    assert await cache.incr_window("runnerhub:test:n", 2, 60) == 2
    got: list[bytes] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async for message in cache.subscribe("runnerhub:events", on_ready=ready.set):
            got.append(message)
            return

    listener = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 5)
    assert await cache.publish("runnerhub:events", b"hello")
    await asyncio.wait_for(listener, 5)
    assert got == [b"hello"]
    replication = await cache.replication()  # INFO: allowed
    assert replication is not None and replication["role"] == "master"


@pytest.mark.parametrize(
    "command",
    [
        ("SET", "other:key", "x"),  # not RunnerHub's key
        ("PUBLISH", "other-channel", "x"),  # not RunnerHub's channel
        ("CONFIG", "GET", "requirepass"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("ACL", "LIST"),
    ],
)
def test_the_acl_user_may_do_nothing_else(secured: LocalRedis, command: tuple[str, ...]) -> None:
    client = as_node_user(secured)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    finally:
        client.close()


def test_plain_connections_and_wrong_passwords_are_refused(secured: LocalRedis) -> None:
    host, port = secured.primary()
    plain = redis.Redis(host=host, port=port, password=secured.password, socket_timeout=2)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()
    wrong = redis.Redis(
        host=host,
        port=port,
        username="runnerhub",
        password="wrong-0123456789",
        **secured.client_tls(),
    )
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()


async def test_a_failover_over_tls_is_followed(secured: LocalRedis, cache: SharedCache) -> None:
    """The Sentinels reach the data nodes and each other over TLS: they still promote the
    replica, and the cache follows."""
    old = secured.primary()
    name = next(n for n in secured.DATA_NODES if secured.processes[n].address == old)
    secured.kill(name)
    new = secured.wait_failover(old, timeout_s=30)
    assert new != old

    async def writes() -> bool:
        return await cache.set("runnerhub:test:after", b"1", 60)

    await wait_until(writes, 20, "a write through the promoted replica")
    secured.restart(name)
