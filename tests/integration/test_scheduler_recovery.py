"""The scheduler resuming a provisioning that a database failover cut short (I5): the runner
was started, but the write saying so never committed. A runner still running is adopted; one
that already ran and exited is recorded as exited, and its spent name is never asked of
GitHub again (a second runner would start under it)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from runnerhub.backends.base import RunnerSpec
from runnerhub.backends.process import ProcessBackend
from runnerhub.config import ProcessBackendSettings, Settings
from runnerhub.context import NodeContext
from runnerhub.control.scheduler import Scheduler
from runnerhub.dev.waiting import wait_until
from runnerhub.github.auth import PatAuth
from runnerhub.github.client import GitHubClient
from runnerhub.store import runners as runner_store
from runnerhub.store.db import Pool


async def started_but_unrecorded(
    db: Pool, tmp_path: Path, settings: Settings, command: list[str]
) -> tuple[Scheduler, ProcessBackend, list[httpx.Request]]:
    calls: list[httpx.Request] = []

    def github(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500, json={"message": "not expected in this test"})

    backend = ProcessBackend(
        tmp_path / "runners", {"linux": ProcessBackendSettings(command=command)}
    )
    client = GitHubClient(
        "http://github.invalid",
        PatAuth("ghp_test"),
        http=httpx.AsyncClient(transport=httpx.MockTransport(github)),
        max_retries=0,
    )
    scheduler = Scheduler(NodeContext(settings, db), client, {"process": backend})
    async with db.connection() as conn:
        await runner_store.insert_requested(
            conn,
            name="rh-7-0",
            pool="linux",
            scope="repo:acme/web",
            labels=["self-hosted", "linux", "x64"],
            job_id=None,
            generation=0,
            backend="process",
            node="node-test",
        )
        await runner_store.set_state(conn, "rh-7-0", "registered", "node-test", github_runner_id=42)
    await backend.provision(RunnerSpec("rh-7-0", "linux", ("self-hosted",), None, "jit"))
    return scheduler, backend, calls


async def test_a_runner_that_already_exited_is_not_provisioned_again(
    db: Pool, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    scheduler, backend, calls = await started_but_unrecorded(
        db, tmp_path, settings_factory(), [sys.executable, "-c", "pass"]
    )

    async def exited() -> bool:
        return any(b.name == "rh-7-0" and not b.alive for b in await backend.list())

    await wait_until(exited, 10, "the runner to run and exit")
    async with db.connection() as conn:
        row = await runner_store.get(conn, "rh-7-0")
    assert row is not None
    pool = next(p for p in scheduler.ctx.settings.pools if p.name == "linux")
    await scheduler._provision(pool, row)
    assert calls == []  # no JIT config asked for under the spent name
    async with db.connection() as conn:
        after = await runner_store.get(conn, "rh-7-0")
    assert after is not None and after.state == "exited"


async def test_a_runner_still_running_is_adopted(
    db: Pool, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    scheduler, backend, calls = await started_but_unrecorded(
        db, tmp_path, settings_factory(), [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    async with db.connection() as conn:
        row = await runner_store.get(conn, "rh-7-0")
    assert row is not None
    pool = next(p for p in scheduler.ctx.settings.pools if p.name == "linux")
    try:
        await scheduler._provision(pool, row)
        assert calls == []
        async with db.connection() as conn:
            after = await runner_store.get(conn, "rh-7-0")
        assert after is not None and after.state == "running"
    finally:
        await backend.terminate("rh-7-0", grace_s=1)
