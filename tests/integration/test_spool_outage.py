"""A real outage: PostgreSQL stops in the middle of intake and comes back. Deliveries made
meanwhile are spooled, then replayed by the running drainer; none is lost or doubled.

The session's PostgreSQL is shared with other tests, so this one runs its own server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runnerhub.context import NodeContext
from runnerhub.dev.cluster.postgres import LocalPostgres
from runnerhub.dev.waiting import wait_until
from runnerhub.store.db import Pool, open_pool
from runnerhub.store.migrate import migrate
from tests.apps import node_app
from tests.conftest import make_settings
from tests.payloads import signed, workflow_job


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[LocalPostgres]:
    pg = LocalPostgres(tmp_path / "pg")
    pg.init()
    pg.start()
    pg.wait_ready()
    yield pg
    pg.destroy()


async def fetch(db: Pool, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        cur = await conn.execute(sql, args)
        return await cur.fetchall()


async def test_deliveries_during_an_outage_are_spooled_and_replayed(
    tmp_path: Path, own_postgres: LocalPostgres
) -> None:
    pg = own_postgres
    dsn = await asyncio.to_thread(pg.create_database, "rh")
    await migrate(dsn)
    settings = make_settings(
        dsn,
        node={"id": "node-a", "state_dir": str(tmp_path / "node")},
        database={"dsn": dsn, "pool_min_size": 1, "pool_max_size": 4, "connect_timeout_s": 1},
        spool={"drain_interval_s": 0.2},
    )
    db = await open_pool(settings.database)
    await db.wait(timeout=10)
    app = node_app(NodeContext(settings, db))
    intake = app.state.intake
    intake.start()
    before = signed(workflow_job(601, "queued"))
    during = [
        signed(workflow_job(601, "in_progress", runner_name="rh-601")),
        signed(workflow_job(602, "queued")),
        signed(workflow_job(603, "queued")),
    ]
    after = signed(workflow_job(601, "completed", runner_name="rh-601", conclusion="failure"))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://node"
        ) as client:

            async def deliver(request: tuple[bytes, dict[str, str]]) -> tuple[int, str]:
                body, headers = request
                r = await client.post("/webhooks/github", content=body, headers=headers)
                return r.status_code, r.json()["outcome"]

            assert await deliver(before) == (202, "created")
            await asyncio.to_thread(pg.stop)
            for request in during:
                assert await deliver(request) == (202, "spooled")
            assert intake.spool.stats().entries == 3
            spooled_by = time.time()

            await asyncio.to_thread(pg.start)
            await wait_until(
                lambda: intake.spool.stats().entries == 0, timeout_s=20, what="the spool to drain"
            )
            status, _ = await deliver(after)
            assert status == 202

            async def completed() -> bool:
                job = await fetch(db, "SELECT state FROM jobs WHERE id = 601")
                return job == [{"state": "completed"}]

            await wait_until(completed, what="job 601 to complete")
        guids = [r[1]["X-GitHub-Delivery"] for r in [before, *during, after]]
        stored = await fetch(db, "SELECT delivery_guid, outcome FROM webhook_deliveries")
        assert sorted(r["delivery_guid"] for r in stored) == sorted(guids)
        outcome = {r["delivery_guid"]: r["outcome"] for r in stored}
        assert [outcome[g] for g in guids] == [
            "created",
            "advanced",
            "created",
            "created",
            "advanced",
        ]
        # Replayed deliveries keep the time the node took them, not that of the replay.
        times = await fetch(
            db,
            "SELECT delivery_guid, extract(epoch FROM received_at)::float8 AS t "
            "FROM webhook_deliveries",
        )
        received = {r["delivery_guid"]: r["t"] for r in times}
        replayed = [received[r[1]["X-GitHub-Delivery"]] for r in during]
        assert max(replayed) <= spooled_by < received[guids[-1]]
        jobs = await fetch(db, "SELECT id, state, conclusion FROM jobs ORDER BY id")
        assert jobs == [
            {"id": 601, "state": "completed", "conclusion": "failure"},
            {"id": 602, "state": "queued", "conclusion": None},
            {"id": 603, "state": "queued", "conclusion": None},
        ]
    finally:
        await intake.close()
        await db.close()
