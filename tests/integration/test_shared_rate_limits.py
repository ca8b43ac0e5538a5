"""GitHub's rate limits shared through a real Redis (Sentinel): what one node learns, the
others respect without being refused themselves; the cluster's write budget is one budget;
and without Redis each node still works on what it knows."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from runnerhub.cache import SharedCache
from runnerhub.dev.cluster.redis import LocalRedis
from runnerhub.github import GitHubClient, PatAuth, RateLimited
from runnerhub.github.budget import SharedRateLimits
from tests.conftest import shared_cache
from tests.integration.test_github_client_sim import (
    PAT,
    SIM_URL,
    sim_config,
    sim_http,
    sim_stats,
)

# Both "nodes" read the same wall clock, 10 s into a minute: a write budget per minute must
# not straddle two minutes because the test ran at hh:mm:59.
WALL = math.floor(time.time() / 60) * 60 + 10.0


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def caches(local_redis: LocalRedis) -> AsyncIterator[tuple[SharedCache, SharedCache]]:
    a, b = shared_cache(local_redis), shared_cache(local_redis)
    yield a, b
    await a.close()
    await b.close()


def node(http: httpx.AsyncClient, cache: SharedCache, writes: int | None = None) -> GitHubClient:
    auth = PatAuth(PAT)
    return GitHubClient(
        SIM_URL,
        auth,
        http=http,
        sleep=no_sleep,
        wall_clock=lambda: WALL,
        shared_limits=SharedRateLimits(cache, auth.identity, writes),
    )


async def test_a_window_one_node_used_up_stops_the_others_before_github_does(
    key: rsa.RSAPrivateKey, caches: tuple[SharedCache, SharedCache]
) -> None:
    async with sim_http(sim_config(key, rate_limit=3)) as http:
        a, b = node(http, caches[0]), node(http, caches[1])
        for _ in range(3):
            await a.list_runners("repo:acme/app")
        assert a.rate_limit["core"].remaining == 0
        with pytest.raises(RateLimited, match="seen by a RunnerHub node") as info:
            await b.list_runners("repo:acme/app")  # b never called GitHub itself
        assert info.value.attempts == 0 and info.value.secondary is False
        assert info.value.reset_at is not None
        assert (await sim_stats(http))["api_calls"]["list-runners"] == {"200": 3}
        # What the window looked like is there for any node to report.
        shared = await SharedRateLimits(caches[1], PatAuth(PAT).identity).window("core")
        assert shared is not None and shared.remaining == 0 and shared.limit == 3


async def test_the_write_budget_is_one_for_the_cluster_and_survives_losing_redis(
    key: rsa.RSAPrivateKey, caches: tuple[SharedCache, SharedCache], local_redis: LocalRedis
) -> None:
    async with sim_http(sim_config(key)) as http:
        a, b = node(http, caches[0], writes=3), node(http, caches[1], writes=3)
        await a.generate_jitconfig("repo:acme/app", "rh-w1", ["self-hosted"])
        await b.generate_jitconfig("repo:acme/app", "rh-w2", ["self-hosted"])
        await a.generate_jitconfig("repo:acme/app", "rh-w3", ["self-hosted"])
        with pytest.raises(RateLimited, match="budget of 3 content-creating") as info:
            await b.generate_jitconfig("repo:acme/app", "rh-w4", ["self-hosted"])
        assert info.value.secondary is True and info.value.attempts == 0
        assert 0 < info.value.retry_at - time.monotonic() <= 51  # the minute's end, from :10
        await b.list_runners("repo:acme/app")  # reads are not writes
        assert (await sim_stats(http))["api_calls"]["generate-jitconfig"] == {"201": 3}

        # Without Redis every node counts its own writes against the budget: slower to
        # learn, never blocked.
        for name in list(local_redis.pids()):
            local_redis.kill(name, signal.SIGKILL)
        began = time.monotonic()
        for i in range(3):
            await b.generate_jitconfig("repo:acme/app", f"rh-x{i}", ["self-hosted"])
        with pytest.raises(RateLimited, match="budget of 3"):
            await b.generate_jitconfig("repo:acme/app", "rh-x3", ["self-hosted"])
        assert time.monotonic() - began < 10  # each Redis call gave up fast
        assert (await sim_stats(http))["api_calls"]["generate-jitconfig"] == {"201": 6}
