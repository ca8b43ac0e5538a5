"""GitHubClient against the GitHub simulator (in process, through httpx.ASGITransport)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runnerhub.dev.sim.github import SimConfig, create_app
from runnerhub.github import (
    AppAuth,
    Conflict,
    GitHubClient,
    PatAuth,
    RateLimited,
    RunnerBusy,
    Unavailable,
    ValidationFailed,
)

SIM_URL = "http://github-sim.test"
PAT = "ghp_integrationTESTtoken000000000000"
APP_ID = 4242
INSTALLATION_ID = 777


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sim_config(app_key: rsa.RSAPrivateKey, **overrides: Any) -> SimConfig:
    public_pem = (
        app_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings: dict[str, Any] = {
        "repositories": ["acme/app"],
        "organizations": ["acme"],
        "pats": [PAT],
        "app_id": APP_ID,
        "app_public_key_pem": public_pem,
        "installation_id": INSTALLATION_ID,
        **overrides,
    }
    return SimConfig(**settings)


@asynccontextmanager
async def sim_http(config: SimConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config)
    # ASGITransport does not run the lifespan; the simulator's background tasks need it.
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SIM_URL) as http,
    ):
        yield http


@pytest.fixture
async def http(app_key: rsa.RSAPrivateKey) -> AsyncIterator[httpx.AsyncClient]:
    async with sim_http(sim_config(app_key)) as client:
        yield client


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(http: httpx.AsyncClient, sleeps: Sleeps) -> GitHubClient:
    return GitHubClient(SIM_URL, PatAuth(PAT), http=http, sleep=sleeps)


async def sim_stats(http: httpx.AsyncClient) -> dict[str, Any]:
    resp = await http.get("/_sim/stats")
    resp.raise_for_status()
    stats: dict[str, Any] = resp.json()
    return stats


async def test_jit_then_conflict_on_the_same_name(client: GitHubClient) -> None:
    jit = await client.generate_jitconfig("repo:acme/app", "rh-int-1", ["self-hosted", "linux"])
    assert jit.runner.name == "rh-int-1"
    assert set(jit.runner.labels) == {"self-hosted", "linux"}
    assert jit.encoded_jit_config and jit.encoded_jit_config not in repr(jit)
    with pytest.raises(Conflict, match="already exists"):
        await client.generate_jitconfig("repo:acme/app", "rh-int-1", ["self-hosted"])
    with pytest.raises(ValidationFailed):
        await client.generate_jitconfig("repo:acme/app", "rh-int-2", [])


async def test_list_find_get_delete_runners(client: GitHubClient) -> None:
    created = [
        await client.generate_jitconfig("org:acme", f"rh-org-{i}", ["self-hosted"])
        for i in range(105)  # more than one page of 100
    ]
    listed = await client.list_runners("org:acme")
    assert sorted(r.id for r in listed) == sorted(j.runner.id for j in created)
    found = await client.find_runner("org:acme", "rh-org-7")
    assert found is not None and found.id == created[7].runner.id
    assert await client.find_runner("org:acme", "rh-org-999") is None
    got = await client.get_runner("org:acme", created[0].runner.id)
    assert got is not None and got.name == "rh-org-0"
    assert await client.delete_runner("org:acme", created[0].runner.id) is True
    assert await client.delete_runner("org:acme", created[0].runner.id) is False
    assert await client.get_runner("org:acme", created[0].runner.id) is None


async def test_busy_runner_cannot_be_deleted(client: GitHubClient, http: httpx.AsyncClient) -> None:
    jit = await client.generate_jitconfig("repo:acme/app", "rh-busy", ["self-hosted", "gpu"])
    await http.post(
        "/_sim/jobs",
        json={"repository": "acme/app", "labels": ["self-hosted", "gpu"], "duration_s": 60},
    )
    # Play the runner: the JIT config carries the simulator's runner credential.
    config = json.loads(base64.b64decode(jit.encoded_jit_config))
    runner_auth = {"Authorization": f"RunnerToken {config['runner_token']}"}
    base = f"/_sim/runner/{jit.runner.id}"
    (await http.post(f"{base}/session", headers=runner_auth)).raise_for_status()
    acquired = await http.post(f"{base}/acquire", params={"wait_s": 0}, headers=runner_auth)
    assert acquired.status_code == 200
    with pytest.raises(RunnerBusy, match="still running a job"):
        await client.delete_runner("repo:acme/app", jit.runner.id)
    runner = await client.get_runner("repo:acme/app", jit.runner.id)
    assert runner is not None and runner.busy is True


async def test_runs_and_jobs_of_enqueued_jobs(
    client: GitHubClient, http: httpx.AsyncClient
) -> None:
    resp = await http.post(
        "/_sim/jobs",
        json={"repository": "acme/app", "labels": ["self-hosted", "x64"], "count": 3},
    )
    assert resp.status_code == 201
    created = resp.json()["jobs"]
    run_id = created[0]["run_id"]
    runs = await client.list_runs("acme/app", "queued")
    assert run_id in [r["id"] for r in runs]
    jobs = await client.list_run_jobs("acme/app", run_id)
    assert sorted(j["id"] for j in jobs) == sorted(j["id"] for j in created)
    assert {j["status"] for j in jobs} == {"queued"}
    job = await client.get_job("acme/app", created[0]["id"])
    assert job is not None and job["labels"] == ["self-hosted", "x64"]
    assert await client.get_job("acme/app", 1) is None
    assert "acme/app" in await client.list_org_repos("acme")


async def test_app_auth_flow(http: httpx.AsyncClient, app_key: rsa.RSAPrivateKey) -> None:
    pem = app_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    auth = AppAuth(APP_ID, pem, INSTALLATION_ID, SIM_URL, http, time.time)
    client = GitHubClient(SIM_URL, auth, http=http)
    jit = await client.generate_jitconfig("repo:acme/app", "rh-app-1", ["self-hosted"])
    assert await client.find_runner("repo:acme/app", "rh-app-1") == jit.runner
    assert (await sim_stats(http))["api_calls"]["access-token"] == {"201": 1}  # cached

    # The simulator forgets the token (as if revoked): a 401 buys one new token.
    auth._token = "ghs_revoked"
    assert await client.get_runner("repo:acme/app", jit.runner.id) == jit.runner
    assert (await sim_stats(http))["api_calls"]["access-token"] == {"201": 2}


async def test_rate_limit_exhaustion_is_not_called_again(
    app_key: rsa.RSAPrivateKey, sleeps: Sleeps
) -> None:
    async with sim_http(sim_config(app_key, rate_limit=3)) as http:
        client = GitHubClient(SIM_URL, PatAuth(PAT), http=http, sleep=sleeps)
        for _ in range(3):
            await client.list_runners("repo:acme/app")
        assert client.rate_limit["core"].remaining == 0
        with pytest.raises(RateLimited, match="not calling GitHub") as info:
            await client.list_runners("repo:acme/app")
        assert info.value.reset_at is not None
        assert info.value.retry_at > time.monotonic()
        assert (await sim_stats(http))["api_calls"]["list-runners"] == {"200": 3}


async def test_rate_limit_fault_gives_primary_403(
    client: GitHubClient, http: httpx.AsyncClient
) -> None:
    await http.post("/_sim/faults", json={"rate_limit_remaining": 0})
    with pytest.raises(RateLimited) as info:
        await client.list_org_repos("acme")
    assert info.value.status == 403 and info.value.secondary is False
    with pytest.raises(RateLimited, match="not calling GitHub"):
        await client.list_org_repos("acme")
    assert (await sim_stats(http))["api_calls"]["list-repos"] == {"403": 1}


async def test_secondary_limit_and_5xx_faults(
    client: GitHubClient, http: httpx.AsyncClient, sleeps: Sleeps
) -> None:
    await http.post("/_sim/faults", json={"responses": {"list-runners": [429, 503]}})
    assert await client.list_runners("repo:acme/app") == []
    assert sleeps.calls[0] == 1.0  # the simulator's retry-after
    assert len(sleeps.calls) == 2  # then backoff after the 503
    await http.post("/_sim/faults", json={"responses": {"generate-jitconfig": [503]}})
    with pytest.raises(Unavailable):
        await client.generate_jitconfig("repo:acme/app", "rh-5xx", ["self-hosted"])
    assert (await sim_stats(http))["api_calls"]["generate-jitconfig"] == {"503": 1}


async def test_rate_limit_status_costs_nothing_and_answers_when_used_up(
    app_key: rsa.RSAPrivateKey, sleeps: Sleeps
) -> None:
    async with sim_http(sim_config(app_key, rate_limit=2)) as http:
        client = GitHubClient(SIM_URL, PatAuth(PAT), http=http, sleep=sleeps)
        assert (await client.get_rate_limit())["core"].remaining == 2  # counted nothing
        await client.list_runners("repo:acme/app")
        await client.list_runners("repo:acme/app")
        with pytest.raises(RateLimited):
            await client.list_runners("repo:acme/app")
        core = (await client.get_rate_limit())["core"]
        assert core.remaining == 0 and core.limit == 2 and core.reset > time.time()
        await http.post("/_sim/faults", json={"responses": {"rate-limit": [503]}})
        with pytest.raises(Unavailable) as info:
            await client.get_rate_limit()
        assert info.value.attempts == 1 and sleeps.calls == []  # one try, no waiting
