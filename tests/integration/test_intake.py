"""Webhook intake against a real PostgreSQL: I1 (2xx only once committed), I2 (idempotent),
I3 (monotonic), and bad input answered precisely with nothing stored."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from runnerhub.config import Settings
from runnerhub.context import NodeContext
from runnerhub.dev.cluster.ports import free_port
from runnerhub.store.db import Pool, open_pool
from tests import fuzzing
from tests.apps import in_process_client, node_app
from tests.conftest import make_settings
from tests.payloads import signed, workflow_job


async def post(client: httpx.AsyncClient, payload: Any, **kw: Any) -> httpx.Response:
    body, headers = signed(payload, **kw)
    return await client.post("/webhooks/github", content=body, headers=headers)


async def count(db: Pool, sql: str, *args: Any) -> int:
    async with db.connection() as conn:
        cur = await conn.execute(sql, args)
        row = await cur.fetchone()
        assert row is not None
        return int(next(iter(row.values())))


async def job(db: Pool, job_id: int) -> dict[str, Any]:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,))
        row = await cur.fetchone()
        assert row is not None, f"job {job_id} not stored"
        return row


# -- authentication and malformed input ---------------------------------------------------


async def test_wrong_signature_is_401_and_stores_nothing(
    client: httpx.AsyncClient, db: Pool
) -> None:
    r = await post(client, workflow_job(101), secret="not-the-secret")
    assert r.status_code == 401
    assert "X-Hub-Signature-256" in r.json()["message"]
    assert await count(db, "SELECT count(*) FROM webhook_deliveries") == 0
    assert await count(db, "SELECT count(*) FROM jobs") == 0


async def test_missing_signature_is_401(client: httpx.AsyncClient, db: Pool) -> None:
    body, headers = signed(workflow_job(102))
    del headers["X-Hub-Signature-256"]
    r = await client.post("/webhooks/github", content=body, headers=headers)
    assert r.status_code == 401
    assert await count(db, "SELECT count(*) FROM webhook_deliveries") == 0


async def test_signature_is_checked_over_raw_bytes_not_reserialised_json(
    client: httpx.AsyncClient, db: Pool
) -> None:
    payload = workflow_job(103)
    body, headers = signed(payload)
    # Same JSON value, different bytes: a re-serialising verifier would accept this.
    reformatted = json.dumps(payload, indent=2).encode()
    r = await client.post("/webhooks/github", content=reformatted, headers=headers)
    assert r.status_code == 401
    r = await client.post("/webhooks/github", content=body, headers=headers)
    assert r.status_code == 202


async def test_a_rotated_secret_is_still_accepted(client: httpx.AsyncClient) -> None:
    r = await post(client, workflow_job(104), secret="s3cret-previous")
    assert r.status_code == 202


async def test_missing_event_or_delivery_header_is_400(client: httpx.AsyncClient, db: Pool) -> None:
    for header in ("X-GitHub-Event", "X-GitHub-Delivery"):
        body, headers = signed(workflow_job(105))
        del headers[header]
        r = await client.post("/webhooks/github", content=body, headers=headers)
        assert r.status_code == 400
        assert header in r.json()["message"]
    assert await count(db, "SELECT count(*) FROM webhook_deliveries") == 0


async def test_body_over_5_mib_is_413(client: httpx.AsyncClient, db: Pool) -> None:
    big = b"{" + b" " * (5 * 1024 * 1024) + b"}"
    body, headers = signed(None, raw=big)
    r = await client.post("/webhooks/github", content=body, headers=headers)
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: checked while reading
        for _ in range(6):
            yield b" " * (1024 * 1024)

    headers.pop("Content-Length", None)
    r = await client.post("/webhooks/github", content=chunks(), headers=headers)
    assert r.status_code == 413
    assert await count(db, "SELECT count(*) FROM webhook_deliveries") == 0


async def test_a_body_that_does_not_arrive_in_time_is_408_and_stores_nothing(
    db: Pool, settings_factory: Callable[..., Settings]
) -> None:
    """A client that sends its headers and part of a body, then nothing: answered 408 after
    webhook.body_timeout_s, not held for as long as it likes."""
    settings = settings_factory(webhook={"secrets": ["s3cret-current"], "body_timeout_s": 0.3})
    app = node_app(NodeContext(settings, db))
    body, headers = signed(workflow_job(4081))
    never = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield body[:100]
        await never.wait()  # the rest never comes

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        began = time.monotonic()
        r = await client.post("/webhooks/github", content=stalls(), headers=headers)
        took = time.monotonic() - began
    await app.state.intake.batcher.close()
    assert (r.status_code, r.json()["outcome"]) == (408, "body_timeout"), r.text
    assert took < 2.0
    assert await count(db, "SELECT count(*) FROM webhook_deliveries") == 0


async def test_refusals_are_logged_a_few_at_a_time(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Anyone can send bad deliveries: 30 in a row log 10 lines, not 30 (the next line let
    through says how many were held back)."""
    capsys.readouterr()
    for _ in range(30):
        r = await post(client, workflow_job(4082), secret="not-the-secret")
        assert r.status_code == 401
    lines = [line for line in capsys.readouterr().out.splitlines() if "webhook refused" in line]
    assert len(lines) == 10, lines


async def test_malformed_json_is_400_and_recorded(client: httpx.AsyncClient, db: Pool) -> None:
    body, headers = signed(None, raw=b'{"action": "queued", ')
    r = await client.post("/webhooks/github", content=body, headers=headers)
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["message"]
    assert (
        await count(db, "SELECT count(*) FROM webhook_deliveries WHERE outcome = 'malformed'") == 1
    )


async def test_json_nested_deeper_than_the_parser_goes_is_400_not_a_500(
    client: httpx.AsyncClient, db: Pool
) -> None:
    # json.loads raises RecursionError, not JSONDecodeError, on this: it used to be a 500.
    body, headers = signed(None, raw=b'{"a": ' * 100_000 + b"1" + b"}" * 100_000)
    r = await client.post("/webhooks/github", content=body, headers=headers)
    assert (r.status_code, r.json()["outcome"]) == (400, "malformed")
    assert "nested too deeply" in r.json()["message"]
    stored = (
        "SELECT count(*) FROM webhook_deliveries WHERE outcome = 'malformed' AND payload IS NULL"
    )
    assert await count(db, stored) == 1


async def test_a_hook_id_that_is_no_ascii_number_is_ignored_not_a_500(
    client: httpx.AsyncClient, db: Pool
) -> None:
    # Header bytes arrive as latin-1: "²".isdigit() is True and int("²") raises; a number
    # past bigint would fail to store.
    for n, hook in enumerate((b"\xb2", b"1\xb9", b"99999999999999999999999")):
        body, headers = signed(workflow_job(130 + n))  # three bodies: three deliveries
        r = await client.post(
            "/webhooks/github", content=body, headers={**headers, "X-GitHub-Hook-ID": hook}
        )
        assert r.status_code in (200, 202), (hook, r.text)
    assert await count(db, "SELECT count(*) FROM webhook_deliveries WHERE hook_id IS NULL") == 3


async def test_workflow_job_without_an_id_is_400(client: httpx.AsyncClient, db: Pool) -> None:
    payload = workflow_job(106)
    del payload["workflow_job"]["id"]
    r = await post(client, payload)
    assert r.status_code == 400
    assert "workflow_job.id" in r.json()["message"]
    assert await count(db, "SELECT count(*) FROM jobs") == 0


async def test_ping_is_200(client: httpx.AsyncClient) -> None:
    r = await post(client, {"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    assert r.status_code == 200


async def test_other_events_are_202_and_recorded_as_ignored(
    client: httpx.AsyncClient, db: Pool
) -> None:
    r = await post(client, {"action": "opened"}, event="pull_request")
    assert r.status_code == 202
    assert await count(db, "SELECT count(*) FROM webhook_deliveries WHERE outcome='ignored'") == 1


async def test_null_workflow_job_is_2xx_and_recorded(client: httpx.AsyncClient, db: Pool) -> None:
    payload = workflow_job(107)
    payload["workflow_job"] = None
    r = await post(client, payload)
    assert 200 <= r.status_code < 300
    assert await count(db, "SELECT count(*) FROM webhook_deliveries WHERE outcome='null_job'") == 1


# -- durable, idempotent, monotonic ---------------------------------------------------------


async def test_queued_job_is_stored_with_its_delivery(client: httpx.AsyncClient, db: Pool) -> None:
    r = await post(
        client, workflow_job(201, labels=["self-hosted", "Linux", "X64"]), guid="guid-201"
    )
    assert r.status_code == 202
    row = await job(db, 201)
    assert row["state"] == "queued"
    assert row["pool"] == "linux"
    assert row["queued_at"] is not None
    assert (
        await count(
            db,
            "SELECT count(*) FROM webhook_deliveries "
            "WHERE delivery_guid = 'guid-201' AND job_id = 201",
        )
        == 1
    )


async def test_the_same_delivery_twice_changes_nothing(client: httpx.AsyncClient, db: Pool) -> None:
    payload = workflow_job(202)
    assert (await post(client, payload, guid="g-202")).status_code == 202
    before = await job(db, 202)
    events_before = await count(db, "SELECT count(*) FROM events")
    r = await post(client, payload, guid="g-202")
    assert r.status_code == 200
    assert r.json()["outcome"] == "duplicate_delivery"
    assert await job(db, 202) == before
    assert await count(db, "SELECT count(*) FROM webhook_deliveries") == 1
    assert await count(db, "SELECT count(*) FROM events") == events_before


async def test_the_same_job_event_under_a_new_guid_changes_no_job(
    client: httpx.AsyncClient, db: Pool
) -> None:
    payload = workflow_job(203)
    await post(client, payload)
    before = await job(db, 203)
    r = await post(client, {**payload, "sender": {"login": "someone-else"}})  # another body
    assert r.json()["outcome"] == "duplicate_event"
    assert await job(db, 203) == before


async def test_a_signed_body_replayed_under_new_guids_is_stored_once(
    client: httpx.AsyncClient, db: Pool
) -> None:
    """The GUID is not signed: a captured delivery sent again under fresh GUIDs is a
    duplicate by its body, not a new row each time (storage an attacker could fill)."""
    body, headers = signed(workflow_job(209))
    answers = []
    for n in range(5):
        headers = {**headers, "X-GitHub-Delivery": f"00000000-0000-0000-0000-00000000020{n}"}
        r = await client.post("/webhooks/github", content=body, headers=headers)
        answers.append((r.status_code, r.json()["outcome"]))
    assert answers == [(202, "created")] + [(200, "duplicate_delivery")] * 4
    assert await count(db, "SELECT count(*) FROM webhook_deliveries") == 1
    # Concurrent copies too (one transaction each, racing on the unique body hash).
    body, headers = signed(workflow_job(210))
    copies = [
        {**headers, "X-GitHub-Delivery": f"00000000-0000-0000-0000-00000000021{n}"}
        for n in range(6)
    ]
    rs = await asyncio.gather(
        *(client.post("/webhooks/github", content=body, headers=h) for h in copies)
    )
    assert sorted(r.json()["outcome"] for r in rs) == ["created"] + ["duplicate_delivery"] * 5
    assert await count(db, "SELECT count(*) FROM webhook_deliveries WHERE job_id = 210") == 1
    # A ping replayed the same way (no job: the plain path).
    body, headers = signed({"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    again = {**headers, "X-GitHub-Delivery": "00000000-0000-0000-0000-000000000299"}
    assert (await client.post("/webhooks/github", content=body, headers=headers)).status_code == 200
    r = await client.post("/webhooks/github", content=body, headers=again)
    assert r.status_code == 200
    assert await count(db, "SELECT count(*) FROM webhook_deliveries WHERE event = 'ping'") == 1


async def test_late_events_never_move_a_job_backwards(client: httpx.AsyncClient, db: Pool) -> None:
    await post(client, workflow_job(204, "completed", runner_name="rh-204-1", conclusion="success"))
    await post(client, workflow_job(204, "in_progress", runner_name="other"))
    r = await post(client, workflow_job(204, "queued"))
    assert r.json()["outcome"] == "stale"
    row = await job(db, 204)
    assert (row["state"], row["conclusion"], row["runner_name"]) == (
        "completed",
        "success",
        "rh-204-1",
    )


async def test_concurrent_copies_of_one_delivery_store_one(
    client: httpx.AsyncClient, db: Pool
) -> None:
    body, headers = signed(workflow_job(205), guid="g-205")
    answers = await asyncio.gather(
        *(client.post("/webhooks/github", content=body, headers=headers) for _ in range(12))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 11 + [202]
    assert await count(db, "SELECT count(*) FROM webhook_deliveries") == 1
    assert await count(db, "SELECT count(*) FROM events WHERE subject = 'job:205'") == 1


async def test_concurrent_events_of_one_job_end_in_the_latest_state(
    client: httpx.AsyncClient, db: Pool
) -> None:
    events = [
        workflow_job(206, "queued"),
        workflow_job(206, "in_progress", runner_name="r1"),
        workflow_job(206, "completed", runner_name="r1", conclusion="failure"),
    ]
    await asyncio.gather(*(post(client, e) for e in events * 3))
    row = await job(db, 206)
    assert (row["state"], row["conclusion"]) == ("completed", "failure")


async def test_missing_run_attempt_means_first_attempt(client: httpx.AsyncClient, db: Pool) -> None:
    await post(client, workflow_job(207, run_attempt=None))
    assert (await job(db, 207))["run_attempt"] == 1


async def test_github_hosted_and_unmatched_jobs_get_a_reason(
    client: httpx.AsyncClient, db: Pool
) -> None:
    await post(client, workflow_job(208, labels=["ubuntu-latest"]))
    await post(client, workflow_job(209, labels=["self-hosted", "windows"]))
    hosted, unmatched = await job(db, 208), await job(db, 209)
    assert hosted["hosted"] and hosted["pool"] is None
    assert "GitHub-hosted" in hosted["waiting_reason"]
    assert unmatched["pool"] is None and not unmatched["hosted"]
    assert "no pool" in unmatched["waiting_reason"]


async def test_most_specific_pool_wins(client: httpx.AsyncClient, db: Pool) -> None:
    await post(client, workflow_job(210, labels=["self-hosted", "gpu"]))
    await post(client, workflow_job(211, labels=["linux"]))
    assert (await job(db, 210))["pool"] == "gpu"
    assert (await job(db, 211))["pool"] == "linux"


async def test_unreachable_database_is_503_within_budget() -> None:
    # With the spool disabled (the spool's own behaviour: tests/integration/test_spool*.py).
    settings = make_settings(
        f"host=127.0.0.1 port={free_port()} dbname=x user=x password=x", spool={"enabled": False}
    )
    pool = await open_pool(settings.database)
    try:
        app = node_app(NodeContext(settings, pool))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://node"
        ) as c:
            started = asyncio.get_running_loop().time()
            r = await post(c, workflow_job(300))
            elapsed = asyncio.get_running_loop().time() - started
            assert r.status_code == 503
            assert elapsed < 9.0  # GitHub gives up after 10 s
            assert (await c.get("/readyz")).status_code == 503
        await app.state.intake.batcher.close()
    finally:
        await pool.close()


async def test_an_unstorable_payload_is_400_and_spares_its_batch(
    db: Pool, settings_factory: Callable[..., Settings]
) -> None:
    poison = workflow_job(400)
    poison["workflow_job"]["name"] = "build \u0000 nul"  # JSON allows it; PostgreSQL does not
    good = [workflow_job(401 + i) for i in range(5)]
    # The database's answer, not the spool's: a batch commit slower than the default
    # 0.25 s bounded wait (a loaded machine in make test) would answer 202 from the spool.
    webhook = {"secrets": ["s3cret-current", "s3cret-previous"], "db_wait_s": 5}
    async with in_process_client(NodeContext(settings_factory(webhook=webhook), db)) as client:
        answers = await asyncio.gather(post(client, poison), *(post(client, g) for g in good))
    assert answers[0].status_code == 400
    assert "cannot store" in answers[0].json()["message"]
    assert [a.status_code for a in answers[1:]] == [202] * 5
    assert await count(db, "SELECT count(*) FROM jobs WHERE id BETWEEN 401 AND 405") == 5
    assert (
        await count(
            db,
            "SELECT count(*) FROM webhook_deliveries "
            "WHERE outcome = 'unstorable' AND payload IS NULL",
        )
        == 1
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=fuzzing.mutated(), event=fuzzing.EVENTS)
async def test_mutated_signed_deliveries_never_get_a_5xx(
    client: httpx.AsyncClient, body: bytes, event: str
) -> None:
    """The intake fuzz (tests/fuzzing.py), signed and through the whole intake into
    PostgreSQL: whatever the body, the answer is 2xx or 400, never a 5xx."""
    _, headers = signed(None, event=event or "push", raw=body)
    r = await client.post("/webhooks/github", content=body, headers=headers)
    assert r.status_code in (200, 202, 400), (r.status_code, r.text, body[:300])
