"""Backups with real pgBackRest of a real Patroni pair (WAL archived from every member into
two repositories, the second encrypted), run by the leader's loop: each kind of backup into
each repository, copied from the replica; verify and a restore test of each; what the API
and /health say; and the faults: a repository that cannot be written, a backup file that
was corrupted; and point-in-time recovery into a new cluster, to just before an operator's
DELETE. The cipher pass of the encrypted repository never shows anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from runnerhub.backup.pgbackrest import repo_space
from runnerhub.backup.pitr import Target, TargetError
from runnerhub.config import Settings
from runnerhub.context import NodeContext
from runnerhub.control.backups import Backups
from runnerhub.dev.cluster.dr import archive_current_wal, restore_cluster, restore_in_place
from runnerhub.dev.cluster.etcd import LocalEtcd
from runnerhub.dev.cluster.patroni import LocalPatroni
from runnerhub.dev.cluster.pgbackrest import LocalPgBackRest
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.postgres import SERVICE_USER
from runnerhub.dev.waiting import wait_until
from runnerhub.domain.backups import ARCHIVE_BEHIND_SEGMENTS
from runnerhub.health import checks
from runnerhub.health.monitor import CheckSpec, HealthMonitor
from runnerhub.incidents.recorder import IncidentRecorder
from runnerhub.render.alerting import ScrapeTarget
from runnerhub.store import backups as backup_store
from runnerhub.store import events, replication
from runnerhub.store.db import Pool, connect, open_pool
from runnerhub.store.migrate import migrate
from tests.apps import node_app
from tests.chaos.alerting import watching_targets
from tests.conftest import make_settings
from tests.github_process import LINUX, GitHub, github_sim, node_config, start_node

HOUR = 3600.0
ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
READ = {"Authorization": "Bearer read-token-0123456789"}


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    etcd = LocalEtcd(tmp_path_factory.mktemp("backups-etcd") / "etcd", members=1)
    etcd.start()
    try:
        yield etcd
    finally:
        etcd.destroy()


@pytest.fixture(scope="module")
def cluster(etcd: LocalEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPatroni]:
    base = tmp_path_factory.mktemp("backups")
    pg = LocalPatroni(
        base / "patroni",
        etcd.endpoints,
        members_count=2,
        backups=True,
        archive_queue_max=f"{QUEUE_SEGMENTS * 16}MB",
    )
    # repo2 on a file system of its own, which a test fills (root only: mount).
    repo2 = next(r for r in pgbr(pg).repos if r.index == 2).path
    mounted = os.geteuid() == 0
    if mounted:
        repo2.mkdir(parents=True, exist_ok=True)
        mount("-t", "tmpfs", "-o", f"size={REPO2_SIZE},mode=700", "tmpfs", str(repo2))
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()
        if mounted:
            subprocess.run(["umount", str(repo2)], check=False, capture_output=True)
            shutil.rmtree(repo2.parent.parent, ignore_errors=True)  # destroy() left the mount


REPO2_SIZE = 1 << 30
QUEUE_SEGMENTS = 4  # archive-push-queue-max, in 16 MiB WAL segments


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def repository_fault(path: Path, fault: str) -> Iterator[str]:
    """`path` cannot be written (`unwritable`) or has no space left (`full`) until the
    block ends; yields the reason pgBackRest will give."""
    if fault == "unwritable":
        path.chmod(0o000)
        try:
            yield "Permission denied"
        finally:
            path.chmod(0o700)
        return
    if os.geteuid() != 0:
        pytest.skip("filling a repository's file system needs root (mount)")
    fs = os.statvfs(path)
    mount("-o", f"remount,size={(fs.f_blocks - fs.f_bfree) * fs.f_frsize}", str(path))
    try:
        yield "not started: repo2 (region-b): its file system is full"
    finally:
        mount("-o", f"remount,size={REPO2_SIZE}", str(path))


@pytest.fixture(scope="module")
def backed_up_dsn(cluster: LocalPatroni) -> str:
    dsn = cluster.create_database("runnerhub")
    asyncio.run(migrate(dsn))
    return dsn


@pytest.fixture
async def db(backed_up_dsn: str) -> AsyncIterator[Pool]:
    pool = await open_pool(make_settings(backed_up_dsn).database)
    await pool.wait(timeout=10)
    yield pool
    await pool.close()


def pgbr(cluster: LocalPatroni) -> LocalPgBackRest:
    assert cluster.pgbackrest is not None
    return cluster.pgbackrest


def settings(cluster: LocalPatroni, dsn: str) -> Settings:
    b = pgbr(cluster)
    backup = b.node_settings(SERVICE_USER if os.geteuid() == 0 else None)
    daily = {"full_every_s": HOUR, "diff_every_s": HOUR, "incr_every_s": HOUR}
    checks_ = {"verify_every_s": HOUR, "restore_test_every_s": HOUR}
    backup["repos"] = [{**r, **daily, **checks_} for r in backup["repos"]]
    backup |= {"restore_test_dir": str(b.root / "restore-test"), "retry_s": 2}
    return make_settings(dsn, backup=backup)


def due_now(loop: Backups, repo: int, **what: float | None) -> None:
    """Make something of `repo`'s schedule due at once (or never, with None)."""
    loop.schedules = [replace(s, **what) if s.repo == repo else s for s in loop.schedules]


def nothing_due(loop: Backups) -> None:
    loop.schedules = [
        replace(s, full_every_s=HOUR, diff_every_s=None, incr_every_s=None) for s in loop.schedules
    ]


async def seed(db: Pool) -> None:
    """Rows written long before any backup: a restore must hold every one of them."""
    async with db.connection() as conn:
        await conn.execute(
            """INSERT INTO jobs (id, run_id, repository, labels, state, last_source,
                                 first_seen_at)
               SELECT g, g, 'acme/app', '{self-hosted}', 'completed', 'webhook',
                      now() - interval '10 minutes'
                 FROM generate_series(1, 40) AS g ON CONFLICT DO NOTHING"""
        )
        await conn.execute(
            """INSERT INTO events (node, kind, subject, detail, at)
               SELECT 'node-test', 'job.created', 'job:' || g, '{}',
                      now() - interval '10 minutes'
                 FROM generate_series(1, 25) AS g"""
        )


def failures(repo: int, what: str) -> float:
    labels = {"repo": str(repo), "what": what}
    return REGISTRY.get_sample_value("runnerhub_backup_failures_total", labels) or 0.0


async def test_each_repository_gets_every_kind_of_backup_verified_and_restored(
    cluster: LocalPatroni, backed_up_dsn: str, db: Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(db)
    s = settings(cluster, backed_up_dsn)
    ctx = NodeContext(s, db)
    loop = Backups(ctx)
    for _ in range(6):  # a full into each repository, then verify and restore each
        await loop.cycle()
    async with db.connection() as conn:
        done = await backup_store.done(conn)
        taken = await backup_store.list_backups(conn, None, 50, None)
        tests = await backup_store.latest_checks(conn)
    assert sorted((b.repo, b.kind, b.ok) for b in taken) == [(1, "full", True), (2, "full", True)]
    for b in taken:
        assert b.label and b.label.endswith("F") and b.wal_start and b.wal_stop
        assert b.lsn_stop and b.size_bytes and b.repo_bytes and b.duration_s > 0
        assert b.epoch is None and b.node == "node-test"
    assert sorted((c.repo, c.kind, c.ok) for c in tests) == [
        (1, "restore_test", True),
        (1, "verify", True),
        (2, "restore_test", True),
        (2, "verify", True),
    ]
    for restored in (c for c in tests if c.kind == "restore_test"):
        detail = restored.detail
        assert detail["data_checksums"] is True and detail["problems"] == []
        assert detail["indexes_checked"] > 10 and detail["tables_checked"] >= 10
        assert detail["rows"]["jobs"] == {"copy": 40, "primary": 40}
        assert detail["rows"]["events"]["copy"] == detail["rows"]["events"]["primary"] >= 25
        assert restored.label is not None and restored.duration_s < 60

    # A diff, then an incr, once their time comes; from the replica, as the events say.
    due_now(loop, 1, diff_every_s=0.001)
    await loop.cycle()
    due_now(loop, 1, diff_every_s=None, incr_every_s=0.001)
    await loop.cycle()
    nothing_due(loop)
    await loop.cycle()  # nothing is due: nothing is taken
    async with db.connection() as conn:
        ones = await backup_store.list_backups(conn, 1, 50, None)
        cur = await conn.execute(
            "SELECT detail FROM events WHERE kind = 'backup.finished' ORDER BY id"
        )
        finished = [r["detail"] for r in await cur.fetchall()]
    assert [b.kind for b in ones] == ["incr", "diff", "full"]
    assert ones[0].label and ones[0].label.endswith("I") and ones[1].label.endswith("D")
    assert len(finished) == 4 and all(d["from_standby"] for d in finished)
    assert set(done) == {1, 2}

    # What the API and /health show, and what they do not: the cipher pass.
    secret = pgbr(cluster).cipher_pass
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node_app(ctx)), base_url="http://n"
    ) as c:
        listed = (await c.get("/api/v1/backups", headers=ADMIN)).json()
        status = (await c.get("/api/v1/backups/status", headers=ADMIN)).json()
    assert [b["kind"] for b in listed["items"]] == ["incr", "diff", "full", "full"]
    repos = {r["name"]: r for r in status["repos"]}
    assert set(repos["region-a"]["last"]) == {"full", "diff", "incr", "verify", "restore_test"}
    assert repos["region-a"]["overdue"] == [] and repos["region-b"]["overdue"] == []
    outcome = await checks.backups(db, loop.schedules, loop.names, HOUR, lambda: None)()
    assert outcome.status == "ok", outcome.message
    async with db.connection() as conn:
        cur = await conn.execute("SELECT string_agg(detail::text, ' ') AS all FROM events")
        everything = (await cur.fetchone() or {}).get("all") or ""
    assert secret not in everything + str(listed) + str(status) + capsys.readouterr().out

    # An operator's "back up now" (asked of any node): the leader's next cycle runs it
    # before the schedule, records it like a scheduled one, and on the request.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node_app(ctx)), base_url="http://n"
    ) as c:
        run = "/api/v1/backups/run"
        assert (
            await c.post(run, json={"repo": 2, "what": "incr"}, headers=READ)
        ).status_code == 403
        nope = await c.post(run, json={"repo": 3, "what": "incr"}, headers=ADMIN)
        assert nope.status_code == 404 and "region-a" in nope.json()["detail"], nope.text
        bad = await c.post(run, json={"repo": 2, "what": "everything"}, headers=ADMIN)
        assert bad.status_code == 422
        asked = await c.post(run, json={"repo": 2, "what": "incr"}, headers=ADMIN)
        assert asked.status_code == 202, asked.text
        rid = asked.json()["id"]
        assert asked.json()["finished_at"] is None and asked.json()["requested_by"] == "root"
        await loop.cycle()  # nothing is due by the schedule: only the request runs
        outcome_of = (await c.get(f"/api/v1/backups/requests/{rid}", headers=READ)).json()
    assert outcome_of["ok"] is True and outcome_of["node"] == "node-test", outcome_of
    assert outcome_of["started_at"] <= outcome_of["finished_at"]
    async with db.connection() as conn:
        twos = await backup_store.list_backups(conn, 2, 50, None)
    assert [b.kind for b in twos] == ["incr", "full"]


@pytest.mark.parametrize("fault", ["unwritable", "full"])
async def test_a_repository_that_cannot_be_written_fails_clearly_is_not_hammered_and_heals(
    cluster: LocalPatroni, backed_up_dsn: str, db: Pool, fault: str
) -> None:
    """repo2 made unwritable, or its file system full: the backup fails with pgBackRest's
    reason, is not retried before retry_s, WAL archiving fails too, /health names both and
    an incident opens; mended, the next attempt succeeds and everything clears."""
    s = settings(cluster, backed_up_dsn)
    loop = Backups(NodeContext(s, db))
    nothing_due(loop)
    state: dict[str, Any] = {}
    check = checks.backups(
        db,
        loop.schedules,
        loop.names,
        HOUR,
        lambda: state.get("archiver"),
        space=lambda: repo_space(s.backup),
    )
    monitor = HealthMonitor([CheckSpec("backups", check, 1, 5)])
    recorder = IncidentRecorder(db, "node-test", lambda: True)
    monitor.listeners.append(recorder.on_health)
    repo2 = next(r for r in pgbr(cluster).repos if r.index == 2).path
    before = failures(2, "full")
    assert (await monitor.run_once("backups")).status == "ok"  # healthy, then the fault
    with repository_fault(repo2, fault) as reason:
        due_now(loop, 2, full_every_s=0.001)
        await loop.cycle()
        async with db.connection() as conn:
            [failed] = await backup_store.list_backups(conn, 2, 1, None)
        assert not failed.ok and failed.label is None
        assert failed.error and "region-b" in failed.error and reason in failed.error
        assert failures(2, "full") == before + 1
        await loop.cycle()  # within retry_s: not tried again
        async with db.connection() as conn:
            assert (await backup_store.list_backups(conn, 2, 1, None))[0].id == failed.id

        # WAL archiving fails too (every segment goes to both repositories).
        async def archiving_fails() -> bool:
            async with await connect(cluster.dsn("runnerhub")) as conn:
                await conn.execute("SELECT pg_switch_wal(), txid_current()")
                state["archiver"] = await replication.read_archiver(conn)
            return bool(state["archiver"] and state["archiver"].failing)

        await wait_until(archiving_fails, 60, "archiving to fail", interval_s=1)
        result = await monitor.run_once("backups")
        assert result.status == "degraded"
        assert "repo2 (region-b): full failed" in (result.message or "")
        assert "WAL archiving failing" in (result.message or "")
        if fault == "full":
            assert "repo2 (region-b): its file system is full (0 B free of" in (
                result.message or ""
            )
            free = REGISTRY.get_sample_value("runnerhub_backup_repo_free_bytes", {"repo": "2"})
            assert free == 0
        assert recorder.tracker.open("backups") is not None  # an incident, for the leader

    async def healed() -> bool:
        await loop.cycle()
        async with db.connection() as conn:
            newest = (await backup_store.list_backups(conn, 2, 1, None))[0]
        return newest.ok

    await wait_until(healed, 60, "the next attempt, after retry_s, to succeed", interval_s=0.5)
    await wait_until(lambda: archiving_fails_not(cluster, state), 90, "archiving to recover")
    result = await monitor.run_once("backups")
    assert result.status == "ok", result.message
    assert recorder.tracker.open("backups") is None


class Only(Collector):
    """The metric families of this process whose names start with `prefix`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        return (m for m in REGISTRY.collect() if m.name.startswith(self.prefix))


async def test_backups_that_keep_failing_reach_a_person(
    cluster: LocalPatroni, backed_up_dsn: str, db: Pool, tmp_path: Path
) -> None:
    """The real Prometheus scrapes this process's metrics (the backup loop's), evaluates the
    shipped rules, and Alertmanager tells the webhook standing in for Slack once a
    repository has refused 3 backups: RunnerHubBackupFailing, for that repository."""
    s = settings(cluster, backed_up_dsn)
    loop = Backups(NodeContext(s, db))
    nothing_due(loop)
    await loop.cycle()  # the failure counters are exported, at their current value
    # Only the backup metrics: this process's registry also holds what earlier tests left
    # (a database without a primary, say), whose alerts would inhibit this one.
    server, thread = start_http_server(
        port := free_port(), addr="127.0.0.1", registry=Only("runnerhub_backup_")
    )
    try:
        with watching_targets([ScrapeTarget(f"127.0.0.1:{port}", "node-test")], tmp_path) as w:
            repo2 = next(r for r in pgbr(cluster).repos if r.index == 2).path
            before, since = failures(2, "full"), time.monotonic()
            with repository_fault(repo2, "unwritable"):
                due_now(loop, 2, full_every_s=0.001)

                async def failed_thrice() -> bool:
                    await loop.cycle()  # tried again once retry_s (2 s) has passed
                    return failures(2, "full") >= before + 3

                await wait_until(failed_thrice, 60, "3 failed backups", interval_s=0.5)
                failed_at = time.monotonic() - since
                paged = await asyncio.to_thread(
                    w.reached, "RunnerHubBackupFailing", "firing", since, 60
                )
            notes = [n for n in w.sink.received if "RunnerHubBackupFailing" in n.names()]
            assert {a["labels"]["repo"] for n in notes for a in n.alerts} == {"2"}
            print(
                f"3rd failure at {failed_at:.1f} s, RunnerHubBackupFailing at the webhook "
                f"at {paged:.1f} s"
            )
    finally:
        server.shutdown()
        thread.join(10)


async def archiving_fails_not(cluster: LocalPatroni, state: dict[str, Any]) -> bool:
    async with await connect(cluster.dsn("runnerhub")) as conn:
        await conn.execute("SELECT pg_switch_wal(), txid_current()")
        state["archiver"] = await replication.read_archiver(conn)
    return bool(state["archiver"] and not state["archiver"].failing)


async def test_a_delete_is_undone_by_restoring_to_just_before_it_into_a_new_cluster(
    cluster: LocalPatroni, backed_up_dsn: str, db: Pool, tmp_path: Path
) -> None:
    # An operator's mistake after the backups of the first test: jobs written since, then
    # an event marking the moment, then every job deleted (each committed on its own).
    async with db.connection() as conn:
        await conn.execute(
            """INSERT INTO jobs (id, run_id, repository, labels, state, last_source)
               SELECT g, g, 'acme/app', '{self-hosted}', 'queued', 'webhook'
                 FROM generate_series(1001, 1030) AS g"""
        )
    async with db.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO events (node, kind, subject, detail) "
            "VALUES ('operator', 'operator.mistake', 'jobs', '{}') RETURNING id"
        )
        mistake = (await cur.fetchone() or {})["id"]
    async with db.connection() as conn:
        await conn.execute("DELETE FROM jobs")
        before = await events.at_of(conn, mistake)
    assert before is not None
    await archived_past_now(cluster)
    restored, base = await asyncio.to_thread(
        restore_cluster,
        cluster,
        cluster.etcd_hosts,
        tmp_path / "restored",
        Target(time=before - timedelta(microseconds=1)),
    )
    try:
        assert base.repo == 1 and base.label  # from the newest backup before the mistake
        async with await connect(restored.dsn("runnerhub")) as conn:
            cur = await conn.execute("SELECT count(*) AS n, min(id) AS lo, max(id) AS hi FROM jobs")
            jobs = await cur.fetchone()
            cur = await conn.execute("SELECT count(*) AS n FROM events WHERE id >= %s", (mistake,))
            after = await cur.fetchone()
        # Every job written before the mistake, those since the backup too (from the WAL).
        assert jobs == {"n": 70, "lo": 1, "hi": 1030}
        assert after == {"n": 0}  # restored as it was just before the marked moment
    finally:
        restored.destroy()

    # What cannot be restored to is refused, and nothing is made.
    oldest = datetime.fromtimestamp(base.started_at, UTC) - timedelta(days=1)
    for target, why in (
        (Target(time=oldest), "before the oldest backup of repo1"),
        (Target(time=datetime.now(UTC) + timedelta(minutes=5)), "in the future"),
    ):
        with pytest.raises(TargetError, match=why):
            restore_cluster(cluster, cluster.etcd_hosts, tmp_path / "refused", target)
        assert not (tmp_path / "refused").exists()


async def archived_past_now(cluster: LocalPatroni) -> None:
    """Switch to a new WAL segment and wait until the one with what was just written is
    archived (a restore replays only what the archive holds): what an in-place restore
    does first."""
    assert await asyncio.to_thread(archive_current_wal, cluster.dsn("runnerhub"), 60)


async def test_a_wrong_cipher_pass_or_a_missing_repository_fails_clearly_and_loses_nothing(
    cluster: LocalPatroni, backed_up_dsn: str, db: Pool
) -> None:
    loop = Backups(NodeContext(settings(cluster, backed_up_dsn), db))
    nothing_due(loop)
    b = pgbr(cluster)
    right = b.secrets_file.read_text()
    wrong = right.replace(b.cipher_pass, "not-the-pass")
    region_a = b.repos[0].path
    faults = [
        (2, lambda: b.secrets_file.write_text(wrong), lambda: b.secrets_file.write_text(right)),
        (
            1,
            lambda: region_a.rename(region_a.with_name("moved")),
            lambda: region_a.with_name("moved").rename(region_a),
        ),
    ]
    for repo, break_it, mend_it in faults:
        async with db.connection() as conn:
            known = len(await backup_store.list_backups(conn, None, 500, None))
        break_it()
        try:
            due_now(loop, repo, full_every_s=0.001)
            await loop.cycle()  # the backup: refused by pgBackRest, with its reason
            due_now(loop, repo, full_every_s=HOUR, verify_every_s=0.001, retry_s=0)
            await loop.cycle()  # then verify
        finally:
            mend_it()
            nothing_due(loop)
        async with db.connection() as conn:
            taken = await backup_store.list_backups(conn, None, 500, None)
            checks_ = await backup_store.latest_checks(conn)
        [failed] = taken[: len(taken) - known]
        assert (failed.repo, failed.ok, failed.label) == (repo, False, None)
        assert failed.error and "unable to load info file" in failed.error, failed.error
        [verify] = [c for c in checks_ if c.repo == repo and c.kind == "verify"]
        assert not verify.ok and verify.error, verify
        # Nothing lost: the repository's backups are all there once it is mended.
        info = json.loads(b.run("info", "--output=json", f"--repo={repo}"))
        assert info[0]["status"]["message"] == "ok"
        assert len([x for x in info[0]["backup"] if x["database"]["repo-key"] == repo]) >= 1
    outcome = await checks.backups(db, loop.schedules, loop.names, HOUR, lambda: None)()
    assert outcome.status == "degraded"
    assert "repo2 (region-b): full failed" in (outcome.message or "")
    assert "repo1 (region-a): full failed" in (outcome.message or "")
    assert pgbr(cluster).cipher_pass not in str(taken) + str(checks_) + str(outcome)


def newest_backup_file(repo_path: Path, label: str) -> Path:
    files = sorted((repo_path / "backup" / "runnerhub" / label / "pg_data" / "base").rglob("*"))
    return max((f for f in files if f.is_file()), key=lambda f: f.stat().st_size)


async def test_verify_finds_a_corrupted_backup_file_though_pgbackrest_exits_0(
    cluster: LocalPatroni, backed_up_dsn: str, db: Pool
) -> None:
    loop = Backups(NodeContext(settings(cluster, backed_up_dsn), db))
    nothing_due(loop)
    async with db.connection() as conn:
        fulls = [b for b in await backup_store.list_backups(conn, 1, 50, None) if b.ok]
    label = next(b.label for b in fulls if b.kind == "full")
    assert label is not None
    victim = newest_backup_file(pgbr(cluster).repos[0].path, label)
    original = victim.read_bytes()
    victim.write_bytes(original[:16] + bytes(b ^ 0xFF for b in original[16:64]) + original[64:])
    try:
        due_now(loop, 1, verify_every_s=0.001, retry_s=0)  # the last test failed some
        await loop.cycle()
    finally:
        victim.write_bytes(original)
    async with db.connection() as conn:
        latest = await backup_store.latest_checks(conn)
    [verify] = [c for c in latest if c.repo == 1 and c.kind == "verify"]
    assert not verify.ok
    assert verify.error and label in verify.error and "checksum invalid: 1" in verify.error
    outcome = await checks.backups(db, loop.schedules, loop.names, HOUR, lambda: None)()
    assert outcome.status == "degraded"
    assert "repo1 (region-a): verify failed" in (outcome.message or "")


async def test_after_a_restore_github_brings_back_every_job_queued_since(
    cluster: LocalPatroni, backed_up_dsn: str, db: Pool, tmp_path: Path
) -> None:
    """Jobs run; a mistake deletes every job; the operator stops the node while GitHub goes
    on queueing jobs (their deliveries fail), restores to just before the mistake into a
    new cluster and starts the node on it. Every job recorded before the mistake is back;
    every job queued since comes back from GitHub (the sweep, the failed deliveries
    redelivered); each ran once."""
    port = free_port()
    with github_sim(tmp_path / "github", f"http://127.0.0.1:{port}/webhooks/github") as gh:
        config = node_config("node-pitr", backed_up_dsn, gh, tmp_path, port=port)
        node = start_node(config, tmp_path / "node.yaml")
        try:
            before, _, at = await jobs_then_a_mistake(gh, db, 4)
        finally:
            node.stop()  # the operator stops the nodes
        assert at is not None
        after = gh.enqueue(LINUX, 3)  # GitHub goes on: nobody takes these deliveries
        await archived_past_now(cluster)
        restored, _ = await asyncio.to_thread(
            restore_cluster,
            cluster,
            cluster.etcd_hosts,
            tmp_path / "restored-since",  # its own scope in etcd: the PITR test made "restored"
            Target(time=at - timedelta(microseconds=1)),
        )
        try:
            config["database"]["dsn"] = restored.dsn("runnerhub")
            node = start_node(config, tmp_path / "node.yaml")
            try:
                await wait_until(lambda: completed_in(gh, after), 60, "the jobs queued since")
                jobs = gh.jobs()
                assert all(len(jobs[i]["executions"]) == 1 for i in before + after), jobs
                async with await connect(restored.dsn("runnerhub")) as conn:
                    cur = await conn.execute(
                        "SELECT id FROM jobs WHERE id = ANY(%s) ORDER BY id", (before + after,)
                    )
                    assert [r["id"] for r in await cur.fetchall()] == sorted(before + after)
            finally:
                node.stop()
        finally:
            restored.destroy()


async def jobs_then_a_mistake(
    gh: GitHub, db: Pool, count: int
) -> tuple[list[int], int, datetime | None]:
    """`count` jobs run and are recorded; then an operator's mistake, marked by an event,
    deletes every job. The jobs, the event's id and when it was written."""
    before = gh.enqueue(LINUX, count)
    await wait_until(lambda: completed_in(gh, before), 60, "the jobs before")
    await wait_until(lambda: recorded(db, before), 30, "them recorded completed")
    async with db.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO events (node, kind, subject, detail) "
            "VALUES ('operator', 'operator.mistake', 'jobs', '{}') RETURNING id"
        )
        mistake = int((await cur.fetchone() or {})["id"])
        await conn.execute("DELETE FROM jobs")
        return before, mistake, await events.at_of(conn, mistake)


def completed_in(gh: GitHub, ids: list[int]) -> bool:
    jobs = gh.jobs()
    return all(jobs[i]["status"] == "completed" for i in ids)


async def recorded(db: Pool, ids: list[int]) -> bool:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM jobs WHERE id = ANY(%s) AND state = 'completed'", (ids,)
        )
        return (await cur.fetchone() or {}).get("n") == len(ids)


async def test_an_in_place_restore_replaces_the_database_under_a_running_node(
    etcd: LocalEtcd, cluster: LocalPatroni, backed_up_dsn: str, db: Pool, tmp_path: Path
) -> None:
    """Next to last in this module: it replaces its cluster. Jobs run; a mistake deletes
    every job; the cluster is restored in place (from repo2, the encrypted one) to just
    before it, while a node goes on running and GitHub goes on queueing jobs
    (the node spools what it cannot write). The same DSN then serves every job recorded
    before the mistake and every job queued since; each ran once; the cluster archives on,
    on a new timeline; each member's data as it was is kept aside."""
    port = free_port()
    with github_sim(tmp_path / "github", f"http://127.0.0.1:{port}/webhooks/github") as gh:
        config = node_config("node-in-place", backed_up_dsn, gh, tmp_path, port=port)
        node = start_node(config, tmp_path / "node.yaml")
        try:
            async with db.connection() as conn:
                timeline = await timeline_of(conn)
            before, mistake, at = await jobs_then_a_mistake(gh, db, 3)
            assert at is not None
            clear = functools.partial(etcd.delete_prefix, cluster.namespace)
            restoring = asyncio.create_task(
                asyncio.to_thread(
                    restore_in_place,
                    cluster,
                    clear,
                    Target(time=at - timedelta(microseconds=1)),
                    repo=2,
                )
            )
            await wait_until(
                lambda: cluster.primary() is None or restoring.done(), 60, "the cluster to stop"
            )
            during = gh.enqueue(LINUX, 3)  # delivered while there is no database
            done = await restoring
            assert done.base.repo == 2 and done.archived
            assert len(done.kept) == 2 and all((k / "PG_VERSION").exists() for k in done.kept)
            after = gh.enqueue(LINUX, 2)
            await wait_until(lambda: completed_in(gh, during + after), 90, "the jobs since")
            await wait_until(lambda: recorded(db, before + during + after), 60, "all recorded")
            jobs = gh.jobs()
            assert all(len(jobs[i]["executions"]) == 1 for i in before + during + after), jobs
        finally:
            node.stop()
    async with db.connection() as conn:
        # As it was just before the mistake (the events since have ids of their own).
        cur = await conn.execute(
            "SELECT count(*) AS n FROM events WHERE id = %s AND kind = 'operator.mistake'",
            (mistake,),
        )
        assert (await cur.fetchone() or {})["n"] == 0
        assert await timeline_of(conn) > timeline
    await archived_past_now(cluster)  # the new timeline is archived into the same stanza
    cluster.wait_healthy(60, expect_members=2)


async def test_with_a_repository_down_waiting_wal_is_bounded_and_the_gap_is_reported(
    cluster: LocalPatroni, backed_up_dsn: str, db: Pool
) -> None:
    """Last in this module: it leaves gaps in both archives. repo1 turns read-only, and
    WAL keeps coming: it waits in pg_wal only up to archive-push-queue-max (64 MiB here:
    4 segments), past which pgBackRest drops it — from every repository: repo2 misses
    every other segment meanwhile — and tells PostgreSQL it is archived. pg_wal never
    fills the disk, and pg_stat_archiver shows success: only the repositories show what is
    missing. The leader's archive check finds repo1 behind the primary; /health and the
    metric say so. Mended, archiving goes on and repo1 catches up, but the gaps stay in
    both archives: verify names them."""
    ctx = NodeContext(settings(cluster, backed_up_dsn), db)
    loop = Backups(ctx)
    nothing_due(loop)
    check = checks.backups(
        db,
        loop.schedules,
        loop.names,
        HOUR,
        lambda: ctx.state.archiver,
        behind=lambda: ctx.state.archive_behind,
    )
    repo1 = next(r for r in pgbr(cluster).repos if r.index == 1).path
    most_waiting = written = 0
    async with await connect(cluster.dsn("runnerhub"), autocommit=True) as conn:

        async def more_wal() -> bool:
            """A segment more; True once repo1 is well behind: WAL was dropped."""
            nonlocal most_waiting, written
            written += 1
            await conn.execute("SELECT txid_current()")
            await conn.execute("SELECT pg_switch_wal()")
            cur = await conn.execute(
                "SELECT count(*) AS n FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
            )
            most_waiting = max(most_waiting, int((await cur.fetchone() or {})["n"]))
            ctx.state.archiver = await replication.read_archiver(conn)
            await loop.check_archive()
            return ctx.state.archive_behind.get(1, 0) > 2 * ARCHIVE_BEHIND_SEGMENTS

        read_only(repo1, True)  # it can be read (its newest WAL shows), not written
        try:
            await wait_until(more_wal, 120, "WAL to be dropped past the queue's bound", 0.3)
            result = await check()
        finally:
            read_only(repo1, False)
        # Bounded, whatever was written: the bound, and what comes while PostgreSQL's
        # archiver waits between its tries (a second each; a segment every ~0.4 s here).
        assert most_waiting <= QUEUE_SEGMENTS + 4 < written, (most_waiting, written)
        behind = ctx.state.archive_behind
        metric = REGISTRY.get_sample_value(
            "runnerhub_backup_archive_behind_segments", {"repo": "1"}
        )
        assert metric == behind[1] > ARCHIVE_BEHIND_SEGMENTS
        assert result.status == "degraded"
        assert "repo1 (region-a): its WAL archive ends" in (result.message or "")

        async def caught_up() -> bool:
            await conn.execute("SELECT txid_current()")
            await conn.execute("SELECT pg_switch_wal()")
            ctx.state.archiver = await replication.read_archiver(conn)
            await loop.check_archive()
            return max(ctx.state.archive_behind.values(), default=1) == 0

        await wait_until(caught_up, 60, "both repositories to catch up once mended", 0.3)
    assert "its WAL archive ends" not in ((await check()).message or "")
    for repo in (1, 2):  # verify each, in turn: the gaps are still there
        due_now(loop, repo, verify_every_s=0.001, retry_s=0)
        await loop.cycle()
        due_now(loop, repo, verify_every_s=HOUR)
    async with db.connection() as conn:
        latest = await backup_store.latest_checks(conn)
    verified = {c.repo: c for c in latest if c.kind == "verify"}
    for repo in (1, 2):
        assert not verified[repo].ok
        assert "WAL missing after" in (verified[repo].error or ""), verified[repo].error
    message = (await check()).message or ""
    assert "repo1 (region-a): verify failed" in message
    assert "repo2 (region-b): verify failed" in message


def read_only(path: Path, on: bool) -> None:
    for p in [path, *path.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode & ~0o222 if on else mode | 0o200)


async def timeline_of(conn: Any) -> int:
    cur = await conn.execute("SELECT timeline_id FROM pg_control_checkpoint()")
    return int((await cur.fetchone() or {})["timeline_id"])
