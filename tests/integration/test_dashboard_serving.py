"""The dashboard as a node serves it (in process, against real PostgreSQL): security headers
on every answer, no inline script or style, nothing fetched from elsewhere, ETags and
gzip, the first page's size budget; and the read endpoints and audited actions it uses
(a job's history, activity per minute, acknowledging an incident, drain audited)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import httpx
import psycopg
import pytest

from runnerhub.store import incidents, nodes, runners
from runnerhub.store.db import Pool
from runnerhub.store.jobs import NOTIFY_CHANNEL
from runnerhub.web.router import load_assets
from tests.payloads import signed, workflow_job

READ = {"Authorization": "Bearer read-token-0123456789"}
ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
BUDGET_BYTES = 500_000


def assert_secure(r: httpx.Response) -> None:
    csp = r.headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
    assert directives["default-src"] == ["'self'"], csp
    assert directives["script-src"] == ["'self'"] and directives["style-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "unsafe" not in csp and "*" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"


class Page(HTMLParser):
    """What the page loads, and anything inline it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in a:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}=...>")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            self._in_script = True
            if not a.get("src"):
                self.inline.append("<script> without src")
            else:
                self.loads.append(str(a["src"]))
        if tag == "link" and a.get("href"):
            self.loads.append(str(a["href"]))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("script text")


def first_page_files(index: str) -> list[str]:
    """index.html, what it loads, and the modules those import (relative names)."""
    page = Page()
    page.feed(index)
    files, todo = ["index.html"], list(page.loads)
    assets = load_assets()
    while todo:
        name = todo.pop()
        if name in files:
            continue
        files.append(name)
        if name.endswith(".js"):
            text = assets[name].body.decode()
            todo += re.findall(r"""from\s+['"]\./([\w.-]+)['"]""", text)
    return files


async def test_every_dashboard_answer_carries_the_security_headers(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/", "/ui"):
        r = await client.get(path)
        assert (r.status_code, r.headers["location"]) == (307, "/ui/")
        assert_secure(r)
    r = await client.get("/ui/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert_secure(r)
    for name in load_assets():
        r = await client.get(f"/ui/{name}")
        assert r.status_code == 200, name
        assert_secure(r)
    r = await client.get("/ui/../secrets.yaml")
    assert r.status_code == 404
    r = await client.get("/ui/nope.js")
    assert r.status_code == 404
    assert_secure(r)
    r = await client.head("/ui/app.js")
    assert r.status_code == 200 and r.content == b""
    assert_secure(r)


async def test_the_page_holds_no_inline_script_or_style_and_loads_nothing_from_elsewhere(
    client: httpx.AsyncClient,
) -> None:
    index = (await client.get("/ui/")).text
    page = Page()
    page.feed(index)
    assert page.inline == []
    assert page.loads and all("//" not in src for src in page.loads), page.loads
    for name, asset in load_assets().items():
        text = asset.body.decode()
        # No URL of another origin (the SVG namespace is a name, not a fetch).
        others = re.findall(r"https?://[^\s'\"]+", text)
        assert set(others) <= {"http://www.w3.org/2000/svg"}, (name, others)
        assert "innerHTML" not in text and "eval(" not in text, name
    # The token is kept in the tab's session only, and never put in a URL.
    app = load_assets()["app.js"].body.decode()
    assert "localStorage" not in app and "sessionStorage" in app
    assert "new EventSource" not in app + load_assets()["stream.js"].body.decode()


async def test_static_files_have_an_etag_and_are_revalidated(client: httpx.AsyncClient) -> None:
    for encoding in ("identity", "gzip"):
        h = {"Accept-Encoding": encoding}
        r = await client.get("/ui/app.js", headers=h)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
        etag = r.headers["etag"]
        assert etag.startswith('"') and (etag.endswith('-gz"') == (encoding == "gzip"))
        assert r.headers["content-type"].startswith("text/javascript")
        again = await client.get("/ui/app.js", headers={**h, "If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert_secure(again)
    plain = await client.get("/ui/app.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == load_assets()["app.js"].body


async def test_the_first_page_fits_the_size_budget(client: httpx.AsyncClient) -> None:
    index = (await client.get("/ui/", headers={"Accept-Encoding": "identity"})).text
    files = first_page_files(index)
    assert {"index.html", "app.js", "style.css", "charts.js", "stream.js"} <= set(files)
    plain = gzipped = 0
    for name in files:
        path = "/ui/" if name == "index.html" else f"/ui/{name}"
        r = await client.get(path, headers={"Accept-Encoding": "identity"})
        plain += len(r.content)
        raw = await client.get(path, headers={"Accept-Encoding": "gzip"})
        gzipped += int(raw.headers.get("content-length", len(raw.content)))
    print(f"first page: {len(files)} files, {plain} bytes, {gzipped} bytes gzipped")
    assert plain < BUDGET_BYTES and gzipped < plain


async def deliver(client: httpx.AsyncClient, job_id: int, action: str) -> None:
    body, headers = signed(
        workflow_job(job_id, action, runner_name="r" if action != "queued" else None)
    )
    r = await client.post("/webhooks/github", content=body, headers=headers)
    assert r.status_code == 202, r.text


async def test_a_jobs_history_holds_its_deliveries_and_events(
    client: httpx.AsyncClient,
) -> None:
    for action in ("queued", "in_progress", "completed"):
        await deliver(client, 4242, action)
    r = await client.get("/api/v1/jobs/4242/history", headers=READ)
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["job"]["state"] == "completed"
    assert [d["action"] for d in h["deliveries"]] == ["queued", "in_progress", "completed"]
    assert all(d["received_by"] == "node-test" and "payload" not in d for d in h["deliveries"])
    kinds = [e["kind"] for e in h["events"]]
    assert kinds and all(k.startswith("job.") for k in kinds)
    assert [e["id"] for e in h["events"]] == sorted(e["id"] for e in h["events"])
    assert all(e["subject"] == "job:4242" and e["node"] == "node-test" for e in h["events"])
    assert (await client.get("/api/v1/jobs/4243/history", headers=READ)).status_code == 404
    assert (await client.get("/api/v1/jobs/4242/history")).status_code == 401


async def test_activity_counts_jobs_per_minute_with_wait_percentiles(
    client: httpx.AsyncClient, db: Pool
) -> None:
    async with db.connection() as conn:
        # Ten jobs queued three minutes ago, started 1..10 s later; one queued now.
        await conn.execute(
            """INSERT INTO jobs (id, run_id, repository, labels, state, queued_at, started_at,
                                 last_source)
               SELECT 9000 + i, 1, 'acme/app', '{}', 'in_progress',
                      date_trunc('minute', now()) - interval '3 minutes',
                      date_trunc('minute', now()) - interval '3 minutes' + i * interval '1 s',
                      'webhook'
                 FROM generate_series(1, 10) AS i"""
        )
        await conn.execute(
            """INSERT INTO jobs (id, run_id, repository, labels, state, queued_at, last_source)
               VALUES (9100, 1, 'acme/app', '{}', 'queued', now(), 'webhook')"""
        )
        # Four deliveries two minutes ago; two replicas' lag samples a minute ago.
        await conn.execute(
            """INSERT INTO webhook_deliveries (delivery_guid, event, received_at, received_by,
                                               outcome)
               SELECT 'act-' || g, 'workflow_job',
                      date_trunc('minute', now()) - interval '2 minutes' + g * interval '1 s',
                      'test', 'stored'
                 FROM generate_series(1, 4) AS g"""
        )
        await conn.execute(
            """INSERT INTO replication_lag (minute, replica, replay_lag_s)
               VALUES (date_trunc('minute', now()) - interval '1 minute', 'pg-2', 0.5),
                      (date_trunc('minute', now()) - interval '1 minute', 'pg-3', 2.25)"""
        )
    r = await client.get("/api/v1/activity?minutes=5", headers=READ)
    assert r.status_code == 200, r.text
    minutes = r.json()["minutes"]
    assert len(minutes) == 5
    assert [m["queued"] for m in minutes] == [0, 10, 0, 0, 1]
    assert [m["started"] for m in minutes] == [0, 10, 0, 0, 0]
    busy = minutes[1]
    assert busy["wait_p50_s"] == pytest.approx(5.5) and busy["wait_p99_s"] == pytest.approx(9.91)
    assert minutes[0]["wait_p50_s"] is None
    assert [m["deliveries"] for m in minutes] == [0, 0, 4, 0, 0]
    assert [m["replica_lag_s"] for m in minutes] == [None, None, None, 2.25, None]
    first = datetime.fromisoformat(minutes[0]["minute"])
    assert first.second == 0 and first <= datetime.now(UTC)
    assert (await client.get("/api/v1/activity?minutes=0", headers=READ)).status_code == 422


async def test_acknowledging_an_incident_and_draining_are_admin_only_and_audited(
    client: httpx.AsyncClient, db: Pool
) -> None:
    async with db.connection() as conn:
        await incidents.record(
            conn,
            key="redis:1",
            component="redis",
            kind="outage",
            summary="Redis down",
            node="node-test",
            detected_at=datetime.now(UTC),
        )
        await nodes.heartbeat(conn, "node-test", "http://n", 42, "leader")
    listed = (await client.get("/api/v1/incidents", headers=READ)).json()["items"]
    iid = listed[0]["id"]
    assert listed[0]["acknowledged_at"] is None
    r = await client.post(f"/api/v1/incidents/{iid}/acknowledge", headers=READ)
    assert r.status_code == 403 and "'admin'" in r.json()["detail"]
    r = await client.post(f"/api/v1/incidents/{iid}/acknowledge", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["acknowledged_by"] == "root" and r.json()["acknowledged_at"]
    missing = await client.post("/api/v1/incidents/999/acknowledge", headers=ADMIN)
    assert missing.status_code == 404
    assert (await client.post("/api/v1/nodes/node-test/drain", headers=ADMIN)).status_code == 202
    assert (await client.delete("/api/v1/nodes/node-test/drain", headers=ADMIN)).status_code == 200
    audit = (await client.get("/api/v1/events?kind=operator.", headers=READ)).json()["items"]
    assert [(e["kind"], e["subject"], e["detail"]["by"]) for e in reversed(audit)] == [
        ("operator.incident_acknowledged", f"incident:{iid}", "root"),
        ("operator.node_drained", "node:node-test", "root"),
        ("operator.node_undrained", "node:node-test", "root"),
    ]


async def test_retrying_a_failed_provisioning_brings_it_forward_wakes_the_scheduler_and_is_audited(
    client: httpx.AsyncClient, db: Pool, dsn: str
) -> None:
    await deliver(client, 5151, "queued")
    later = datetime.now(UTC) + timedelta(minutes=10)
    async with db.connection() as conn:
        await runners.insert_requested(
            conn,
            name="rh-5151-1",
            pool="default",
            scope="acme/app",
            labels=["self-hosted"],
            job_id=5151,
            generation=1,
            backend="process",
            node="node-test",
        )
        # Nothing failed yet: there is nothing to retry.
        r = await client.post("/api/v1/jobs/5151/retry", headers=ADMIN)
        assert r.status_code == 409 and "no failed provisioning" in r.json()["detail"], r.text
        await runners.record_failure(conn, "rh-5151-1", "jit: 422", later, "node-test")

    assert (await client.post("/api/v1/jobs/5151/retry", headers=READ)).status_code == 403
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
        await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        r = await client.post("/api/v1/jobs/5151/retry", headers=ADMIN)
        assert r.status_code == 202, r.text
        assert r.json() == {"status": "retry requested", "job_id": 5151, "runners": ["rh-5151-1"]}
        woke = [n async for n in listener.notifies(timeout=5, stop_after=1)]
        assert [n.channel for n in woke] == [NOTIFY_CHANNEL]
    async with db.connection() as conn:
        row = await runners.get(conn, "rh-5151-1")
    assert row is not None and row.next_attempt_at is not None
    assert row.next_attempt_at <= datetime.now(UTC) and row.attempts == 1

    assert (await client.post("/api/v1/jobs/5152/retry", headers=ADMIN)).status_code == 404
    await deliver(client, 5151, "completed")
    done = await client.post("/api/v1/jobs/5151/retry", headers=ADMIN)
    assert done.status_code == 409 and "completed" in done.json()["detail"]
    audit = (await client.get("/api/v1/events?kind=operator.", headers=READ)).json()["items"]
    retried = [e for e in audit if e["kind"] == "operator.provisioning_retried"]
    assert [(e["subject"], e["detail"]["by"], e["detail"]["runners"]) for e in retried] == [
        ("job:5151", "root", ["rh-5151-1"])
    ]


async def test_a_node_gone_for_good_is_removed_one_alive_is_not(
    client: httpx.AsyncClient, db: Pool
) -> None:
    async with db.connection() as conn:
        await nodes.heartbeat(conn, "node-gone", "http://gone", 7, "follower")
        await nodes.heartbeat(conn, "node-alive", "http://alive", 8, "follower")
        await conn.execute(
            "UPDATE nodes SET last_seen = now() - interval '1 hour' WHERE id = 'node-gone'"
        )
    assert (await client.delete("/api/v1/nodes/node-gone", headers=READ)).status_code == 403
    alive = await client.delete("/api/v1/nodes/node-alive", headers=ADMIN)
    assert alive.status_code == 409 and "stop it first" in alive.json()["detail"], alive.text
    assert (await client.delete("/api/v1/nodes/node-none", headers=ADMIN)).status_code == 404
    gone = await client.delete("/api/v1/nodes/node-gone", headers=ADMIN)
    assert gone.status_code == 200 and gone.json() == {"node": "node-gone", "removed": True}
    listed = [n["id"] for n in (await client.get("/api/v1/cluster", headers=READ)).json()["nodes"]]
    assert "node-gone" not in listed and "node-alive" in listed
    audit = (await client.get("/api/v1/events?kind=operator.node_removed", headers=READ)).json()
    assert [(e["subject"], e["detail"]["by"]) for e in audit["items"]] == [
        ("node:node-gone", "root")
    ]
