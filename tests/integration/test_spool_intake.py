"""The spool end to end: while PostgreSQL is unreachable (a closed port) verified deliveries
are answered 202 `spooled` and journaled; a drainer then replays them into a real database
in order, exactly once (I1, I2), even when interrupted or replayed twice."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY

from runnerhub.config import Settings, WebhookSettings
from runnerhub.context import NodeContext
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.waiting import wait_until
from runnerhub.intake import webhook
from runnerhub.intake.drainer import SpoolDrainer
from runnerhub.intake.spool import VerifiedDelivery, iter_segment
from runnerhub.intake.webhook import WebhookIntake
from runnerhub.store.db import Pool, open_pool
from runnerhub.store.deliveries import Recorded
from tests.apps import node_app
from tests.conftest import make_settings
from tests.metrics import sample
from tests.payloads import signed, workflow_job

Signed = tuple[bytes, dict[str, str]]


def settings_for(dsn: str, state_dir: Path, **spool: Any) -> Settings:
    return make_settings(
        dsn,
        node={"id": "node-a", "state_dir": str(state_dir)},
        database={"dsn": dsn, "pool_min_size": 1, "pool_max_size": 8, "connect_timeout_s": 0.5},
        spool=spool,
    )


def unreachable() -> str:
    return f"host=127.0.0.1 port={free_port()} dbname=x user=x password=x"


@asynccontextmanager
async def in_process_node(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    pool = await open_pool(settings.database)
    app = node_app(NodeContext(settings, pool))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://node"
        ) as client:
            client.intake = app.state.intake  # type: ignore[attr-defined]
            yield client
    finally:
        await app.state.intake.close()
        await pool.close()


async def deliver(client: httpx.AsyncClient, request: Signed) -> httpx.Response:
    body, headers = request
    return await client.post("/webhooks/github", content=body, headers=headers)


def guid(request: Signed) -> str:
    return request[1]["X-GitHub-Delivery"]


def journal(directory: Path) -> list[str]:
    return [d.guid for seg in sorted(directory.glob("*.seg")) for d in iter_segment(seg)]


async def rows(db: Pool, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        cur = await conn.execute(sql, args)
        return await cur.fetchall()


async def scalar(db: Pool, sql: str, *args: Any) -> Any:
    (row,) = await rows(db, sql, *args)
    return next(iter(row.values()))


async def snapshot(db: Pool) -> tuple[Any, ...]:
    return (
        await rows(db, "SELECT * FROM jobs ORDER BY id"),
        await rows(db, "SELECT delivery_guid, outcome, job_id FROM webhook_deliveries ORDER BY 1"),
        await scalar(db, "SELECT count(*) FROM events"),
    )


async def drain(settings: Settings, db: Pool) -> int:
    intake = WebhookIntake(settings, db)
    try:
        return await intake.drainer.drain()
    finally:
        await intake.close()


async def test_spooled_deliveries_arrive_in_order_exactly_once(
    tmp_path: Path, dsn: str, db: Pool
) -> None:
    life = [
        signed(workflow_job(501, "queued")),
        signed(workflow_job(501, "in_progress", runner_name="rh-501")),
        signed(workflow_job(501, "completed", runner_name="rh-501", conclusion="success")),
    ]
    invalid = workflow_job(502)
    del invalid["workflow_job"]["id"]
    burst = [signed(workflow_job(510 + i)) for i in range(20)]
    others = {
        "ping": signed({"zen": "Design for failure.", "hook_id": 1}, event="ping"),
        "ignored": signed({"action": "opened"}, event="pull_request"),
        "malformed": signed(None, raw=b'{"action": "queued", '),
        "invalid": signed(invalid),
    }
    spool_dir = tmp_path / "spool"
    async with in_process_node(settings_for(unreachable(), tmp_path)) as client:
        for request in life:  # one after the other: the journal keeps their order
            r = await deliver(client, request)
            assert (r.status_code, r.json()["outcome"]) == (202, "spooled")
        answers = await asyncio.gather(*(deliver(client, q) for q in [*burst, *others.values()]))
        assert {(a.status_code, a.json()["outcome"]) for a in answers} == {(202, "spooled")}
        sent = [guid(q) for q in [*life, *burst, *others.values()]]
        assert journal(spool_dir)[:3] == sent[:3]
        assert sorted(journal(spool_dir)) == sorted(sent)
        stats = client.intake.spool.stats()  # type: ignore[attr-defined]
        assert stats.entries == len(sent) and stats.writable
        assert REGISTRY.get_sample_value("runnerhub_spool_entries") == len(sent)
    kept = tmp_path / "kept"
    shutil.copytree(spool_dir, kept)

    assert await drain(settings_for(dsn, tmp_path), db) == len(sent)
    assert journal(spool_dir) == []
    stored = await rows(db, "SELECT delivery_guid, received_by, outcome FROM webhook_deliveries")
    assert sorted(r["delivery_guid"] for r in stored) == sorted(sent)
    assert {r["received_by"] for r in stored} == {"node-a"}
    outcome = {r["delivery_guid"]: r["outcome"] for r in stored}
    assert [outcome[guid(q)] for q in life] == ["created", "advanced", "advanced"]
    assert {k: outcome[guid(q)] for k, q in others.items()} == {k: k for k in others}
    done = await rows(db, "SELECT state, conclusion, runner_name FROM jobs WHERE id = 501")
    assert done == [{"state": "completed", "conclusion": "success", "runner_name": "rh-501"}]
    queued = await rows(db, "SELECT pool FROM jobs WHERE id BETWEEN 510 AND 529 AND state='queued'")
    assert [r["pool"] for r in queued] == ["linux"] * 20

    before = await snapshot(db)  # replaying the same journal again changes nothing (I2)
    assert await drain(settings_for(dsn, tmp_path, dir=str(kept)), db) == len(sent)
    assert await snapshot(db) == before


async def test_a_spooled_delivery_that_cannot_be_classified_is_quarantined_not_blocking(
    tmp_path: Path, dsn: str, db: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deep JSON used to raise out of the replay and block the drain for good; it is now
    # malformed like any other bad JSON, and whatever else raises is set aside.
    deep = signed(None, raw=b"[" * 100_000 + b"]" * 100_000)
    poison, after = signed(workflow_job(561)), signed(workflow_job(562))
    async with in_process_node(settings_for(unreachable(), tmp_path)) as client:
        for request in (deep, poison, after):
            assert (await deliver(client, request)).json()["outcome"] == "spooled"
    classify = webhook.classify

    def fails_on_poison(v: VerifiedDelivery, *args: Any) -> Any:
        if v.guid == guid(poison):
            raise RuntimeError("cannot classify this one")
        return classify(v, *args)

    monkeypatch.setattr(webhook, "classify", fails_on_poison)
    assert await drain(settings_for(dsn, tmp_path), db) == 3
    assert journal(tmp_path / "spool") == []
    stored = await rows(db, "SELECT delivery_guid, outcome FROM webhook_deliveries")
    assert {r["delivery_guid"]: r["outcome"] for r in stored} == {
        guid(deep): "malformed",
        guid(after): "created",
    }
    quarantined = list((tmp_path / "spool" / "quarantine").glob("*.rec"))
    assert len(quarantined) == 1, "the delivery that could not be classified is kept aside"


async def test_an_interrupted_drain_completes_without_duplicates(
    tmp_path: Path, dsn: str, db: Pool
) -> None:
    requests = [signed(workflow_job(700 + i)) for i in range(250)]
    async with in_process_node(settings_for(unreachable(), tmp_path)) as client:
        answers = await asyncio.gather(*(deliver(client, q) for q in requests))
        assert {a.status_code for a in answers} == {202}

    settings = settings_for(dsn, tmp_path)  # replayed 100 at a time (webhook.max_batch)
    first = WebhookIntake(settings, db)
    assert await first.drainer.drain(max_batches=1) == 100
    await first.close()  # the node stops mid-drain

    second = WebhookIntake(settings, db)

    async def killed_before_checkpoint(
        batch: Sequence[VerifiedDelivery],
    ) -> list[Recorded | Exception]:
        await second.replay(batch)
        raise RuntimeError("the node died before moving the checkpoint")

    try:
        await SpoolDrainer(second.spool, killed_before_checkpoint).drain()
    except RuntimeError:
        pass
    else:
        raise AssertionError("the replay should have failed")
    assert second.spool.stats().entries == 150  # the checkpoint did not move
    await second.close()

    assert await drain(settings, db) == 150
    assert await scalar(db, "SELECT count(*) FROM webhook_deliveries") == 250
    assert await scalar(db, "SELECT count(*) FROM jobs") == 250
    assert await scalar(db, "SELECT count(*) FROM events WHERE kind = 'job.created'") == 250
    assert journal(tmp_path / "spool") == []


async def test_a_full_spool_refuses_with_503_and_keeps_what_it_accepted(
    tmp_path: Path, dsn: str, db: Pool
) -> None:
    def big(job_id: int) -> Signed:
        payload = workflow_job(job_id)
        payload["padding"] = "x" * 300_000
        return signed(payload)

    requests = [big(801 + i) for i in range(4)]
    rejected = sample("runnerhub_spool_rejected_total")
    settings = settings_for(unreachable(), tmp_path, max_bytes=1024 * 1024)
    async with in_process_node(settings) as client:
        answers = [await deliver(client, q) for q in requests]
        assert [(a.status_code, a.json()["outcome"]) for a in answers] == [
            (202, "spooled"),
            (202, "spooled"),
            (202, "spooled"),
            (503, "spool_full"),
        ]
        assert REGISTRY.get_sample_value("runnerhub_spool_rejected_total") == rejected + 1
        assert client.intake.spool.stats().entries == 3  # type: ignore[attr-defined]

    assert await drain(settings_for(dsn, tmp_path), db) == 3
    jobs = await rows(db, "SELECT id FROM jobs ORDER BY id")
    assert [j["id"] for j in jobs] == [801, 802, 803]


async def test_a_commit_slower_than_the_bounded_wait_is_answered_from_the_spool_and_lands_once(
    tmp_path: Path, dsn: str, db: Pool
) -> None:
    """A commit that waits (a table lock held elsewhere, standing in for a hung primary or a
    lost synchronous standby: the server takes the statement and answers nothing) holds the
    delivery for webhook.db_wait_s only: it is answered 202 `spooled`. The slow recording
    lands once the lock goes; the replay of the spooled copy then finds its GUID recorded:
    one delivery, one job, recorded once."""
    request = signed(workflow_job(871))
    waited = sample("runnerhub_webhook_db_wait_exceeded_total")
    settings = settings_for(dsn, tmp_path)
    default = WebhookSettings(secrets=settings.webhook.secrets).db_wait_s
    settings.webhook.db_wait_s = default  # the bound a node has unless told otherwise
    assert default == 0.1
    async with in_process_node(settings) as client:
        async with db.connection() as blocker:  # the lock lasts until this transaction ends
            await blocker.execute("LOCK TABLE webhook_deliveries IN ACCESS EXCLUSIVE MODE")
            began = time.monotonic()
            r = await deliver(client, request)
            took = time.monotonic() - began
            assert (r.status_code, r.json()["outcome"]) == (202, "spooled"), r.json()
            assert journal(tmp_path / "spool") == [guid(request)]
            sql = "SELECT count(*) FROM pg_locks WHERE NOT granted"
            assert await scalar(db, sql) >= 1  # the recording still waits on the lock
        assert took < 1.0, took  # the bounded wait, not the lock's time
        assert REGISTRY.get_sample_value("runnerhub_webhook_db_wait_exceeded_total") == waited + 1

        async def landed() -> bool:
            sql = "SELECT count(*) FROM webhook_deliveries WHERE delivery_guid = %s"
            return bool(await scalar(db, sql, guid(request)))

        await wait_until(landed, 10, "the slow recording to land")
        assert await client.intake.drainer.drain() == 1  # type: ignore[attr-defined]
    stored = await rows(db, "SELECT outcome, job_id FROM webhook_deliveries")
    assert stored == [{"outcome": "created", "job_id": 871}]
    assert [j["state"] for j in await rows(db, "SELECT state FROM jobs")] == ["queued"]
    events = await rows(db, "SELECT kind, subject FROM events")
    assert events == [{"kind": "job.created", "subject": "job:871"}]


async def test_after_a_delivery_the_database_did_not_record_the_next_go_straight_to_the_spool(
    tmp_path: Path, dsn: str, db: Pool
) -> None:
    """Through a failover every delivery used to wait `db_wait_s` for the database again,
    once a drain interval. Now only the first does: the next are spooled at once, however
    long the database stays away, until the drainer records again; then deliveries are
    recorded directly."""
    first, second, third = (signed(workflow_job(881 + i)) for i in range(3))
    settings = make_settings(
        dsn,
        node={"id": "node-a", "state_dir": str(tmp_path)},
        # A statement held on the lock below is cancelled after 1 s: so the drainer's replay
        # fails (and is tried again) while the database stays away.
        database={"dsn": dsn, "pool_min_size": 1, "pool_max_size": 8, "statement_timeout_ms": 1000},
        spool={"drain_interval_s": 0.1},
    )
    settings.webhook.db_wait_s = 0.2
    waited = sample("runnerhub_webhook_db_wait_exceeded_total")
    paused = sample("runnerhub_spool_drain_paused_total")
    async with in_process_node(settings) as client:
        intake: WebhookIntake = client.intake  # type: ignore[attr-defined]
        intake.start()  # the drainer
        # The lock lasts until this transaction ends (a connection of its own: the pool's
        # end a transaction left idle after a few seconds).
        async with await psycopg.AsyncConnection.connect(dsn) as blocker:
            await blocker.execute("LOCK TABLE webhook_deliveries IN ACCESS EXCLUSIVE MODE")
            r = await deliver(client, first)
            assert (r.status_code, r.json()["outcome"]) == (202, "spooled"), r.json()
            assert sample("runnerhub_webhook_db_wait_exceeded_total") == waited + 1
            assert sample("runnerhub_webhook_database_bypassed") == 1

            def drainer_failed_twice() -> bool:
                return sample("runnerhub_spool_drain_paused_total") >= paused + 2

            # Longer than the old window (one drain interval) after the first delivery.
            await wait_until(drainer_failed_twice, 20, "the drainer to fail to replay twice")
            r = await deliver(client, second)
            assert (r.status_code, r.json()["outcome"]) == (202, "spooled"), r.json()
            assert sample("runnerhub_webhook_db_wait_exceeded_total") == waited + 1, (
                "the second delivery waited for the database"
            )
        # The lock is gone: the drainer replays both, and live intake records again.
        await wait_until(
            lambda: sample("runnerhub_webhook_database_bypassed") == 0, 20, "the drainer to record"
        )
        await wait_until(lambda: intake.spool.stats().entries == 0, 20, "the spool to drain")
        r = await deliver(client, third)
        assert (r.status_code, r.json()["outcome"]) == (202, "created"), r.json()
    stored = await rows(db, "SELECT delivery_guid, outcome FROM webhook_deliveries")
    assert {s["delivery_guid"]: s["outcome"] for s in stored} == {
        guid(q): "created" for q in (first, second, third)
    }
    assert [j["id"] for j in await rows(db, "SELECT id FROM jobs ORDER BY id")] == [881, 882, 883]
