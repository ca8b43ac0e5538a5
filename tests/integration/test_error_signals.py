"""The error-rate signals the forecaster reads (domain.rates), fed by real calls: GitHub
calls against the simulator (a 5xx or no answer is an error, a 4xx is not) and requests for
a connection from a real psycopg pool (one that cannot reach its server fails them)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from runnerhub.dev.cluster.ports import free_port
from runnerhub.domain.rates import CounterErrorRate, ErrorRate
from runnerhub.github import GitHubClient, GitHubError, PatAuth
from runnerhub.store.db import UNAVAILABLE, Pool, make_pool
from tests.conftest import make_settings
from tests.integration.test_github_client_sim import PAT, SIM_URL, sim_config, sim_http


@pytest.fixture
async def sim() -> AsyncIterator[httpx.AsyncClient]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with sim_http(sim_config(key, repositories=["acme/app"])) as http:
        yield http


async def test_github_calls_that_fail_on_githubs_side_count_as_errors(
    sim: httpx.AsyncClient,
) -> None:
    client = GitHubClient(SIM_URL, PatAuth(PAT), http=sim, max_retries=1)
    statuses = [503] * 5 + [200] * 10 + [404] * 5
    await sim.post("/_sim/faults", json={"responses": {"list-runners": statuses}})
    for _ in statuses:
        with contextlib.suppress(GitHubError):
            await client.list_runners("repo:acme/app")
    assert client.errors.rate() == 5 / 20  # the 503s; the 404s are answers


async def test_github_calls_without_an_answer_count_as_errors() -> None:
    client = GitHubClient(f"http://127.0.0.1:{free_port()}", PatAuth(PAT), max_retries=1)
    try:
        for _ in range(20):
            with contextlib.suppress(GitHubError):
                await client.list_runners("repo:acme/app")
        assert client.errors.rate() == 1.0
    finally:
        await client.aclose()


def counters(pool: Pool) -> tuple[int, int]:
    s = pool.get_stats()  # psycopg_pool's counters, absent until non-zero
    return s.get("requests_num", 0), s.get("requests_errors", 0)


async def test_failed_requests_for_a_database_connection_count_as_errors(dsn: str) -> None:
    down = f"host=127.0.0.1 port={free_port()} dbname=x user=x connect_timeout=1"
    for target, want in ((dsn, 0.0), (down, 1.0)):
        settings = make_settings(target, database={"dsn": target, "connect_timeout_s": 0.2})
        pool = make_pool(settings.database)
        await pool.open(wait=False)

        rate = CounterErrorRate(functools.partial(counters, pool), ErrorRate(min_calls=20))
        try:
            rate.sample()  # the baseline
            for _ in range(20):
                with contextlib.suppress(*UNAVAILABLE):
                    async with pool.connection() as conn:
                        await conn.execute("SELECT 1")
            assert rate.sample() == want
        finally:
            await pool.close()
