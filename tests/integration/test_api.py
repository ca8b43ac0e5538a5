"""REST API: roles, clear 401/403, filters and cursor pagination, capacity per pool,
metrics and OpenAPI; nothing secret in any response."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import httpx

from runnerhub.config import Settings
from runnerhub.context import NodeContext
from runnerhub.health.model import Outcome
from runnerhub.health.monitor import CheckSpec, HealthMonitor
from runnerhub.store import leadership, nodes
from runnerhub.store.db import Pool
from tests.apps import node_app
from tests.payloads import signed, workflow_job

READ = {"Authorization": "Bearer read-token-0123456789"}
ADMIN = {"Authorization": "Bearer admin-token-0123456789"}


async def deliver(
    client: httpx.AsyncClient,
    job_id: int,
    action: str = "queued",
    labels: list[str] | None = None,
    repository: str = "acme/app",
) -> None:
    body, headers = signed(
        workflow_job(
            job_id,
            action,
            labels=labels,
            repository=repository,
            runner_name="r" if action != "queued" else None,
            conclusion="success",
        )
    )
    r = await client.post("/webhooks/github", content=body, headers=headers)
    assert r.status_code == 202, r.text


async def test_no_token_is_401_with_a_clear_message(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/jobs")
    assert r.status_code == 401
    assert "Bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = await client.get("/api/v1/jobs", headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert (r.status_code, r.json()["detail"]) == (401, "unknown API token")
    r = await client.get("/api/v1/jobs", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


async def test_a_read_token_cannot_act(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/reconcile", headers=READ)
    assert r.status_code == 403
    assert "role 'read'" in r.json()["detail"] and "'admin'" in r.json()["detail"]
    assert (await client.post("/api/v1/reconcile", headers=ADMIN)).status_code == 202


async def test_jobs_filter_and_paginate_with_a_cursor(client: httpx.AsyncClient) -> None:
    for i in range(7):
        await deliver(
            client,
            1000 + i,
            labels=["self-hosted", "gpu"] if i % 3 == 0 else None,
            repository="acme/app" if i % 2 else "acme/other",
        )
    await deliver(client, 1001, "in_progress")
    seen: list[int] = []
    cursor = None
    while True:
        url = "/api/v1/jobs?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=READ)).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True) == list(range(1006, 999, -1))
    queued = (await client.get("/api/v1/jobs?state=queued", headers=READ)).json()["items"]
    assert 1001 not in [j["id"] for j in queued] and len(queued) == 6
    gpu = (await client.get("/api/v1/jobs?pool=gpu", headers=READ)).json()["items"]
    assert sorted(j["id"] for j in gpu) == [1000, 1003, 1006]
    other = (await client.get("/api/v1/jobs?repository=acme/other", headers=READ)).json()
    assert sorted(j["id"] for j in other["items"]) == [1000, 1002, 1004, 1006]


async def test_bad_parameters_are_400_or_422_not_500(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/jobs?cursor=@@@", headers=READ)).status_code == 400
    assert (await client.get("/api/v1/jobs?state=lost", headers=READ)).status_code == 422
    assert (await client.get("/api/v1/jobs?limit=0", headers=READ)).status_code == 422
    r = await client.get("/api/v1/jobs/424242", headers=READ)
    assert (r.status_code, r.json()["detail"]) == (404, "no job with id 424242")


async def test_pools_show_queued_current_and_desired(client: httpx.AsyncClient) -> None:
    for i in range(7):
        await deliver(client, 2000 + i)
    pools = {p["name"]: p for p in (await client.get("/api/v1/pools", headers=READ)).json()}
    assert pools["linux"]["queued_jobs"] == 7
    assert pools["linux"]["desired_runners"] == 5  # capped by max_runners
    assert pools["gpu"]["desired_runners"] == 0


async def test_cluster_names_this_node(client: httpx.AsyncClient, db: Pool) -> None:
    async with db.connection() as conn:
        assert await nodes.heartbeat(conn, "node-test", "http://n", 42, "leader") is False
    c = (await client.get("/api/v1/cluster", headers=READ)).json()
    assert c["leader"] == "node-test"
    assert [(n["id"], n["pid"], n["healthy"]) for n in c["nodes"]] == [("node-test", 42, True)]


async def test_cluster_shows_no_leader_once_the_recorded_one_stepped_down(
    client: httpx.AsyncClient, db: Pool
) -> None:
    async with db.connection() as conn:
        assert await leadership.record_epoch(conn, 7, "node-test")
    async with db.connection() as conn:
        await nodes.heartbeat(conn, "node-test", "http://n", 42, "leader")
    c = (await client.get("/api/v1/cluster", headers=READ)).json()
    assert (c["leader"], c["last_leader"], c["epoch"]) == ("node-test", "node-test", 7)
    async with db.connection() as conn:  # it steps down: its next heartbeat says so
        await nodes.heartbeat(conn, "node-test", "http://n", 42, "follower")
    c = (await client.get("/api/v1/cluster", headers=READ)).json()
    assert (c["leader"], c["last_leader"], c["epoch"]) == (None, "node-test", 7)


async def test_drain_marks_a_node_and_handoff_needs_an_election(
    client: httpx.AsyncClient, db: Pool
) -> None:
    async with db.connection() as conn:
        await nodes.heartbeat(conn, "node-test", "http://n", 42, "leader")
    assert (await client.post("/api/v1/nodes/nope/drain", headers=ADMIN)).status_code == 404
    assert (await client.post("/api/v1/nodes/node-test/drain", headers=READ)).status_code == 403
    r = await client.post("/api/v1/nodes/node-test/drain", headers=ADMIN)
    assert r.json() == {"node": "node-test", "draining": True}
    async with db.connection() as conn:
        assert await nodes.heartbeat(conn, "node-test", "http://n", 42, "leader") is True
    c = (await client.get("/api/v1/cluster", headers=READ)).json()
    assert c["nodes"][0]["healthy"] is False and c["nodes"][0]["draining"] is True
    assert (await client.delete("/api/v1/nodes/node-test/drain", headers=ADMIN)).status_code == 200
    r = await client.post("/api/v1/leader/handoff", headers=ADMIN, json={})
    assert r.status_code == 409 and "without leader election" in r.json()["detail"]


async def test_metrics_count_deliveries_and_jobs(client: httpx.AsyncClient) -> None:
    await deliver(client, 3000)
    text = (await client.get("/metrics")).text
    assert 'runnerhub_webhook_deliveries_total{outcome="created"}' in text
    assert 'runnerhub_jobs{state="queued"} 1.0' in text
    assert "runnerhub_oldest_queued_job_age_seconds" in text


async def test_openapi_describes_the_api(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json", headers=READ)).json()
    assert {
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/runners",
        "/api/v1/pools",
        "/api/v1/cluster",
    } <= set(spec["paths"])


async def test_without_a_token_probes_say_up_or_down_and_nothing_else(
    client: httpx.AsyncClient,
) -> None:
    anonymous = await client.get("/readyz")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    detailed = (await client.get("/readyz", headers=READ)).json()
    assert {"database", "spool", "cache", "replication"} <= set(detailed)
    assert (
        await client.get("/readyz", headers={"Authorization": "Bearer nope"})
    ).status_code == 401
    # The API's description needs a read token, and the browsable pages are off...
    assert (await client.get("/openapi.json")).status_code == 401
    assert (await client.get("/docs")).status_code == 404
    assert (await client.get("/redoc")).status_code == 404


async def test_the_api_description_can_be_made_public(
    db: Pool, settings_factory: Callable[..., Settings]
) -> None:
    app = node_app(NodeContext(settings_factory(api={"public_docs": True}), db))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as c:
        assert (await c.get("/openapi.json")).status_code == 200
        assert (await c.get("/docs")).status_code == 200
    await app.state.intake.batcher.close()


async def test_no_secret_in_any_response(client: httpx.AsyncClient) -> None:
    await deliver(client, 4000)
    bodies = [
        (await client.get(p, headers=ADMIN)).text
        for p in (
            "/api/v1/jobs",
            "/api/v1/runners",
            "/api/v1/pools",
            "/api/v1/cluster",
            "/api/v1/summary",
            "/openapi.json",
        )
    ] + [(await client.get("/metrics")).text]
    for secret in (
        "s3cret-current",
        "s3cret-previous",
        "ghp_testtoken",
        "admin-token-0123456789",
        "read-token-0123456789",
        "password",
    ):
        assert not any(secret in b for b in bodies), secret


async def test_an_answer_the_database_holds_up_is_a_503_within_a_second(
    client: httpx.AsyncClient, db: Pool
) -> None:
    """A query that waits (the jobs table locked elsewhere; a hung primary answers nothing
    the same way) does not hold the caller: 503 after api.answer_within_s (1 s), saying
    why. Once the lock goes, the same request answers."""
    async with db.connection() as blocker:
        await blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        began = time.monotonic()
        r = await client.get("/api/v1/jobs", headers=READ)
        took = time.monotonic() - began
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["detail"].startswith("no answer within 1s"), r.json()
    assert 1.0 <= took < 2.0, took
    assert (await client.get("/api/v1/jobs", headers=READ)).status_code == 200


async def test_webhook_path_answers_only_post(client: httpx.AsyncClient) -> None:
    r = await client.get("/webhooks/github")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


async def test_health_shows_details_only_to_a_token_and_is_503_when_failing(
    db: Pool, settings_factory: Callable[..., Settings]
) -> None:
    ctx = NodeContext(settings_factory(), db)
    verdict = {"db": Outcome("ok", {"server": "10.0.0.5:5432"})}

    async def database() -> Outcome:
        return verdict["db"]

    async def etcd() -> Outcome:
        return Outcome("degraded", {"members": 3}, "1 member(s) unreachable")

    ctx.health = HealthMonitor(
        [CheckSpec("database", database, 1, 1, critical=True), CheckSpec("etcd", etcd, 1, 1)]
    )
    await ctx.health.run_once("database")
    await ctx.health.run_once("etcd")
    app = node_app(ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as c:
        anonymous = await c.get("/health")
        assert anonymous.status_code == 200
        body = anonymous.json()
        assert body["status"] == "degraded" and body["node"] == "node-test"
        assert body["checks"]["etcd"]["status"] == "degraded"
        assert "detail" not in body["checks"]["database"]  # no addresses for anyone
        assert "10.0.0.5" not in anonymous.text

        full = (await c.get("/health", headers=READ)).json()
        assert full["checks"]["database"]["detail"] == {"server": "10.0.0.5:5432"}
        assert full["checks"]["etcd"]["message"] == "1 member(s) unreachable"
        assert (await c.get("/health", headers={"Authorization": "Bearer nope"})).status_code == 401

        verdict["db"] = Outcome("failing", {}, "OperationalError: connection refused")
        await ctx.health.run_once("database")
        failing = await c.get("/health")
        assert failing.status_code == 503 and failing.json()["status"] == "failing"
        # /readyz reads the same background result: the spool still takes deliveries.
        ready = await c.get("/readyz", headers=READ)
        assert ready.status_code == 200 and ready.json()["database"] == "unreachable"
    await app.state.intake.batcher.close()


async def test_a_stored_token_is_made_used_listed_expired_and_revoked(
    client: httpx.AsyncClient, db: Pool
) -> None:
    """`runnerhub token create/list/revoke` end to end against PostgreSQL: shown once, kept
    only as a hash, refused once expired or revoked."""
    body = {"name": "ci-bot", "role": "read", "expires_in_s": 3600}
    assert (await client.post("/api/v1/tokens", json=body, headers=READ)).status_code == 403
    r = await client.post("/api/v1/tokens", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    made = r.json()
    secret = made["token"]
    assert secret.startswith("rht_") and made["created_by"] == "root"
    bearer = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/api/v1/jobs", headers=bearer)).status_code == 200
    assert (await client.post("/api/v1/reconcile", headers=bearer)).status_code == 403
    # Kept hashed only; listed without its value, with its last use.
    async with db.connection() as conn:
        cur = await conn.execute("SELECT * FROM api_tokens")
        stored = await cur.fetchall()
    assert secret.encode() not in repr(stored).encode() and len(stored) == 1
    [listed] = (await client.get("/api/v1/tokens", headers=ADMIN)).json()
    assert listed["name"] == "ci-bot" and "token" not in listed and listed["last_used_at"]
    # One live token per name; a static token's name is taken too.
    assert (await client.post("/api/v1/tokens", json=body, headers=ADMIN)).status_code == 409
    root = {"name": "root", "role": "read"}
    assert (await client.post("/api/v1/tokens", json=root, headers=ADMIN)).status_code == 409
    # Expired: refused, saying so.
    async with db.connection() as conn:
        await conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second'")
    r = await client.get("/api/v1/jobs", headers=bearer)
    assert r.status_code == 401 and "'ci-bot' expired at" in r.json()["detail"]
    # Revoked: unknown from the next request on; the name is free again.
    async with db.connection() as conn:
        await conn.execute("UPDATE api_tokens SET expires_at = NULL")
    assert (await client.get("/api/v1/jobs", headers=bearer)).status_code == 200
    r = await client.delete("/api/v1/tokens/ci-bot", headers=ADMIN)
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = await client.get("/api/v1/jobs", headers=bearer)
    assert (r.status_code, r.json()["detail"]) == (401, "unknown API token")
    assert (await client.delete("/api/v1/tokens/ci-bot", headers=ADMIN)).status_code == 404
    assert (await client.get("/api/v1/tokens", headers=ADMIN)).json() == []
    assert len((await client.get("/api/v1/tokens?revoked=true", headers=ADMIN)).json()) == 1
    assert (await client.post("/api/v1/tokens", json=body, headers=ADMIN)).status_code == 201
    bad = {"name": "x y", "role": "owner"}
    r = await client.post("/api/v1/tokens", json=bad, headers=ADMIN)
    assert r.status_code == 422


async def test_guessing_tokens_from_one_address_is_held_off(
    db: Pool, settings_factory: Callable[..., Settings]
) -> None:
    """After `auth_failures_per_minute` unknown tokens a source gets 429 (even with a good
    token); behind a trusted proxy, the source is the address it forwarded for."""
    settings = settings_factory(
        api={"auth_failures_per_minute": 5, "trusted_proxies": ["127.0.0.0/8"]}
    )
    app = node_app(NodeContext(settings, db))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 5000)), base_url="http://node"
    ) as c:
        attacker = {"X-Forwarded-For": "198.51.100.7"}
        for _ in range(5):
            r = await c.get("/api/v1/jobs", headers={**attacker, "Authorization": "Bearer guess"})
            assert r.status_code == 401
        r = await c.get("/api/v1/jobs", headers={**attacker, **READ})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "too many failed authentications" in r.json()["detail"]
        r = await c.get("/readyz", headers={**attacker, **READ})
        assert r.status_code == 429
        other = {"X-Forwarded-For": "198.51.100.8"}
        assert (await c.get("/api/v1/jobs", headers={**other, **READ})).status_code == 200
    await app.state.intake.batcher.close()


async def test_values_the_database_cannot_take_are_400_or_422_never_500(
    client: httpx.AsyncClient,
) -> None:
    """Found by the schemathesis run (tests/e2e/test_api_schema.py): a NUL in a filter and
    numbers past PostgreSQL's bigint were 500s."""
    for path in (
        "/api/v1/runners?pool=a%00b",
        "/api/v1/jobs?repository=%00",
        "/api/v1/events?subject=x%00",
        "/api/v1/incidents?component=%00",
    ):
        r = await client.get(path, headers=READ)
        assert (r.status_code, r.json()["detail"]) == (
            400,
            "the request's path or query holds a NUL",
        ), path
    for path in (
        f"/api/v1/jobs/{2**63}",
        f"/api/v1/backups?repo={2**40}",
        f"/api/v1/events/stream?after={2**63}",
    ):
        assert (await client.get(path, headers=READ)).status_code == 422, path
    too_far = base64.urlsafe_b64encode(str(2**64).encode()).decode()
    r = await client.get(f"/api/v1/runners?cursor={too_far}", headers=READ)
    assert r.status_code == 400
