"""Circuit breakers around GitHub and a runner backend, with the real scheduler, the GitHub
simulator and the process backend: repeated failures open the circuit, calls then fail fast
without reaching the service, the job waits with the reason, and once the service works
again a trial call closes the circuit and the job gets its runner. Nothing is lost."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY

from runnerhub.backends.guarded import GuardedBackend
from runnerhub.backends.process import ProcessBackend
from runnerhub.breakers import CircuitBreaker
from runnerhub.config import Settings
from runnerhub.context import NodeContext
from runnerhub.control.scheduler import Scheduler
from runnerhub.dev.waiting import wait_until
from runnerhub.domain.breaker import BreakerState
from runnerhub.github import GitHubClient, PatAuth, Unavailable
from runnerhub.incidents.recorder import IncidentRecorder
from runnerhub.store import jobs as job_store
from runnerhub.store import runners as runner_store
from runnerhub.store.db import Pool
from tests.apps import node_app
from tests.integration.test_github_client_sim import PAT, SIM_URL, sim_config, sim_http, sim_stats
from tests.payloads import signed, workflow_job

READ = {"Authorization": "Bearer read-token-0123456789"}


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def sim(key: rsa.RSAPrivateKey) -> AsyncIterator[httpx.AsyncClient]:
    async with sim_http(sim_config(key, repositories=["acme/app"])) as http:
        yield http


def opened(name: str) -> float:
    return (
        REGISTRY.get_sample_value("runnerhub_circuit_breaker_opened_total", {"breaker": name})
        or 0.0
    )


async def test_github_circuit_opens_fails_fast_then_closes_after_a_good_trial(
    sim: httpx.AsyncClient,
) -> None:
    now = [0.0]
    breaker = CircuitBreaker("github", failure_threshold=2, open_s=30, clock=lambda: now[0])
    client = GitHubClient(SIM_URL, PatAuth(PAT), http=sim, max_retries=1, breaker=breaker)
    before = opened("github")
    await sim.post("/_sim/faults", json={"responses": {"list-runners": [503, 502, 200]}})
    for _ in range(2):
        with pytest.raises(Unavailable, match="50"):
            await client.list_runners("repo:acme/app")
    assert breaker.state is BreakerState.OPEN and opened("github") == before + 1
    with pytest.raises(Unavailable, match="github circuit open after 2 failures") as info:
        await client.list_runners("repo:acme/app")
    assert info.value.attempts == 0
    assert (await sim_stats(sim))["api_calls"]["list-runners"] == {"503": 1, "502": 1}
    now[0] = 31  # the trial goes through, GitHub answers: closed
    assert await client.list_runners("repo:acme/app") == []
    assert breaker.state is BreakerState.CLOSED


async def test_a_broken_backend_opens_its_circuit_the_job_waits_with_the_reason_then_runs(
    db: Pool, sim: httpx.AsyncClient, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    runner = tmp_path / "bin" / "runner"  # missing until the "repair"
    settings = settings_factory(
        github={"api_url": SIM_URL, "auth": {"token": PAT}, "repositories": ["acme/app"]},
        pools=[
            {
                "name": "linux",
                "labels": ["self-hosted", "linux", "x64"],
                "process": {"command": [str(runner)], "stop_grace_s": 1},
            }
        ],
        scheduler={"retry_base_s": 0.05, "retry_max_s": 0.2},
    )
    breaker = CircuitBreaker("backend:process", failure_threshold=2, open_s=0.5)
    process = ProcessBackend(tmp_path / "runners", {"linux": settings.pools[0].process})
    backend = GuardedBackend(process, breaker)
    ctx = NodeContext(settings, db)
    client = GitHubClient(SIM_URL, PatAuth(PAT), http=sim)
    scheduler = Scheduler(ctx, client, {"process": backend})

    app = node_app(ctx)  # the job arrives as GitHub sends it: a signed webhook
    body, headers = signed(workflow_job(101, "queued", labels=["self-hosted", "linux", "x64"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as c:
        assert (await c.post("/webhooks/github", content=body, headers=headers)).status_code == 202
    await app.state.intake.batcher.close()

    async def job() -> job_store.JobRow:
        async with db.connection() as conn:
            row = await job_store.get_job(conn, 101)
        assert row is not None
        return row

    async def waits_for_the_circuit() -> bool:
        await scheduler.cycle()
        reason = str((await job()).waiting_reason)
        return "backend:process circuit open" in reason

    await wait_until(waits_for_the_circuit, 15, "the job to say the circuit is open")
    assert breaker.machine.last_error and "cannot start" in breaker.machine.last_error

    runner.parent.mkdir()
    runner.write_text("#!/bin/sh\nexec sleep 30\n")
    os.chmod(runner, 0o755)

    async def runs() -> bool:
        await scheduler.cycle()
        async with db.connection() as conn:
            live = await runner_store.live(conn, "linux")
        return any(r.provisioned_for == 101 and r.state == "running" for r in live)

    try:
        await wait_until(runs, 15, "a runner for the job once the backend works")
        assert breaker.state is BreakerState.CLOSED
        assert (await job()).state == "queued"  # still there, now with its runner
    finally:
        for r in await process.list():
            await process.terminate(r.name, grace_s=1)


async def test_an_open_circuit_is_recorded_as_an_incident_until_it_closes(
    db: Pool, sim: httpx.AsyncClient, settings_factory: Callable[..., Settings]
) -> None:
    recorder = IncidentRecorder(db, "node-test", is_leader=lambda: True)
    now = [0.0]
    breaker = CircuitBreaker(
        "github", failure_threshold=1, open_s=5, clock=lambda: now[0], on_change=recorder.on_breaker
    )
    recorder.started("breaker:github")
    client = GitHubClient(SIM_URL, PatAuth(PAT), http=sim, max_retries=1, breaker=breaker)
    stop = asyncio.Event()
    writer = asyncio.create_task(recorder.run(stop))
    ctx = NodeContext(settings_factory(), db)
    app = node_app(ctx)
    try:
        await sim.post("/_sim/faults", json={"responses": {"list-runners": [503]}})
        with pytest.raises(Unavailable):
            await client.list_runners("repo:acme/app")
        now[0] = 6
        await client.list_runners("repo:acme/app")  # the trial succeeds: closed

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://n"
        ) as c:

            async def recorded() -> dict[str, object] | None:
                r = await c.get("/api/v1/incidents?component=breaker", headers=READ)
                items = r.json()["items"]
                return items[0] if items and items[0]["recovered_at"] else None

            incident = await wait_until(recorded, 10, "the incident, opened and closed")
            assert incident["component"] == "breaker:github"
            assert incident["kind"] == "breaker_open" and incident["node"] == "node-test"
            assert "HTTP 503" in str(incident["summary"])
            assert incident["action"] == "failed fast; one trial call every 5 s"
            assert float(incident["recovery_s"]) >= 0  # type: ignore[arg-type]
            open_now = await c.get("/api/v1/incidents?open=true", headers=READ)
            assert open_now.json()["items"] == []
    finally:
        stop.set()
        await writer
        await app.state.intake.batcher.close()
